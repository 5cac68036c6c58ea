"""Benchmark: how long the guidance sweep of notebook 03 takes to answer one slider move.

One regeneration of `SweepExplorer` = one image per seed with norm recording (all three branches
at every step), decoded, plus the two plots rendered to PNG. Median of `--reps` regenerations after
a warm-up, for the tiny model (CPU default) or SDXL's UNet shape at 1024 px (`--size sdxl --device
cuda --dtype float16`, random weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fastface_lite as ff  # noqa: E402
from fastface_lite.sdxl import tiny  # noqa: E402
from fastface_lite.sdxl.adapter import adapter_id_dim, id_inputs  # noqa: E402
from fastface_lite.workbook.widgets import SweepExplorer  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "sdxl"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    if args.size == "tiny":
        pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)
    else:
        pipe = tiny.sized_pipeline(
            replace(tiny.TINY, **tiny.SDXL_UNET_DIMS), adapter="faceid-plusv2", seed=0, image_size=1024
        )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(args.device, getattr(torch, args.dtype))
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(adapter_id_dim(pipe)).astype(np.float32)
    inputs = id_inputs(pipe, emb / np.linalg.norm(emb), rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    explorer = SweepExplorer(pipe, inputs, "a photo of a person", seeds=range(args.seeds), preset="fastface-am1")
    seconds = []
    for rep in range(args.reps):
        start = time.perf_counter()
        explorer.a_steps[1].value = 1.5 + 0.1 * (rep + 1)  # one slider move = one regeneration
        seconds.append(time.perf_counter() - start)
    print(
        f"sweep, {args.size}, {args.dtype} on {args.device}, {args.seeds} seeds: "
        f"{statistics.median(seconds):.2f} s per slider move (median of {args.reps}, "
        f"{explorer.last.evaluations} UNet evaluations per image)"
    )


if __name__ == "__main__":
    main()
