"""The stored notebooks: built from their sources, complete, and free of run-specific output.

nbval (in `make test`) re-runs every notebook and compares outputs; these checks cover what it
does not: that each `.ipynb` is paired with its reviewed source (jupytext) and still matches it,
that every cell ran without error, and that the outputs hold nothing that differs between
checkouts (paths, memory addresses).
"""

import difflib
import importlib.util
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

from fastface_lite.workbook.session import GITHUB_REPO, colab_badge

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py"))
EXPECTED = [
    "00_why_fastface",
    "01_loading_adapters",
    "02_attention_maps",
    "03_guidance_schedules",
    "04_identity_metrics",
    "05_evaluation_protocol",
]


def _builder():
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_six_notebooks_exist():
    assert [p.stem for p in SOURCES] == EXPECTED
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_jupytext_pairs_each_source_with_its_notebook(source):
    # notebooks/jupytext.toml is what build.py and JupyterLab's jupytext both read the pairing from.
    assert _builder().notebook_path(source) == NOTEBOOKS / f"{source.stem}.ipynb"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(source):
    # The source's cells as jupytext reads them, behind the badge and set-up cells build.py adds.
    built = _builder().build(source)
    stored = nbformat.read(NOTEBOOKS / f"{source.stem}.ipynb", 4)
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in built.cells], (
        f"notebooks/{source.stem}.ipynb is out of date: run `python notebooks/build.py {source.stem[:2]}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_source_is_as_jupytext_writes_it(source):
    # Saving the paired notebook from JupyterLab rewrites the source through jupytext: it must come
    # out unchanged, so that such a save shows only the edits in review.
    text = source.read_text()
    written = jupytext.writes(_builder().read_source(source), fmt="py:percent")
    assert written == text, f"notebooks/src/{source.name} is not in jupytext's percent form: " + "".join(
        difflib.unified_diff(text.splitlines(True), written.splitlines(True), "as stored", "as jupytext writes it")
    )


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_opens_with_badge_mode_and_setup(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", 4)
    assert nb.cells[0].cell_type == "markdown"
    assert colab_badge(f"{name}.ipynb") in nb.cells[0].source
    assert f"github/{GITHUB_REPO}/blob/main/notebooks/{name}.ipynb" in nb.cells[0].source
    setup = nb.cells[1].source
    assert "google.colab" in setup and 'workbook/colab.py")["install"]' in setup
    intro = nb.cells[2]
    assert intro.cell_type == "markdown" and intro.source.startswith(f"# {name[:2]} ·")
    assert "tiny" in intro.source.lower() and "full" in intro.source.lower()  # says which mode it runs in
    first_code = next(c for c in nb.cells[3:] if c.cell_type == "code")
    assert "setup(" in first_code.source


ABSOLUTE_PATH = re.compile(re.escape(str(ROOT)) + r"|/home/|/root/")
ADDRESS = re.compile(r" at 0x[0-9a-f]{6,}")


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_outputs_ran_clean_and_are_portable(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell must have run (no skipped cell)"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"{name}: a stored cell raised: {out.get('evalue')}"
            text = out.get("text", "") + "".join(v for k, v in out.get("data", {}).items() if k.startswith("text/"))
            assert not ABSOLUTE_PATH.search(text), f"{name}: an output holds an absolute path: {text[:200]!r}"
            assert not ADDRESS.search(text), f"{name}: an output holds a memory address: {text[:200]!r}"
            assert "it/s]" not in text and "torchvision" not in text, f"{name}: progress bar or library noise"


@pytest.mark.parametrize("name", EXPECTED)
def test_figures_the_notebook_saves_are_in_the_repo(name):
    source = (NOTEBOOKS / "src" / f"{name}.py").read_text()
    saved = re.findall(r"wb\.save\([^,]+,\s*f?\"([^\"{]+)\"", source)
    assert saved, f"{name} saves no figure"
    for stem in saved:
        assert (ROOT / "figures" / f"{stem}.png").is_file(), f"figures/{stem}.png is missing: rebuild {name}"
