"""Helpers of the run-folder tests here: subprocess environment, log lines, torch on one thread
(the same reasons as tests/evaluation/tiny_runs.py: a small shared CPU box)."""

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
