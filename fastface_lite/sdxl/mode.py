"""Run mode: `tiny` (offline, random weights, CPU) or `full` (real hub weights, GPU)."""

import os

from fastface_lite.errors import ConfigError

MODES = ("tiny", "full")


def run_mode() -> str:
    """FASTFACE_MODE if set, else full when CUDA is present, else tiny."""
    mode = os.environ.get("FASTFACE_MODE", "").strip().lower()
    if mode:
        if mode not in MODES:
            raise ConfigError(f"FASTFACE_MODE={mode!r} is not a mode; use one of {', '.join(MODES)}")
        return mode
    import torch

    return "full" if torch.cuda.is_available() else "tiny"
