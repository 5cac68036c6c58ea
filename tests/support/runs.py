"""Helpers shared by the run-folder tests (tests/evaluation/ and tests/reliability/).

Torch runs on one thread for these runs: the processes launched by accelerate use one thread each
(torchrun sets OMP_NUM_THREADS=1), so a single-process reference does the same arithmetic (and
image bytes can be compared); and on a small shared CPU box two threads per process slow the tiny
UNet down many times over.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from fastface_lite.evaluation.run_folder import SHARDS

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def single_thread():
    """Torch on one thread inside the block, restored after."""
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
    """Offline tiny mode on one thread, importing this tree (not an installed copy), one process."""
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
