"""How long full mode takes: the measured GPU numbers in one place, and the estimates made from them.

Every number below was measured on one H200 with SDXL's full-size shapes (random weights, which
cost the same as the real ones), float16, 1024 px, 4 steps; the file each comes from is named
beside it. No T4 was measured: its numbers are estimates, a stated slow-down factor applied to
the H200's, and every text made from them says so.

    print(sweep_runtime_note(seeds=2))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastface_lite.errors import ConfigError
from fastface_lite.workbook.session import SMALL_GPU_GIB

# Seconds on an H200, float16, 1024 px, 4 steps.
H200_SECONDS = {
    # bench/results/h200_sweep_sdxl.md: one move of the sweep explorer, 2 seeds, the first seed
    # recording norms (12 UNet evaluations), images decoded, plots rendered; median of 3
    "sweep_move_2_seeds": 2.76,
    # bench/results/h200_full_size_memory.md: one decoded image, baseline (4 UNet evaluations)
    "image_baseline": 0.674,
    # same file: one decoded image, fastface-am2 (12 UNet evaluations)
    "image_12_evaluations": 1.102,
    # same file: baseline with model CPU offload (what the workbook turns on below 20 GiB of GPU
    # memory, i.e. on a T4) minus without: the weight transfers of one image
    "offload_overhead_per_image": 3.108 - 0.674,
}
# A T4 against an H200 for fp16 SDXL: roughly 8-10x slower (a T4 has about a tenth of an H200's
# fp16 tensor throughput and a sixth of its memory bandwidth). An estimate, NOT a measurement.
T4_SLOWDOWN = (8.0, 10.0)


@dataclass(frozen=True)
class Estimate:
    """Seconds of one piece of work on a GPU: (low, high); equal when measured."""

    gpu: str
    low: float
    high: float
    measured: bool

    def __str__(self) -> str:
        span = f"{self.low:.1f} s" if self.low == self.high else f"{self.low:.0f}-{self.high:.0f} s"
        return f"{span} on {self.gpu} ({'measured' if self.measured else 'estimate, not measured'})"


def sweep_move_seconds(seeds: int = 2, *, baseline: bool = False) -> tuple[Estimate, Estimate]:
    """(H200, T4) seconds of one sweep move with `seeds` images at 1024 px.

    The H200 number scales the measured 2-seed move per seed; `baseline=True` adds the first
    move's baseline images (4 UNet evaluations each, cached afterwards). The T4 number is the
    H200's times :data:`T4_SLOWDOWN` plus the weight transfers of model CPU offload per image
    (measured on the H200; a T4's bus is slower, so this part is a lower bound).
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"seeds must be a whole number of images, 1 or more; got {seeds!r}")
    per_image = H200_SECONDS["sweep_move_2_seeds"] / 2 + (H200_SECONDS["image_baseline"] if baseline else 0.0)
    images = seeds * (2 if baseline else 1)
    h200 = seeds * per_image
    transfers = images * H200_SECONDS["offload_overhead_per_image"]
    low, high = (h200 * factor + transfers for factor in T4_SLOWDOWN)
    return (
        Estimate("an H200", h200, h200, measured=seeds == 2 and not baseline),
        Estimate("a T4 (with CPU offload)", low, high, measured=False),
    )


def sweep_runtime_note(seeds: int = 2) -> str:
    """What one move of the sweep explorer costs in full mode at 1024 px, said with its sources."""
    h200, t4 = sweep_move_seconds(seeds)
    first_h200, first_t4 = sweep_move_seconds(seeds, baseline=True)
    low, high = T4_SLOWDOWN
    return (
        f"Full mode, {seeds} seed(s) at 1024 px: one move takes about {h200.low:.1f} s on an H200 "
        "(measured without identity scores, "
        f"bench/results/h200_sweep_sdxl.md) and an estimated {t4.low:.0f}-{t4.high:.0f} s on a T4. The first "
        f"move also makes the baseline images: about {first_h200.low:.1f} s on an H200 and {first_t4.low:.0f}-"
        f"{first_t4.high:.0f} s on a T4 (derived from the per-image times in "
        "bench/results/h200_full_size_memory.md). The T4 figures are estimates, not measurements: the H200's "
        f"times {low:.0f}-{high:.0f}x (a T4 runs fp16 SDXL roughly that much slower) plus the weight transfers "
        f"of CPU offload measured on the H200 ({H200_SECONDS['offload_overhead_per_image']:.1f} s per image)."
    )


# GPUs at least as fast as an A100 for fp16 SDXL (data-centre parts of the A100 generation and
# later): a sweep move takes a few seconds there, so the explorer may regenerate on every release.
FAST_GPUS = ("A100", "A800", "H100", "H800", "H200", "GH200", "B100", "B200", "GB200", "MI300")


def regenerate_on_release(mode: str, device_name: str | None, memory_gib: float | None) -> bool:
    """Whether the sweep explorer should regenerate on every slider release (else: a Generate button).

    Args:
        mode: "tiny" or "full" (the run mode).
        device_name: the CUDA device name (``torch.cuda.get_device_name``), None on the CPU.
        memory_gib: the device's memory in GiB, None on the CPU.

    Tiny mode answers in about a second anywhere: yes. Full mode only on a GPU as fast as an A100
    (named in :data:`FAST_GPUS`) with enough memory to run without CPU offload; on a T4, an L4, a
    V100, a consumer card or the CPU, a move takes tens of seconds and the button is the better
    control.
    """
    if mode not in ("tiny", "full"):
        raise ConfigError(f"mode must be 'tiny' or 'full', got {mode!r}")
    if mode == "tiny":
        return True
    if not device_name or memory_gib is None or memory_gib < SMALL_GPU_GIB:
        return False  # below SMALL_GPU_GIB the workbook offloads: seconds of transfers per image
    words = re.split(r"[\s\-_/]+", device_name.upper())  # "NVIDIA A100-SXM4-80GB" -> NVIDIA, A100, ...
    return any(fast in words for fast in FAST_GPUS)
