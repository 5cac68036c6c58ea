"""Real-browser check of the guidance-schedule workbook (`make browser-test`).

JupyterLab is started on this repository, the notebook is opened in headless chromium and run
with Run > Run All Cells, then one slider of the interactive sweep is dragged and the sweep's
summary must change. A screenshot of the result goes to figures/browser_03_sweep.png.

The contract with the notebook is a few CSS classes (ipywidgets `add_class`): the sweep's root
widget has `ff-sweep`; inside it the per-step guidance sliders have `ff-a-<step>` / `ff-b-<step>`
and an HTML widget with `ff-sweep-summary` shows text that changes whenever the sweep regenerates.

Environment variables (for developing the check against another notebook):
  FF_BROWSER_NOTEBOOK    notebook to check (default notebooks/03_guidance_schedules.ipynb); one
                         outside the repository is served from its own folder
  FF_BROWSER_SCREENSHOT  where the screenshot goes (default figures/browser_03_sweep.png)
"""

import os
import time
from pathlib import Path

import lab_ui
import processes
from chromium import headless_chromium, require_chromium
from lab_server import JupyterLab

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = Path(os.environ.get("FF_BROWSER_NOTEBOOK", REPO / "notebooks/03_guidance_schedules.ipynb")).resolve()
SCREENSHOT = Path(os.environ.get("FF_BROWSER_SCREENSHOT", REPO / "figures/browser_03_sweep.png"))
SLIDER = "ff-a-0"  # the first step's guidance scale

# Generous: the machine is a shared 2-core CPU and the notebook builds a (tiny) torch pipeline.
OPEN_TIMEOUT = 120
RUN_ALL_TIMEOUT = 600
REGENERATE_TIMEOUT = 180

SUMMARY_JS = """
const e = document.querySelector('.ff-sweep .ff-sweep-summary');
return e ? e.textContent.trim() : null;
"""


def test_sweep_reacts_to_a_slider_in_the_browser(tmp_path):
    require_chromium()  # first, so a missing browser fails before a server starts
    assert NOTEBOOK.is_file(), f"notebook not found: {NOTEBOOK}"
    root = REPO if NOTEBOOK.is_relative_to(REPO) else NOTEBOOK.parent
    env = {"FASTFACE_MODE": "tiny", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    timings = {}
    with processes.adopting_orphans(), JupyterLab(root, env) as lab, headless_chromium() as driver:
        try:
            check_sweep(driver, lab.url_for(NOTEBOOK.relative_to(root)), timings)
        except Exception as e:
            # Keep what a person would need to see the problem: the page and the server's log.
            shot = tmp_path / "failure.png"
            try:
                driver.save_screenshot(str(shot))
            except Exception as e2:  # noqa: BLE001 - the browser itself may be what broke; keep the first error
                shot = f"none ({type(e2).__name__})"
            e.add_note(f"screenshot of the page: {shot}\nseconds per phase so far: {timings}")
            e.add_note(f"end of the JupyterLab log:\n{lab.log_tail()}")
            raise
    print(f"\nbrowser check of {NOTEBOOK.name}, seconds per phase: {timings}")


def check_sweep(driver, url, timings):
    """Open, Run All, drag slider SLIDER, see the summary change, save the screenshot."""
    t = time.monotonic()

    def lap(phase):
        nonlocal t
        timings[phase] = round(time.monotonic() - t, 1)
        t = time.monotonic()

    lab_ui.open_notebook(driver, url, OPEN_TIMEOUT)
    lap("open notebook, kernel ready")
    lab_ui.run_all(driver, RUN_ALL_TIMEOUT)
    lap("run all")

    sweep = lab_ui.wait_until(
        "the sweep widget (.ff-sweep) after Run All",
        lambda: driver.find_elements("css selector", ".ff-sweep"),
        60,
    )[0]
    sliders = sweep.find_elements("css selector", f".{SLIDER}")
    assert sliders, f"no slider with class {SLIDER} inside the .ff-sweep widget"
    summary_before = driver.execute_script(SUMMARY_JS)
    assert summary_before is not None, "no .ff-sweep-summary widget inside the .ff-sweep widget"
    readouts = sliders[0].find_elements("css selector", ".widget-readout")
    assert readouts, f"slider {SLIDER} has no .widget-readout"
    readout_before = lab_ui.element_text(driver, readouts[0])

    lab_ui.drag_slider(driver, sliders[0])
    readout_after = lab_ui.wait_until(
        f"slider {SLIDER} to show a new value after the drag",
        lambda: (r := lab_ui.element_text(driver, readouts[0])) != readout_before and r,
        10,
    )
    # The readout changes in the browser; the summary only after the kernel has regenerated.
    lab_ui.wait_until(
        f"the sweep summary to change after {SLIDER} went {readout_before} -> {readout_after}",
        lambda: ((s := driver.execute_script(SUMMARY_JS)) != summary_before, s),
        REGENERATE_TIMEOUT,
    )
    # A drag may queue several regenerations: wait for the last one before reading the result.
    lab_ui.wait_kernel_idle(driver, REGENERATE_TIMEOUT, what="the regenerations to finish")
    summary_after = driver.execute_script(SUMMARY_JS)
    assert summary_after and summary_after != summary_before, (
        f"sweep summary unchanged after moving {SLIDER}: {summary_before!r}"
    )
    lap("slider -> summary updated")

    # Top of the sweep at the top of the view: a tall sweep (plots) shows as much as fits.
    lab_ui.scroll_into_view(driver, driver.find_element("css selector", ".ff-sweep"), block="start")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOT)), f"could not write the screenshot {SCREENSHOT}"
    print(f"\n{SLIDER}: {readout_before} -> {readout_after}")
    print(f"summary before: {summary_before}\nsummary after:  {summary_after}")
