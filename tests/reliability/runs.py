"""Helpers of the run-folder tests here: subprocess environment, log lines, torch on one thread
(the same reasons as tests/evaluation/tiny_runs.py: a small shared CPU box)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch

from fastface_lite.evaluation.grid import EvalSpec
from fastface_lite.evaluation.run_folder import SHARDS

REPO = Path(__file__).resolve().parents[2]
# the grid of the run-folder tests: one identity x one prompt x two variants at 64 px, tiny mode
SMALL = [
    "--identities",
    "astronaut",
    "--prompt-sets",
    "realistic",
    "--prompts-per-set",
    "1",
    "--variants",
    "baseline",
    "fastface-am2",
    "--size",
    "64",
    "--mode",
    "tiny",
    "--no-progress",
]
SMALL_GRID = EvalSpec(
    identities=("astronaut",),
    prompt_sets=("realistic",),
    prompts_per_set=1,
    variants=("baseline", "fastface-am2"),
    size=64,
    mode="tiny",
)


@contextlib.contextmanager
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def log_lines(run: Path) -> list[dict]:
    """Every record of every process log of ``run``."""
    lines = []
    for log in sorted((run / SHARDS).glob("*.jsonl")):
        lines += [json.loads(line) for line in log.read_text().splitlines()]
    return lines


def subprocess_env() -> dict:
    """Offline tiny mode on one thread, importing this tree (not an installed copy)."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        FASTFACE_MODE="tiny",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(REPO),
    )
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    return env


@contextlib.contextmanager
def world_readable_tmp():
    """A temporary folder that every user may enter (unlike pytest's tmp_path under root), for
    `unwritable`; removed after."""
    with tempfile.TemporaryDirectory(prefix="fastface-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


@contextlib.contextmanager
def unwritable(folder: Path):
    """``folder`` and everything in it made read-only inside the block, restored after.

    Permission bits do not bind root (CI containers often run as root), so a root process also
    takes the unprivileged user `nobody` as its effective user for the block (``os.seteuid``, undone
    after): ``folder`` must then lie in a `world_readable_tmp`, and what the block imports must be
    imported before (the interpreter may sit in a folder only root can read)."""
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~0o222 | (0o555 if p.is_dir() else 0o444))
    root = os.geteuid() == 0
    if root:
        os.seteuid(65534)  # nobody
    try:
        yield
    finally:
        if root:
            os.seteuid(0)
        for p in reversed(paths):
            p.chmod(modes[p])
