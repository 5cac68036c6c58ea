"""Build the workbook's notebooks from their sources and store fresh outputs.

Each notebook `notebooks/NN_name.ipynb` is paired with a plain Python file `notebooks/src/NN_name.py`
in jupytext's percent format (`# %%` starts a code cell, `# %% [markdown]` a markdown cell whose
lines start with `# `); `notebooks/jupytext.toml` declares the pairing. The sources are what people
review and edit. This script reads each source with jupytext, puts two cells in front (the Colab
badge with a note on the run mode, and the set-up cell that installs the package on Colab, its
text from `fastface_lite.workbook.colab`), runs
the notebook top to bottom with nbclient on the CPU in tiny mode, and writes the `.ipynb` with its
outputs: the outputs nbval checks in `make test`. Only this build writes the tracked `figures/`.

    python notebooks/build.py            # every notebook
    python notebooks/build.py 03 04      # notebooks whose name starts with these
    python notebooks/build.py --no-run   # rebuild cells only (outputs dropped)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.config import load_jupytext_config
from jupytext.formats import long_form_multiple_formats
from jupytext.paired_paths import find_base_path_and_format, full_path
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
sys.path.insert(0, str(HERE.parent))
from fastface_lite.workbook.colab import setup_cell  # noqa: E402
from fastface_lite.workbook.session import GITHUB_REPO, colab_badge  # noqa: E402

# The set-up cell put in front of every notebook, second after the badge: on Colab it clones the
# repository and runs fastface_lite/workbook/colab.py (which leaves Colab's torch stack alone);
# elsewhere it does nothing. Its text lives with that script (`colab.setup_cell`), which tests run.
SETUP_CELL = setup_cell(f"https://github.com/{GITHUB_REPO}")

MODE_NOTE = (
    "*Runs offline on a CPU in **tiny** mode (random weights, same code paths); on Colab with a GPU "
    "it runs in **full** mode with the real weights.*"
)

# Notebook metadata of every built notebook: a Python 3 kernel; on Colab, ask for a GPU.
METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
    "colab": {"provenance": []},
    "accelerator": "GPU",
}


def notebook_path(source: Path) -> Path:
    """The `.ipynb` paired with `source`, as notebooks/jupytext.toml declares the pairing."""
    config = load_jupytext_config(str(source))
    formats = long_form_multiple_formats(config.default_formats(str(source)) if config else None)
    notebooks = [fmt for fmt in formats if fmt["extension"] == ".ipynb"]
    if not notebooks:
        raise SystemExit(f"{source}: {HERE / 'jupytext.toml'} pairs it with no .ipynb")
    base, _ = find_base_path_and_format(str(source), formats)
    return Path(full_path(base, notebooks[0]))


def read_source(source: Path) -> nbformat.NotebookNode:
    """The cells of `source`, read by jupytext with the pairing's settings (no metadata kept)."""
    return jupytext.read(source, config=load_jupytext_config(str(source)))


def front_cells(notebook_name: str) -> list:
    """The two cells every notebook opens with: Colab badge + mode note, and the Colab set-up."""
    return [
        nbformat.v4.new_markdown_cell(f"{colab_badge(notebook_name)}\n\n{MODE_NOTE}"),
        nbformat.v4.new_code_cell(SETUP_CELL),
    ]


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook for `source`: the two front cells, then the source's cells (not yet run)."""
    nb = nbformat.v4.new_notebook(metadata=METADATA)
    nb.cells = [*front_cells(notebook_path(source).name), *read_source(source).cells]
    for index, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged source changes nothing
        cell.id = f"cell-{index:02d}"
        cell.metadata = {}
    return nb


def run(nb: nbformat.NotebookNode, timeout: int = 900) -> None:
    """Execute in place from `notebooks/`, tiny mode, as nbval will; the figures the notebooks save
    go to the tracked `figures/` (other runs write to the git-ignored `runs/figures/`)."""
    os.environ.update(
        FASTFACE_MODE="tiny", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", FASTFACE_FIGURES="figures"
    )
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in nb.cells:  # wall-clock stamps would make every rebuild a diff
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _joined_streams(cell.outputs)


def _joined_streams(outputs: list) -> list:
    """`outputs` with each run of stdout (or stderr) pieces joined into one output.

    How a cell's printing is cut into pieces depends on timing; joined, a rebuild that prints the
    same text stores the same outputs.
    """
    joined = []
    for out in outputs:
        previous = joined[-1] if joined else None
        if (
            out.output_type == "stream"
            and previous is not None
            and previous.output_type == "stream"
            and previous.name == out.name
        ):
            previous.text += out.text
        else:
            joined.append(out)
    return joined


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="build only notebooks whose name starts with these")
    parser.add_argument("--no-run", action="store_true", help="do not execute (outputs are dropped)")
    args = parser.parse_args(argv)
    sources = sorted(
        p
        for p in SOURCES.glob("[0-9][0-9]_*.py")
        if not args.prefixes or any(p.name.startswith(prefix) for prefix in args.prefixes)
    )
    if not sources:
        parser.error(f"no source in {SOURCES} matches {args.prefixes}")
    for source in sources:
        nb = build(source)
        if not args.no_run:
            print(f"running {source.name} ...", flush=True)
            run(nb)
        target = notebook_path(source)
        nbformat.write(nb, target)
        print(f"wrote {target.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
