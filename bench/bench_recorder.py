"""Benchmark: what recording attention costs, in time and memory.

For each model and variant, three runs of one generation are timed side by side in one process,
round-robin so that drift in machine load hits all of them alike:

* ``off``: no recording;
* ``id``: ``trace(pipe, text=False)``: ID-token maps only (raw and used);
* ``text+id``: ``trace(pipe)``: also the 77 text-token maps (an extra softmax(Q K^T) per layer).

Reported per run: median seconds per image, its ratio to ``off``, the store's tensor bytes
(``Trace.nbytes``, what the memory bound covers) and the peak process RSS above the RSS before
the run (sampled every 2 ms, so it includes the transient per-layer probability tensors).

Variants: ``baseline`` (1 branch per step, AM off: unrecorded it takes diffusers' SDPA path,
recorded every layer takes the explicit path, so this is the worst case) and ``fastface-am2``
(3 branches at all 4 steps, AM on in down/up, which are explicit anyway).

Models: the tiny test model (latent 32x32) and a mid-size SDXL-shaped UNet (channels 128/256/512,
SDXL's block layout, 1/2/2 transformer layers, latent 64x64 = 512 px; random weights, fp32, CPU).
``--sizes sdxl --device cuda --dtype float16`` runs SDXL's own UNet shape at 1024 px on a GPU; memory
is then the peak of ``torch.cuda.max_memory_allocated`` above what was allocated before the run.
Usage: ``python bench/bench_recorder.py [--reps N] [--sizes tiny mid] [--presets ...]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fastface_lite as ff  # noqa: E402
from fastface_lite.inspect.trace import trace  # noqa: E402
from fastface_lite.sdxl import tiny  # noqa: E402
from fastface_lite.sdxl.adapter import adapter_id_dim, id_inputs  # noqa: E402

PROMPT = "a photo of a person reading in a park"
MID = dict(
    unet_channels=(128, 256, 512),
    unet_heads=(2, 4, 8),
    transformer_layers=(1, 2, 2),
    text_hidden=64,
    text_projection=64,
)
MODES = {"off": None, "id": dict(text=False), "text+id": dict()}


def build(size: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    if size == "tiny":
        pipe, pixels = ff.tiny_pipeline(adapter="faceid", seed=0), None
    else:
        dims, pixels = (MID, 512) if size == "mid" else (tiny.SDXL_UNET_DIMS, 1024)
        pipe = tiny.sized_pipeline(replace(tiny.TINY, **dims), adapter="faceid", seed=0, image_size=pixels)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device, dtype)
    emb = np.random.default_rng(0).standard_normal(adapter_id_dim(pipe)).astype(np.float32)
    return pipe, id_inputs(pipe, emb / np.linalg.norm(emb)), pixels


class PeakRSS:
    """Peak resident memory of this process while the block runs, above what it was before."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta(self) -> int:
        return self.peak - self.start


class PeakCUDA:
    """Peak GPU memory allocated while the block runs, above what was allocated before."""

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.delta = torch.cuda.max_memory_allocated() - self.start


def one_run(pipe, inputs, pixels, preset: str, mode: str):
    """(seconds, store bytes, peak RSS delta) of one generation in ``mode``."""
    cfg = ff.FastFaceConfig.preset(preset)
    kwargs = dict(
        prompt=PROMPT,
        fastface=cfg,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        height=pixels,
        width=pixels,
        **inputs.call_kwargs(),
    )
    gc.collect()
    with PeakCUDA() if torch.cuda.is_available() and pipe.device.type == "cuda" else PeakRSS() as rss:
        start = time.perf_counter()
        if MODES[mode] is None:
            pipe(**kwargs)
            nbytes = 0
        else:
            with trace(pipe, **MODES[mode]) as tr:
                pipe(**kwargs)
            nbytes = tr.nbytes
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        del kwargs
    return seconds, nbytes, rss.delta


def bench(pipe, inputs, pixels, size: str, preset: str, reps: int) -> list[dict]:
    one_run(pipe, inputs, pixels, preset, "text+id")  # warm-up: first calls pay one-off costs
    samples = {m: [] for m in MODES}
    for _ in range(reps):
        for mode in MODES:
            samples[mode].append(one_run(pipe, inputs, pixels, preset, mode))
    base = statistics.median(s for s, _, _ in samples["off"])
    base_rss = statistics.median(r for _, _, r in samples["off"])
    rows = []
    for mode, runs in samples.items():
        seconds = statistics.median(s for s, _, _ in runs)
        rss = statistics.median(r for _, _, r in runs)
        rows.append(
            dict(
                size=size,
                preset=preset,
                mode=mode,
                seconds=seconds,
                ratio=seconds / base,
                store=runs[-1][1],
                rss=rss,
                rss_extra=rss - base_rss,
            )
        )
    return rows


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid", "sdxl"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--presets", nargs="+", default=["baseline", "fastface-am2"], choices=list(ff.VARIANTS))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    started = time.perf_counter()
    rows = []
    for size in args.sizes:
        pipe, inputs, pixels = build(size, args.device, getattr(torch, args.dtype))
        for preset in args.presets:
            rows += bench(pipe, inputs, pixels, size, preset, args.reps)
        del pipe
    memory = "peak GPU alloc delta MiB" if args.device == "cuda" else "peak RSS delta MiB"
    print(
        f"\nRecorder overhead, 4 steps, 1 image, {args.dtype} on {args.device}, {torch.get_num_threads()} threads, "
        f"median of {args.reps}\n"
    )
    print(f"| model | variant | recording | s / image | x off | store MiB | {memory} | extra vs off MiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']} | {r['preset']} | {r['mode']} | {r['seconds']:.3f} | {r['ratio']:.2f} | "
            f"{mib(r['store'])} | {mib(r['rss'])} | {mib(r['rss_extra'])} |"
        )
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
