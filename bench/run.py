"""Benchmark: seconds per image and UNet evaluations per FastFace variant.

For each variant, three runs are timed side by side in one process, round-robin so that drift in
machine load hits all of them alike:

* ``skip``: FastFacePipeline as shipped (only the branches a step reads are evaluated);
* ``all``: the same with every branch evaluated at every step (what the reference does);
* ``am off``: the variant's guidance with attention manipulation switched off.

Ratios compare runs of the same model in this one process. Two models: the tiny test model and a
mid-size SDXL-shaped UNet (random weights, fp32, CPU). ``--threads`` sets torch's CPU threads (1 by
default: on a shared CPU, OpenMP threads that wait on each other make a 2-thread run swing by
several times, a 1-thread one by percents); on the CPU the times are the process's CPU time
(``time.process_time``), so other jobs on the machine do not inflate them. Usage: ``python bench/run.py [--reps N]``;
``--device cuda --dtype float16 --sizes sdxl`` runs the full-size SDXL UNet shape on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch

import fastface_lite as ff
from fastface_lite.sdxl import tiny
from fastface_lite.sdxl.adapter import adapter_id_dim, id_inputs

# name -> (TinyDims overrides, latent side). "mid" keeps SDXL's block layout at a quarter of its
# widths; "sdxl" is SDXL's own UNet shape (for a GPU).
SIZES = {
    "tiny": ({}, None),
    "mid": (
        dict(
            unet_channels=(80, 160, 320),
            unet_heads=(2, 4, 8),
            transformer_layers=(1, 2, 2),
            text_hidden=128,
            text_projection=128,
        ),
        64,
    ),
    "sdxl": (tiny.SDXL_UNET_DIMS, 128),
}


def build(size: str, device: str, dtype: torch.dtype):
    overrides, latent = SIZES[size]
    if not overrides:
        pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)
    else:
        pipe = tiny.sized_pipeline(
            replace(tiny.TINY, **overrides), adapter="faceid-plusv2", seed=0, image_size=latent * 8
        )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device, dtype)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(adapter_id_dim(pipe)).astype(np.float32)
    crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    return pipe, id_inputs(pipe, emb / np.linalg.norm(emb), crop)


def clock(device: str):
    """The timer: wall time on a GPU; on the CPU the process's CPU time, which other jobs on a
    shared machine do not inflate (with one torch thread it equals the wall time of an idle run)."""
    return time.perf_counter if device != "cpu" else time.process_time


def timed(pipe, inputs, cfg, all_branches: bool, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    now = clock(device)
    start = now()
    out = pipe(
        prompt="a photo of a person",
        fastface=cfg,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        evaluate_all_branches=all_branches,
        **inputs.call_kwargs(),
    )
    if device == "cuda":
        torch.cuda.synchronize()
    return now() - start, out.unet_evaluations


def variants():
    """The six presets, plus AM2 with per-branch normalisation (not the reference's numbers)."""
    for name in ff.VARIANTS:
        yield name, ff.FastFaceConfig.preset(name)
    cfg = ff.FastFaceConfig.preset("fastface-am2")
    per_branch = ff.AttentionConfig(**{**cfg.attention.__dict__, "normalize_per_branch": True})
    yield "fastface-am2, per-branch norm", cfg.replace(attention=per_branch)


def bench_size(size: str, reps: int, device: str, dtype: torch.dtype) -> list[dict]:
    pipe, inputs = build(size, device, dtype)
    timed(pipe, inputs, ff.FastFaceConfig.preset("fastface-am2"), True, device)  # warm-up
    rows = []
    for variant, cfg in variants():
        runs = {
            "skip": (cfg, False),
            "all": (cfg, True),
            "am_off": (cfg.replace(attention=ff.AttentionConfig()), False),
        }
        seconds = {k: [] for k in runs}
        evals = {}
        for _ in range(reps):
            for key, (c, all_branches) in runs.items():
                s, n = timed(pipe, inputs, c, all_branches, device)
                seconds[key].append(s)
                evals[key] = n
        med = {k: statistics.median(v) for k, v in seconds.items()}
        rows.append(
            {
                "size": size,
                "variant": variant,
                "evals": evals["skip"],
                "evals_all": evals["all"],
                "evals_am_off": evals["am_off"],
                "s_skip": med["skip"],
                "s_all": med["all"],
                "s_am_off": med["am_off"],
                "speedup": med["all"] / med["skip"],
                "am_cost": med["skip"] / med["am_off"],
            }
        )
        print(f"  {size} {variant}: {med['skip']:.3f}s skip, {med['all']:.3f}s all", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | variant | UNet evals / image | all branches | s / image | s / image, all branches | speed-up "
        "| AM off: evals | AM off: s / image | AM cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['variant']} | {r['evals']} | {r['evals_all']} | {r['s_skip']:.3f} | "
            f"{r['s_all']:.3f} | {r['speedup']:.2f}x | {r['evals_am_off']} | {r['s_am_off']:.3f} | "
            f"{r['am_cost']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dtype = getattr(torch, args.dtype)
    rows = []
    for size in args.sizes:
        rows += bench_size(size, args.reps, args.device, dtype)
    timer = "CPU seconds" if args.device == "cpu" else "wall seconds"
    threads = torch.get_num_threads()
    print(f"device {args.device}, {args.dtype}, torch threads {threads}, median of {args.reps}, {timer}")
    print(markdown(rows))


if __name__ == "__main__":
    main()
