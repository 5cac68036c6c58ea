"""Helpers of the run-folder tests here: the small grid and read-only folders (the run helpers
shared with tests/evaluation/ live in tests/support/runs.py)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

from support.runs import REPO, log_lines, single_thread, subprocess_env  # noqa: F401 (shared with the tests here)

from fastface_lite.evaluation.grid import EvalSpec

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
