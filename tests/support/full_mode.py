"""Full mode end to end on the CPU against the tiny hub cache: what ``make test-full`` runs.

Executes every notebook as ``notebooks/build.py`` assembles it from ``notebooks/src`` (the same
cells as the committed ``.ipynb``, without storing outputs: tiny weights make no image worth
comparing) and a small ``fastface eval`` followed by ``fastface metrics``; fails on the first error.
The environment must already point full mode at the cache (the Makefile target sets it):
FASTFACE_MODE=full FASTFACE_ALLOW_CPU_FULL=1 HF_HUB_OFFLINE=1 HF_HUB_CACHE=... FASTFACE_INSIGHTFACE_ROOT=...

    PYTHONPATH=tests python -m support.full_mode [--only 01 03] [--no-eval]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
REQUIRED_ENV = (
    "FASTFACE_MODE",
    "FASTFACE_ALLOW_CPU_FULL",
    "HF_HUB_OFFLINE",
    "HF_HUB_CACHE",
    "FASTFACE_INSIGHTFACE_ROOT",
)
# A couple of identities, prompts and variants, 4 steps (the cache holds Hyper-SD's 4-step file).
EVAL_ARGS = [
    "--identities", "astronaut", "grace_hopper",
    "--prompt-sets", "realistic",
    "--prompts-per-set", "1",
    "--variants", "baseline", "fastface-am2",
    "--steps", "4",
    "--size", "128",
    "--mode", "full",
    "--no-progress",
]  # fmt: skip


def _builder():
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def execute(source: Path, build, saved: Path) -> str:
    """Run the notebook built from `source` from `notebooks/`; raises on the first failing cell.
    The executed notebook, outputs and all (the failing cell's error too), goes to `saved`."""
    import nbformat
    from nbclient import NotebookClient

    nb = build.build(source)
    began = time.time()
    try:
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    finally:
        saved.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, saved / f"{source.stem}.ipynb")
    return f"  {source.stem}: {len(nb.cells)} cells in {time.time() - began:.0f} s"


def run_notebooks(prefixes: list[str], saved: Path) -> None:
    build = _builder()
    sources = sorted(
        p for p in (NOTEBOOKS / "src").glob("[0-9][0-9]_*.py") if not prefixes or p.name.startswith(tuple(prefixes))
    )
    with ThreadPoolExecutor(max_workers=2) as pool:  # kernels are processes; threads only wait on them
        for line in pool.map(lambda s: execute(s, build, saved), sources):
            print(line, flush=True)


def run_eval(out: Path) -> None:
    """A small `fastface eval` in full mode, then `fastface metrics` on its folder."""
    shutil.rmtree(out, ignore_errors=True)
    fastface = [sys.executable, "-m", "fastface_lite.cli"]
    for args in ([*fastface, "eval", "--out", str(out), *EVAL_ARGS], [*fastface, "metrics", str(out), "--no-progress"]):
        began = time.time()
        subprocess.run(args, check=True)
        print(f"  {' '.join(args[3:5])}: {time.time() - began:.0f} s", flush=True)
    print((out / "summary.md").read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="notebooks whose name starts with these")
    parser.add_argument("--no-eval", action="store_true", help="skip fastface eval / metrics")
    parser.add_argument("--no-notebooks", action="store_true", help="skip the notebooks")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs" / "full-mode", help="executed notebooks and the eval's run folder"
    )
    args = parser.parse_args(argv)
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing or os.environ["FASTFACE_MODE"] != "full":
        raise SystemExit(f"set {', '.join(REQUIRED_ENV)} (FASTFACE_MODE=full) first: `make test-full` does")
    began = time.time()
    if not args.no_notebooks:
        run_notebooks(args.only, args.out / "notebooks")
    if not args.no_eval:
        run_eval(args.out / "eval")
    print(f"full mode on the CPU passed in {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
