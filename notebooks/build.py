"""Build the workbook's notebooks from their sources and store fresh outputs.

Each notebook is written as a plain Python file in `notebooks/src/NN_name.py`, cells separated by
`# %%` (code) and `# %% [markdown]` (markdown, every line starting with `# `). The sources are what
people review and edit; the `.ipynb` files are built from them, with two cells put in front of
every notebook (the Colab badge, and the set-up cell that installs the package on Colab), then run
top to bottom on the CPU in tiny mode so the stored outputs are the ones nbval checks.

    python notebooks/build.py            # every notebook
    python notebooks/build.py 03 04      # notebooks whose name starts with these
    python notebooks/build.py --no-run   # rebuild cells only (outputs dropped)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
sys.path.insert(0, str(HERE.parent))
from fastface_lite.workbook.session import GITHUB_REPO, colab_badge  # noqa: E402

SETUP_CELL = f"""\
# On Colab: fetch and install fastface_lite (a few minutes, once per session). Elsewhere: nothing.
# If Colab then asks to restart the session, accept and run all again: the clone and install stay.
import sys
if "google.colab" in sys.modules:
    !test -d /content/fastface_lite || git clone -q https://github.com/{GITHUB_REPO} /content/fastface_lite
    %cd /content/fastface_lite
    !pip install -q -r requirements.txt && pip install -q --no-deps -r requirements-nodeps.txt
    !pip install -q --no-deps -e . && pip install -q onnxruntime-gpu==1.31.1"""

MODE_NOTE = ("*Runs offline on a CPU in **tiny** mode (random weights, same code paths); on Colab with a GPU "
             "it runs in **full** mode with the real weights.*")


def parse_cells(text: str) -> list:
    """Split a percent-format source into nbformat cells (markdown lines lose their `# `)."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook for `source`: badge + mode note, Colab set-up cell, then the source's cells."""
    name = source.with_suffix(".ipynb").name
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
        "accelerator": "GPU",
    }
    header = nbformat.v4.new_markdown_cell(f"{colab_badge(name)}\n\n{MODE_NOTE}")
    nb.cells = [header, nbformat.v4.new_code_cell(SETUP_CELL), *parse_cells(source.read_text())]
    for index, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged source changes nothing
        cell.id = f"cell-{index:02d}"
    return nb


def run(nb: nbformat.NotebookNode, timeout: int = 900) -> None:
    """Execute in place from `notebooks/`, tiny mode, as nbval will."""
    os.environ.update(FASTFACE_MODE="tiny", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in nb.cells:  # wall-clock stamps would make every rebuild a diff
        cell.metadata.pop("execution", None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="build only notebooks whose name starts with these")
    parser.add_argument("--no-run", action="store_true", help="do not execute (outputs are dropped)")
    args = parser.parse_args(argv)
    sources = sorted(p for p in SOURCES.glob("[0-9][0-9]_*.py") if not args.prefixes
                     or any(p.name.startswith(prefix) for prefix in args.prefixes))
    if not sources:
        parser.error(f"no source in {SOURCES} matches {args.prefixes}")
    for source in sources:
        nb = build(source)
        if not args.no_run:
            print(f"running {source.name} ...", flush=True)
            run(nb)
        target = HERE / source.with_suffix(".ipynb").name
        nbformat.write(nb, target)
        print(f"wrote {target.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
