"""Benchmark: eager vs compiled, decoders, one sweep move (the CPU tables of the README's benchmark section).

Three tables, each measured side by side in this one process (medians of alternating runs; times
are the process's CPU seconds, see ``bench/run.py``, except the compile time, in wall seconds):

1. eager vs ``pipe.compile()`` (torch.compile, inductor, CPU): seconds per image (latents) of
   ``--compile-variants`` (FastFace-AM1) at ``--compile-sizes`` (tiny), and the compile time (the
   compiled runs' first call minus an eager call: a 4-step run compiles one graph per step);
2. decoders: SDXL's VAE architecture decoding in float32 (what the fp32 upcast runs), the same VAE in
   float16 (what the fp16-fix VAE runs; on a CPU float16 convolutions are not faster, so only the
   memory column transfers to a GPU) and the tiny preview decoder (AutoencoderTiny, taesdxl's
   architecture): seconds and peak resident memory growth of one decode (random weights);
3. one sweep move: 2 seeds of FastFace-AM1 decoded with the preview decoder vs the full VAE.

Usage: ``python bench/bench_speed.py [--sizes tiny mid] [--reps 3] [--threads 1] [--no-compile]``.
On a GPU, ``bench/gpu_check.py`` runs the full-size version of these as one prepared script.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

import fastface_lite as ff

sys.path.insert(0, str(Path(__file__).parent))
from run import build, clock, timed  # noqa: E402  (bench/ is not a package)

# SDXL's VAE layout (diffusers' AutoencoderKL defaults otherwise)
SDXL_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    scaling_factor=0.13025,
)


def compile_rows(size: str, reps: int, variants) -> list[str]:
    """Eager vs compiled seconds per image for ``variants`` at one model size."""
    pipe, inputs = build(size, "cpu", torch.float32)
    rows = []
    for name in variants:
        cfg = ff.FastFaceConfig.preset(name)
        timed(pipe, inputs, cfg, False, "cpu")  # warm-up
        eager_first = timed(pipe, inputs, cfg, False, "cpu")[0]
        torch._dynamo.reset()
        pipe.compile(cfg)
        try:
            # compile time in wall seconds: inductor compiles in worker processes too
            start = time.perf_counter()
            timed(pipe, inputs, cfg, False, "cpu")
            first = time.perf_counter() - start
            eager, compiled = [], []
            for _ in range(reps):  # alternate: uncompiling costs nothing, recompiling nothing either
                compiled.append(timed(pipe, inputs, cfg, False, "cpu")[0])
                with _eager(pipe):
                    eager.append(timed(pipe, inputs, cfg, False, "cpu")[0])
        finally:
            pipe.uncompile()
        e, c = statistics.median(eager), statistics.median(compiled)
        rows.append(f"| {size} | {name} | {e:.3f} | {c:.3f} | {e / c:.2f}x | {first - eager_first:.1f} |")
        print(rows[-1], file=sys.stderr)
    return rows


class _eager:
    """Run the compiled pipeline's UNet eagerly for a moment (same processors, same fused LoRA)."""

    def __init__(self, pipe):
        self.unet = pipe.unet

    def __enter__(self):
        self.saved, self.unet._compiled_call_impl = self.unet._compiled_call_impl, None

    def __exit__(self, *exc):
        self.unet._compiled_call_impl = self.saved


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def peak_growth_mib(fn) -> float:
    """Peak resident memory growth (MiB) while ``fn()`` runs: Linux's VmHWM after resetting it
    (/proc/self/clear_refs), minus VmRSS before; freed memory is handed back to the OS first."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) / 1024


def decoder_rows(px: int, reps: int) -> list[str]:
    latents = torch.randn(1, 4, px // 8, px // 8, generator=torch.Generator().manual_seed(0))
    vae = AutoencoderKL(**SDXL_VAE).eval()
    decoders = {
        "SDXL VAE, float32 (the fp32 upcast)": (vae, torch.float32),
        "SDXL VAE, float16 (fp16-fix)": (AutoencoderKL(**SDXL_VAE).eval().to(torch.float16), torch.float16),
        "tiny preview decoder (taesdxl), float32": (AutoencoderTiny().eval(), torch.float32),
    }

    def decode(model, dtype):
        with torch.no_grad():
            model.decode(latents.to(dtype), return_dict=False)

    memory = {k: peak_growth_mib(lambda m=m, d=d: decode(m, d)) for k, (m, d) in decoders.items()}
    seconds = {k: [] for k in decoders}
    for _ in range(reps):
        for k, (m, d) in decoders.items():
            start = time.process_time()
            decode(m, d)
            seconds[k].append(time.process_time() - start)
    rows = []
    for k in decoders:
        rows.append(f"| {k} | {px} | {statistics.median(seconds[k]):.3f} | {memory[k]:.0f} |")
        print(rows[-1], file=sys.stderr)
    return rows


def sweep_rows(size: str, reps: int) -> list[str]:
    """One sweep move: 2 seeds of FastFace-AM1 to images, preview decoder vs full VAE."""
    pipe, inputs = build(size, "cpu", torch.float32)
    pipe.preview_decoder = AutoencoderTiny().eval()
    cfg = ff.FastFaceConfig.preset("fastface-am1")

    def move(preview: bool) -> float:
        now = clock("cpu")
        start = now()
        for seed in (0, 1):
            latents = pipe(
                prompt="a photo of a person",
                fastface=cfg,
                generator=torch.Generator().manual_seed(seed),
                output_type="latent",
                **inputs.call_kwargs(),
            ).images
            pipe.latents_to_images(latents, "pil", preview=preview)
        return now() - start

    move(True)
    runs = {True: [], False: []}
    for _ in range(reps):
        for preview in runs:
            runs[preview].append(move(preview))
    p, f = statistics.median(runs[True]), statistics.median(runs[False])
    px = pipe.default_sample_size * pipe.vae_scale_factor
    row = f"| {size} | {px} | {p:.3f} | {f:.3f} |"
    print(row, file=sys.stderr)
    return [row]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decode-px", type=int, default=256)
    parser.add_argument("--no-compile", action="store_true")
    # inductor compiles C++ for every graph (one per step): minutes per variant and size on 2 cores
    parser.add_argument("--compile-sizes", nargs="+", default=["tiny"], choices=["tiny", "mid"])
    parser.add_argument("--compile-variants", nargs="+", default=["fastface-am1"], choices=ff.VARIANTS)
    args = parser.parse_args(argv)
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    torch.set_num_threads(args.threads)
    head = (
        f"cpu, float32, torch {torch.__version__}, {args.threads} thread(s), CPU seconds, "
        f"median of {args.reps} alternating runs"
    )
    out = []
    if not args.no_compile:
        out += ["", f"## eager vs pipe.compile() (inductor), latents; {head}"]
        out += ["| model | variant | s eager | s compiled | speed-up | compile s (first call - eager) |"]
        out += ["|---|---|---|---|---|---|"]
        for size in args.compile_sizes:
            out += compile_rows(size, args.reps, args.compile_variants)
    out += ["", f"## decoders, one image, random weights; {head}", "| decoder | px | s | peak RSS growth MiB |"]
    out += ["|---|---|---|---|"]
    out += decoder_rows(args.decode_px, args.reps)
    out += ["", f"## one sweep move: 2 seeds, FastFace-AM1, to PIL; {head}"]
    out += ["| model | px | s, preview decoder | s, full VAE |", "|---|---|---|---|"]
    for size in args.sizes:
        out += sweep_rows(size, args.reps)
    print("\n".join(out))


if __name__ == "__main__":
    main()
