"""Helpers of the run-folder tests here: subprocess environment, log lines, torch on one thread
(the same reasons as tests/evaluation/tiny_runs.py: a small shared CPU box)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def _without_permission_override():
    """This thread without CAP_DAC_OVERRIDE (Linux), the capability that lets root write where
    permission bits forbid it; restored after. A thread's capabilities are its own: nothing else
    in the process changes."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, this thread
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    effective = data[0].effective
    data[0].effective &= ~(1 << 1)  # CAP_DAC_OVERRIDE
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = effective
        libc.capset(ctypes.byref(header), data)


@contextlib.contextmanager
def unwritable(folder: Path):
    """``folder`` and everything in it read-only inside the block (permission bits), restored after.

    Permission bits do not bind root (CI containers often run as root): a root process also drops
    CAP_DAC_OVERRIDE for the block, so they bind it as they bind any user."""
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~0o222 | (0o555 if p.is_dir() else 0o444))
    try:
        with _without_permission_override() if os.geteuid() == 0 else contextlib.nullcontext():
            yield
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])
