"""The small evaluation grid the runner tests share, and helpers to compare two run folders.

The grid: 2 identities x 4 prompts (2 realistic + 2 stylistic) x 2 variants (baseline and
fastface-am2, the one that evaluates all three branches and normalises across them), 64 px, tiny
mode, offline.

The run helpers (one thread, log lines, the subprocess environment) live in tests/support/runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from support.runs import REPO, log_lines, single_thread, subprocess_env  # noqa: F401 (shared with the tests here)

from fastface_lite.evaluation.grid import EvalSpec
from fastface_lite.evaluation.summary import TIMING_COLUMNS, load_results

GRID = [
    "--identities",
    "astronaut",
    "grace_hopper",
    "--prompt-sets",
    "realistic",
    "stylistic",
    "--prompts-per-set",
    "2",
    "--variants",
    "baseline",
    "fastface-am2",
    "--size",
    "64",
    "--mode",
    "tiny",
    "--seed",
    "0",
    "--no-progress",
]
# the same grid through the Python API (identities given in the other order on purpose)
EVAL_GRID = EvalSpec(
    identities=("grace_hopper", "astronaut"),
    prompt_sets=("realistic", "stylistic"),
    prompts_per_set=2,
    variants=("baseline", "fastface-am2"),
    size=64,
    mode="tiny",
    seed=0,
)
N_ITEMS = 2 * 4 * 2


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by item, timing columns dropped."""
    table = table.drop(columns=[c for c in TIMING_COLUMNS if c in table.columns])
    return table.sort_values("key").reset_index(drop=True)


def images(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "images").rglob("*")) if p.is_file()}


def assert_same_run(run: Path, reference: Path):
    table, expected = load_results(run), load_results(reference)
    assert len(table) == N_ITEMS and table["key"].is_unique
    pd.testing.assert_frame_equal(comparable(table), comparable(expected))
    assert images(run) == images(reference)  # same PNG bytes
    logged = [r["key"] for r in log_lines(run)]
    assert len(logged) == len(set(logged)) == N_ITEMS  # every item logged once: nothing repeated
