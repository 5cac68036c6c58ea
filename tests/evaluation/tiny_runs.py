"""The small evaluation grid the runner tests share, and helpers to compare two run folders.

The grid: 2 identities x 4 prompts (2 realistic + 2 stylistic) x 2 variants (baseline and
fastface-am2, the one that evaluates all three branches and normalises across them), 64 px, tiny
mode, offline.

Torch runs on one thread for these runs: the processes launched by accelerate use one thread each
(torchrun sets OMP_NUM_THREADS=1), so the single-process reference does the same arithmetic (and
image bytes can be compared); and on a small shared CPU box two threads per process slow the tiny
UNet down many times over.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pandas as pd
import torch

from fastface_lite.evaluation.grid import EvalSpec
from fastface_lite.evaluation.run_folder import SHARDS
from fastface_lite.evaluation.summary import TIMING_COLUMNS, load_results

REPO = Path(__file__).resolve().parents[2]
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


@contextlib.contextmanager
def single_thread():
    """Torch on one thread inside the block (see the module docstring), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by item, timing columns dropped."""
    table = table.drop(columns=[c for c in TIMING_COLUMNS if c in table.columns])
    return table.sort_values("key").reset_index(drop=True)


def images(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "images").rglob("*")) if p.is_file()}


def log_lines(run: Path) -> list[dict]:
    lines = []
    for log in sorted((run / SHARDS).glob("*.jsonl")):
        lines += [json.loads(line) for line in log.read_text().splitlines()]
    return lines


def assert_same_run(run: Path, reference: Path):
    table, expected = load_results(run), load_results(reference)
    assert len(table) == N_ITEMS and table["key"].is_unique
    pd.testing.assert_frame_equal(comparable(table), comparable(expected))
    assert images(run) == images(reference)  # same PNG bytes
    logged = [r["key"] for r in log_lines(run)]
    assert len(logged) == len(set(logged)) == N_ITEMS  # every item logged once: nothing repeated


def subprocess_env() -> dict:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", FASTFACE_MODE="tiny", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"
    )
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    return env
