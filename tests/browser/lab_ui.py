"""What a person does in JupyterLab, as Selenium steps: open a notebook, Run All, wait, drag a slider.

State is read from the DOM with small scripts (one round trip, nothing the user could not see);
actions go through real input events (clicks, pointer drags), so ipywidgets reacts exactly as it
does for a person. Every wait has a deadline and fails with an AssertionError that says what it
waited for and what it saw last.
"""

import re
import time

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

# The visible notebook panel (other panels are hidden, not removed).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"

# Kernel status (data-status: idle, busy, starting, ...) and, per code cell, its prompt ("[3]:",
# "[*]:", "[ ]:") and whether its source is empty (JupyterLab does not execute empty cells).
STATE_JS = f"""
const panel = document.querySelector('{PANEL}');
if (!panel) return null;
const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
const cells = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')].map(c => ({{
    prompt: (c.querySelector('.jp-InputPrompt') || {{}}).textContent || '',
    empty: !((c.querySelector('.cm-content') || {{}}).textContent || '').trim(),
}}));
return {{kernel: indicator ? indicator.dataset.status : null, cells: cells}};
"""

# Text a cell wrote to stderr, tracebacks included (JupyterLab renders both with this mime type).
STDERR_JS = f"""
const css = '{PANEL} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
return [...document.querySelectorAll(css)].map(e => e.textContent).join('\\n');
"""

NUMBERED = re.compile(r"\[\d+\]")


def wait_until(what, probe, timeout, poll=0.5):
    """Call `probe()` until it returns something truthy and return that; fail after `timeout` s.

    `probe` may also return (done, seen): `seen` is reported in the failure message.
    """
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        result = probe()
        done, seen = result if isinstance(result, tuple) else (result, result)
        if done:
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {seen!r}")
        time.sleep(poll)


def notebook_state(driver):
    """{'kernel': status, 'cells': [{'prompt', 'empty'}, ...]} of the open notebook, or None."""
    return driver.execute_script(STATE_JS)


def stderr_text(driver, chars=3000):
    """The end of everything the notebook's cells wrote to stderr (tracebacks included)."""
    return (driver.execute_script(STDERR_JS) or "")[-chars:]


def open_notebook(driver, url, timeout=120):
    """Load JupyterLab on `url` (a /lab/tree/<notebook> address) and wait for an idle kernel."""
    driver.get(url)
    wait_until(
        "the notebook's cells to render",
        lambda: (s := notebook_state(driver)) is not None and bool(s["cells"]),
        timeout,
    )
    wait_kernel_idle(driver, timeout, what="the kernel to start")


def wait_kernel_idle(driver, timeout, what="the kernel to go idle", settle=3):
    """Wait until the kernel reports idle and no cell is queued, `settle` polls in a row.

    One idle reading is not enough: between two queued cells the kernel is briefly idle.
    """
    calm = 0

    def probe():
        nonlocal calm
        s = notebook_state(driver) or {"kernel": None, "cells": []}
        busy = s["kernel"] != "idle" or any("*" in c["prompt"] for c in s["cells"])
        calm = 0 if busy else calm + 1
        return calm >= settle, s["kernel"]

    wait_until(what, probe, timeout)


def click_menu(driver, menu, label, timeout=30):
    """Open the main menu `menu` (e.g. "Run") and click its item labelled `label`, as a person does."""

    def labelled(css, label_css=None):
        """{label text: element}; with `label_css`, the text of that part only (not the shortcut)."""
        return {
            element_text(driver, e.find_element(By.CSS_SELECTOR, label_css) if label_css else e): e
            for e in driver.find_elements(By.CSS_SELECTOR, css)
        }

    def menu_item():
        items = labelled(".lm-Menu .lm-Menu-item:not(.lm-mod-hidden)", ".lm-Menu-itemLabel")
        return label in items and items[label], sorted(items)  # report what the menu does offer

    menubar = "#jp-MainMenu .lm-MenuBar-item"
    wait_until(f"the {menu!r} menu", lambda: labelled(menubar).get(menu), timeout).click()
    item = wait_until(f"the item {label!r} in the {menu!r} menu", menu_item, timeout)
    # A disabled item (e.g. when no notebook has the focus) swallows the click without a word.
    assert "lm-mod-disabled" not in (item.get_attribute("class") or ""), f"{menu} > {label} is disabled"
    item.click()


def run_all(driver, timeout):
    """Run > Run All Cells, then wait until every non-empty code cell has run and the kernel is idle.

    A cell that raises stops the run (the kernel drops the queued cells): that fails at once, with
    the traceback, instead of waiting for the timeout.
    """
    click_menu(driver, "Run", "Run All Cells")
    calm = 0

    def probe():
        nonlocal calm
        s = notebook_state(driver) or {"kernel": None, "cells": []}
        cells = [c for c in s["cells"] if not c["empty"]]
        busy = s["kernel"] != "idle" or any("*" in c["prompt"] for c in cells)
        calm = 0 if busy else calm + 1
        if calm >= 3:
            not_run = [i for i, c in enumerate(cells) if not NUMBERED.search(c["prompt"])]
            assert not not_run, (
                f"Run All stopped before code cells {not_run} (counting non-empty code cells from 0); "
                f"stderr of the notebook:\n{stderr_text(driver)}"
            )
            return True, None
        return False, [c["prompt"] for c in cells]

    wait_until("Run All to finish", probe, timeout)


def element_text(driver, element):
    """textContent of an element (Selenium's .text is empty for elements scrolled out of view)."""
    return driver.execute_script("return arguments[0].textContent;", element).strip()


def scroll_into_view(driver, element, block="center"):
    """Scroll the notebook so `element` is visible ("start": its top at the top of the view)."""
    driver.execute_script("arguments[0].scrollIntoView({block: arguments[1]});", element, block)


def drag_slider(driver, slider):
    """Drag the noUiSlider handle inside `slider` a quarter of its track, towards the longer side.

    A pointer drag is what a person does; it also exercises ipywidgets' continuous updates.
    """
    handles = slider.find_elements(By.CSS_SELECTOR, ".noUi-handle")
    assert handles, "the slider has no .noUi-handle (is it an ipywidgets slider?)"
    handle = handles[0]
    track = slider.find_element(By.CSS_SELECTOR, ".noUi-base")
    scroll_into_view(driver, handle)
    t, h = track.rect, handle.rect
    assert t["width"] > 0, f"the slider's track is not visible (size {t})"
    handle_x = h["x"] + h["width"] / 2
    direction = 1 if handle_x < t["x"] + t["width"] / 2 else -1
    step = direction * max(1, int(t["width"] / 8))
    try:  # in two moves, so noUiSlider sees a drag, not a jump
        drag = ActionChains(driver).click_and_hold(handle).move_by_offset(step, 0).move_by_offset(step, 0)
        drag.release().perform()
    except WebDriverException as e:
        raise AssertionError(f"could not drag the slider handle: {e.msg}") from e
