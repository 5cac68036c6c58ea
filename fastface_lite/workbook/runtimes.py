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
from fastface_lite.sdxl.gpu_plan import gpu_plan

# Seconds on an H200, float16, 1024 px, 4 steps.
H200_SECONDS = {
    # bench/results/h200_sweep_sdxl.md: one move of the sweep explorer, 2 seeds, the first seed
    # recording norms (12 UNet evaluations), plots rendered, median of 3. That bench model has
    # SDXL's UNet but a small VAE and small text encoders, so a real move adds the decodes below.
    "sweep_move_2_seeds_small_vae": 2.76,
    # bench/results/h200_full_size_memory.md: fastface-am2 decoded (1.102) minus latents only
    # (0.906): one full-size VAE decode (in float32, SDXL's VAE upcasts)
    "full_size_decode": 1.102 - 0.906,
    # same file: one decoded image of the baseline variant (4 UNet evaluations), end to end
    "image_baseline": 0.674,
    # same file: baseline with model CPU offload (what the workbook turns on when even the fp16-fix
    # VAE would not fit, sdxl/gpu_plan.py) minus without: the weight transfers of one image
    "offload_overhead_per_image": 3.108 - 0.674,
}
# A T4 against an H200 for fp16 SDXL: roughly 8-10x slower (a T4 has about a tenth of an H200's
# dense fp16 tensor throughput and a sixth of its memory bandwidth). An estimate, NOT a measurement.
T4_SLOWDOWN = (8.0, 10.0)
T4_GIB = 14.75  # what torch reports for a 16 GB T4


@dataclass(frozen=True)
class Estimate:
    """Seconds of one piece of work on a GPU, (low, high), and where the numbers come from."""

    gpu: str
    low: float
    high: float
    source: str

    def __str__(self) -> str:
        span = f"{self.low:.1f} s" if self.low == self.high else f"{self.low:.0f}-{self.high:.0f} s"
        return f"{span} on {self.gpu} ({self.source})"


def sweep_move_seconds(seeds: int = 2, *, baseline: bool = False) -> tuple[Estimate, Estimate]:
    """(H200, T4) seconds of one sweep move with `seeds` images at 1024 px.

    H200: the measured 2-seed move scaled per seed, plus one full-size decode per image (also
    measured); `baseline=True` adds the first move's baseline images (4 UNet evaluations each,
    decoded; cached afterwards). T4: the H200's seconds times :data:`T4_SLOWDOWN`; if the T4's
    plan (:func:`~fastface_lite.sdxl.gpu_plan.gpu_plan`) needs model CPU offload, plus its weight
    transfers per image as measured on the H200 (a T4's bus is slower, so that part would be a
    lower bound). Identity scoring is not included.
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"seeds must be a whole number of images, 1 or more; got {seeds!r}")
    per_seed = H200_SECONDS["sweep_move_2_seeds_small_vae"] / 2 + H200_SECONDS["full_size_decode"]
    if baseline:
        per_seed += H200_SECONDS["image_baseline"]
    images = seeds * (2 if baseline else 1)
    h200 = seeds * per_seed
    t4_plan = gpu_plan(T4_GIB)
    transfers = images * H200_SECONDS["offload_overhead_per_image"] if t4_plan.offload else 0.0
    low, high = (h200 * factor + transfers for factor in T4_SLOWDOWN)
    how = "with CPU offload" if t4_plan.offload else f"{t4_plan.vae} VAE, no offload"
    return (
        Estimate("an H200", h200, h200, "from H200 measurements in bench/results/"),
        Estimate(f"a T4 ({how})", low, high, "estimate from the H200's, not measured"),
    )


def sweep_runtime_brief(seeds: int = 2) -> str:
    """One line for the explorer itself: the full-mode seconds per move, the T4's marked as an estimate."""
    h200, t4 = sweep_move_seconds(seeds)
    return (
        f"Full mode, {seeds} seed(s) at 1024 px: about {h200.low:.1f} s per move on an H200, an estimated "
        f"{t4.low:.0f}-{t4.high:.0f} s on a T4 (not measured; sources: fastface_lite.workbook.runtimes)."
    )


def sweep_runtime_note(seeds: int = 2) -> str:
    """What one move of the sweep explorer costs in full mode at 1024 px, said with its sources."""
    h200, t4 = sweep_move_seconds(seeds)
    first_h200, first_t4 = sweep_move_seconds(seeds, baseline=True)
    low, high = T4_SLOWDOWN
    return (
        f"Full mode, {seeds} seed(s) at 1024 px: one move takes about {h200.low:.1f} s on an H200 and an "
        f"estimated {t4.low:.0f}-{t4.high:.0f} s on a T4; the first move also makes the baseline images: about "
        f"{first_h200.low:.1f} s on an H200, {first_t4.low:.0f}-{first_t4.high:.0f} s on a T4. The H200 figures "
        "add up measurements (bench/results/h200_sweep_sdxl.md: "
        f"{H200_SECONDS['sweep_move_2_seeds_small_vae']:.2f} s per 2-seed move with a small VAE; "
        f"h200_full_size_memory.md: {H200_SECONDS['full_size_decode']:.2f} s per full-size decode, "
        f"{H200_SECONDS['image_baseline']:.2f} s per baseline image). The T4 figures are not measured: they "
        f"are estimates, the H200's times {low:.0f}-{high:.0f}x (a T4 runs fp16 SDXL roughly that much "
        f"slower){_t4_offload_words()}."
    )


def _t4_offload_words() -> str:
    plan = gpu_plan(T4_GIB)
    if not plan.offload:
        return f"; a T4 runs without CPU offload ({plan.vae} VAE: {plan.reason})"
    return (
        " plus the weight transfers of CPU offload measured on the H200 "
        f"({H200_SECONDS['offload_overhead_per_image']:.1f} s per image)"
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
    (named in :data:`FAST_GPUS`) whose plan (:func:`~fastface_lite.sdxl.gpu_plan.gpu_plan`) runs
    without CPU offload (not a small MIG slice); on a T4, an L4, a
    V100, a consumer card or the CPU, a move takes tens of seconds and the button is the better
    control.
    """
    if mode not in ("tiny", "full"):
        raise ConfigError(f"mode must be 'tiny' or 'full', got {mode!r}")
    if mode == "tiny":
        return True
    if not device_name or memory_gib is None or memory_gib <= 0 or gpu_plan(memory_gib).offload:
        return False  # offloaded: seconds of weight transfers per image
    words = re.split(r"[\s\-_/]+", device_name.upper())  # "NVIDIA A100-SXM4-80GB" -> NVIDIA, A100, ...
    return any(fast in words for fast in FAST_GPUS)
