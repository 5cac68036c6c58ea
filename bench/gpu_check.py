"""Prepared GPU check of the interactive-speed targets (not run on a CPU-only machine): full-size SDXL shapes, random
weights, fp16, 1024 px, 4 steps, under a T4-sized memory cap. Writes the raw tables to bench/results/.

Sections, each a table in the output file:

1. sync: does any host sync happen inside a UNet forward? (``torch.cuda.set_sync_debug_mode("error")``
   switched on by a pre-forward hook and off by a forward hook, per variant);
2. AM on vs off, eager: seconds per image (latents) per variant, the UNet's AM cost;
3. decoders: SDXL's VAE with the fp32 upcast, the same VAE decoding in fp16 (the fp16-fix layout:
   ``force_upcast=False``), and the tiny preview decoder (AutoencoderTiny at taesdxl's shape):
   seconds and peak GiB of one 1024 px decode;
4. end to end FastFace-AM2 with the fp16 VAE: uncapped vs capped at ``--cap-gib`` (no offload);
5. one sweep move: 2 seeds, FastFace-AM1, preview decoder;
6. eager vs ``pipe.compile(cfg)`` (persistent processors, fused FaceID LoRA, torch.compile'd UNet,
   CUDA graphs via mode "reduce-overhead" on CUDA): seconds per image per call (call 0 compiles;
   compile time = call 0 minus the eager median) and whether the compiled latents match eager
   (max abs difference).

    python bench/gpu_check.py --device cuda --dtype float16          # on the GPU, ~5-8 min
    python bench/gpu_check.py --small --reps 1 --backend eager       # CPU smoke test, shrunken shapes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderTiny

import fastface_lite as ff
from fastface_lite.sdxl.adapter import adapter_id_dim, id_inputs

sys.path.insert(0, str(Path(__file__).parent))
from full_size import build, run  # noqa: E402  (bench/ is not a package)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def median_run(pipe, inputs, cfg, size, device, reps, output_type="latent"):
    runs = [run(pipe, inputs, cfg, size, device, output_type) for _ in range(reps)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]


def latents_of(pipe, inputs, cfg, size):
    return pipe(
        prompt="a photo of a person reading in a park",
        fastface=cfg,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        **inputs.call_kwargs(),
    ).images


def sync_check(pipe, inputs, size, device) -> list[str]:
    """Host syncs inside the UNet forward raise under sync debug mode "error"."""
    if device != "cuda":
        return ["| (no CUDA: skipped) | |"]
    rows = []
    pre = pipe.unet.register_forward_pre_hook(lambda *_: torch.cuda.set_sync_debug_mode("error"))
    post = pipe.unet.register_forward_hook(lambda *_: torch.cuda.set_sync_debug_mode("default"))
    try:
        for name in ff.VARIANTS:
            try:
                run(pipe, inputs, ff.FastFaceConfig.preset(name), size, device, "latent")
                rows.append(f"| {name} | none |")
            except RuntimeError as error:
                rows.append(f"| {name} | {str(error).splitlines()[0][:150]} |")
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        pre.remove()
        post.remove()
    return rows


def decode_times(pipe, size, device, dtype, reps) -> list[str]:
    latents = torch.randn(1, 4, size // 8, size // 8, device=device, dtype=dtype)
    tiny = AutoencoderTiny().to(device, dtype).eval()  # taesdxl's architecture, random weights
    rows = []
    upcast = pipe.vae.config.force_upcast
    for label, force_upcast, preview in (
        ("SDXL VAE, fp32 upcast", True, False),
        ("fp16 VAE (fp16-fix layout)", False, False),
        ("tiny preview decoder", upcast, True),
    ):
        pipe.vae.register_to_config(force_upcast=force_upcast)
        pipe.preview_decoder = tiny if preview else None
        seconds = []
        peak_reset(device)
        for _ in range(reps + 1):
            sync(device)
            start = time.perf_counter()
            pipe.latents_to_images(latents, "np", preview=preview)
            sync(device)
            seconds.append(time.perf_counter() - start)
        rows.append(f"| {label} | {statistics.median(seconds[1:]):.3f} | {peak(device):.2f} |")
    pipe.vae.register_to_config(force_upcast=upcast)
    pipe.preview_decoder = tiny
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cap-gib", type=float, default=15.0)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend of section 6 (eager: smoke test)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dtype, device = getattr(torch, args.dtype), args.device
    size = args.size or (256 if args.small else 1024)
    out = [f"# gpu_check: {device} {args.dtype}, {size} px, 4 steps, median of {args.reps}"]
    if device == "cuda":
        out.append(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    pipe = build(device, dtype, args.small, size)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(adapter_id_dim(pipe)).astype(np.float32)
    inputs = id_inputs(pipe, emb / np.linalg.norm(emb), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    run(pipe, inputs, ff.FastFaceConfig.preset("fastface-am2"), size, device, "latent")  # warm-up

    out += ["", "## 1. host syncs inside a UNet forward", "| variant | sync |", "|---|---|"]
    out += sync_check(pipe, inputs, size, device)

    out += ["", "## 2. AM on vs off, eager (latents)", "| variant | s AM on | s AM off | AM cost | peak GiB |"]
    out.append("|---|---|---|---|---|")
    for name in ff.VARIANTS:
        cfg = ff.FastFaceConfig.preset(name)
        on = median_run(pipe, inputs, cfg, size, device, args.reps)
        off = median_run(pipe, inputs, cfg.replace(attention=ff.AttentionConfig()), size, device, args.reps)
        out.append(f"| {name} | {on[0]:.3f} | {off[0]:.3f} | {on[0] / off[0]:.2f}x | {on[1]:.2f} |")
        print(out[-1], file=sys.stderr)

    out += ["", "## 3. decoders, one image", "| decoder | s | peak GiB |", "|---|---|---|"]
    out += decode_times(pipe, size, device, dtype, args.reps)

    out += ["", "## 4. FastFace-AM2 end to end (fp16 VAE, PIL), no offload", "| cap | s | peak GiB |", "|---|---|---|"]
    pipe.vae.register_to_config(force_upcast=False)
    cfg = ff.FastFaceConfig.preset("fastface-am2")
    for cap in (None, args.cap_gib):
        if device == "cuda":
            total = torch.cuda.get_device_properties(0).total_memory / 2**30
            torch.cuda.set_per_process_memory_fraction(1.0 if cap is None else min(1.0, cap / total))
            torch.cuda.empty_cache()
        try:
            s, p, _ = median_run(pipe, inputs, cfg, size, device, args.reps, "pil")
            out.append(f"| {cap or 'none'} | {s:.3f} | {p:.2f} |")
        except torch.cuda.OutOfMemoryError as error:
            out.append(f"| {cap} | out of memory | {str(error).splitlines()[0][:100]} |")
    if device == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)

    out += ["", "## 5. one sweep move: 2 seeds, FastFace-AM1, preview decoder", "| s |", "|---|"]
    cfg = ff.FastFaceConfig.preset("fastface-am1")
    moves = []
    for _ in range(args.reps):
        sync(device)
        start = time.perf_counter()
        for seed in (0, 1):
            latents = pipe(
                prompt="a photo of a person",
                fastface=cfg,
                height=size,
                width=size,
                generator=torch.Generator().manual_seed(seed),
                output_type="latent",
                **inputs.call_kwargs(),
            ).images
            pipe.latents_to_images(latents, "pil", preview=True)
        sync(device)
        moves.append(time.perf_counter() - start)
    out.append(f"| {statistics.median(moves):.3f} |")

    if not args.no_compile:
        out += ["", "## 6. eager vs pipe.compile(cfg)", "| variant | call | s | eager median s | max abs diff |"]
        out.append("|---|---|---|---|---|")
        for name in ("fastface-am1", "fastface-am2"):
            cfg = ff.FastFaceConfig.preset(name)
            eager_s, _, _ = median_run(pipe, inputs, cfg, size, device, args.reps)
            eager_latents = latents_of(pipe, inputs, cfg, size)
            torch._dynamo.reset()
            try:
                with pipe.compiled(cfg, backend=args.backend):
                    for call in range(args.reps + 2):  # call 0 compiles; later ones reuse the graphs
                        s = run(pipe, inputs, cfg, size, device, "latent")[0]
                        out.append(f"| {name} | {call} | {s:.3f} | {eager_s:.3f} | |")
                        print(out[-1], file=sys.stderr)
                    diff = (latents_of(pipe, inputs, cfg, size).float() - eager_latents.float()).abs().max()
                    out[-1] = out[-1][: -len(" |")] + f" {float(diff):.2e} |"
            except Exception as error:  # a compile failure is a result here, not a crash
                out.append(f"| {name} | failed | | | {type(error).__name__}: {str(error).splitlines()[0][:150]} |")

    text = "\n".join(out) + "\n"
    print(text)
    target = Path(args.out) if args.out else Path(__file__).parent / "results" / f"gpu_check_{device}_{size}.md"
    target.write_text(text)
    print(f"written: {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
