"""How full mode fits SDXL on a GPU: which VAE decodes, and whether modules wait on the CPU.

A pure function of the GPU's memory (:func:`gpu_plan`), so the choice is tested over GPU sizes on a
machine without one; the workbook (`Workbook.describe()` says what was chosen and why) and
`fastface eval` both follow it.

The numbers are measured on full-size SDXL shapes with random weights, fp16, 1024 px, 4 steps
(``bench/full_size.py``; ``bench/results/h200_full_size_memory.md``):

* weights on the GPU 9.18 GiB; the UNet steps peak at 10.30 GiB (FastFace-AM2, latents only);
* decoded with SDXL's own VAE, which lifts itself to float32 for the decode: 14.75 GiB;
* the same with model CPU offload (each module on the GPU only while it runs): 9.86 GiB, at
  3.1-3.3 s per image against 0.7-1.1 s.

The fp16-fix VAE (``madebyollin/sdxl-vae-fp16-fix``) has SDXL's VAE layout and decodes in float16.
Its own peak has not been measured yet; it is bounded from the measured ones: the float32 decode
adds 14.75 - 9.18 = 5.57 GiB over the weights, a float16 decode of the same layers holds half those
bytes, so the peak is about max(10.30, 9.18 + 5.57 / 2) = 11.97 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastface_lite.errors import ConfigError

WEIGHTS_GIB = 9.18  # fp16 weights of the Plus v2 pipeline on the GPU (measured)
STEPS_PEAK_GIB = 10.30  # UNet steps, FastFace-AM2, latents only (measured)
FP32_DECODE_PEAK_GIB = 14.75  # SDXL's VAE decoding in float32 (measured)
OFFLOAD_PEAK_GIB = 9.86  # model CPU offload, SDXL's VAE (measured)
FP16_DECODE_PEAK_GIB = max(STEPS_PEAK_GIB, WEIGHTS_GIB + (FP32_DECODE_PEAK_GIB - WEIGHTS_GIB) / 2)  # estimated
# Beyond torch's own peak: the CUDA context, allocator fragmentation and insightface's onnxruntime session.
HEADROOM_GIB = 1.5


@dataclass(frozen=True)
class GpuPlan:
    """What full mode does on a GPU of `gpu_gib` GiB.

    Attributes:
        vae: ``load_pipeline``'s `vae`: "sdxl" (SDXL's own, decodes in float32) or "fp16-fix".
        offload: turn on ``pipe.enable_model_cpu_offload()``.
        peak_gib: the expected peak of one 1024 px image under this plan.
        reason: one line for ``Workbook.describe()``.
    """

    gpu_gib: float
    vae: str
    offload: bool
    peak_gib: float
    reason: str


def gpu_plan(gpu_gib: float, headroom_gib: float = HEADROOM_GIB, *, fp16_fix: bool = True) -> GpuPlan:
    """The fastest plan whose peak plus `headroom_gib` fits `gpu_gib`: SDXL's VAE on the GPU, else
    the fp16-fix VAE on the GPU (a 15 GiB T4), else model CPU offload (slower, lowest peak).

    `fp16_fix=False` keeps SDXL's own VAE whatever the GPU (offload where it does not fit): what
    `fastface eval` does, so a run's images do not depend on the size of the GPU that made them.
    """
    if gpu_gib <= 0:
        raise ConfigError(f"gpu_gib={gpu_gib!r} must be positive (the GPU's total memory in GiB)")
    fits = f"fits {gpu_gib:.1f} GiB with {headroom_gib:.1f} GiB to spare"
    if FP32_DECODE_PEAK_GIB + headroom_gib <= gpu_gib:
        return GpuPlan(
            gpu_gib, "sdxl", False, FP32_DECODE_PEAK_GIB, f"SDXL's VAE, all on the GPU: peak 14.75 GiB {fits}"
        )
    if fp16_fix and FP16_DECODE_PEAK_GIB + headroom_gib <= gpu_gib:
        return GpuPlan(
            gpu_gib,
            "fp16-fix",
            False,
            FP16_DECODE_PEAK_GIB,
            f"fp16-fix VAE, all on the GPU: SDXL's float32 decode (14.75 GiB) would not fit, the float16 "
            f"decode (about {FP16_DECODE_PEAK_GIB:.1f} GiB) {fits}",
        )
    return GpuPlan(
        gpu_gib,
        "sdxl",
        True,
        OFFLOAD_PEAK_GIB,
        (
            f"model CPU offload: even the fp16-fix VAE (about {FP16_DECODE_PEAK_GIB:.1f} GiB) would not fit "
            if fp16_fix
            else "model CPU offload: SDXL's VAE (14.75 GiB, kept for comparable images) would not fit "
        )
        + f"{gpu_gib:.1f} GiB; offload peaks at 9.86 GiB, about 3x slower per image",
    )


def device_gpu_plan(device: str | torch.device, *, fp16_fix: bool = True) -> GpuPlan | None:
    """:func:`gpu_plan` for the memory of CUDA `device`; None for any other device (nothing to plan)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    gib = torch.cuda.get_device_properties(device.index or 0).total_memory / 2**30
    return gpu_plan(gib, fp16_fix=fp16_fix)
