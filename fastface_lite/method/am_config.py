"""How the ID-token attention is manipulated: :class:`AttentionConfig` and its constants
(docs/method.md §5).

Frozen values: the per-step schedule replaces the part constants for one step by building a new
value, never by overwriting a shared table (the reference's module-level constants leaked from an
AM2 run into the next AM1 run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fastface_lite.errors import ConfigError
from fastface_lite.method.checks import (
    MAX_SCALE,
    MAX_SLOPE,
    boolean,
    instance,
    integers_list,
    number,
    numbers_list,
    optional_number,
    strings_list,
)

TRANSFORMS = ("pow", "scale", "softmask", "adaptive_softmask")
BATCH_COUPLED_TRANSFORMS = ("softmask", "adaptive_softmask")  # min-max normalise over the batch
PARTS = ("down", "mid", "up")  # the UNet parts: down_blocks.*, mid_block, up_blocks.*


@dataclass(frozen=True)
class PartConstants:
    """Transform constants of one UNet part (down, mid or up)."""

    pow: float = 1.0  # exponent p of `pow`
    scale: float = 1.0  # factor s of `scale`
    softmask_k: float = 1.0  # sigmoid slope k of the softmask transforms
    quantile: float = 1.0  # quantile level qa of `adaptive_softmask`

    def __post_init__(self):
        for name, low, high in (("pow", 0.0, MAX_SCALE), ("scale", 0.0, MAX_SCALE), ("softmask_k", 0.0, MAX_SLOPE)):
            object.__setattr__(self, name, number(getattr(self, name), f"constant {name}", low, high))
        object.__setattr__(self, "quantile", number(self.quantile, "constant quantile", 0.0, 1.0))


@dataclass(frozen=True)
class PartTable:
    down: PartConstants = PartConstants(pow=1.3, scale=1.55, softmask_k=12.5, quantile=0.6)
    mid: PartConstants = PartConstants(pow=1.0, scale=1.0, softmask_k=1.0, quantile=1.0)
    up: PartConstants = PartConstants(pow=1.3, scale=1.45, softmask_k=12.5, quantile=0.6)

    def __post_init__(self):
        for part in PARTS:
            instance(getattr(self, part), PartConstants, f"constants.{part}")

    def __getitem__(self, part: str) -> PartConstants:
        return getattr(self, part)


@dataclass(frozen=True)
class AttentionSchedule:
    """Per-step constants that replace the part constants at that step (reference `apply_schedule`)."""

    softmask_k: tuple[float, ...] = (7.5, 5.0, 5.0, 5.0)
    quantile: tuple[float, ...] = (0.65, 0.65, 0.65, 0.65)
    scale: tuple[float, ...] = (1.0, 1.55, 1.55, 1.55)
    parts: tuple[str, ...] = ("down", "up")

    def __post_init__(self):
        ranges = {"softmask_k": (0.0, MAX_SLOPE), "quantile": (0.0, 1.0), "scale": (0.0, MAX_SCALE)}
        for name, (low, high) in ranges.items():
            object.__setattr__(self, name, numbers_list(getattr(self, name), f"attention schedule {name}", low, high))
        object.__setattr__(self, "parts", strings_list(self.parts, "attention schedule parts"))
        lengths = {len(self.softmask_k), len(self.quantile), len(self.scale)}
        if len(lengths) != 1:
            raise ConfigError(
                f"attention schedule lists differ in length: softmask_k {len(self.softmask_k)}, "
                f"quantile {len(self.quantile)}, scale {len(self.scale)}"
            )
        _check_parts(self.parts, "attention schedule parts")

    @property
    def num_steps(self) -> int:
        return len(self.scale)


@dataclass(frozen=True)
class AttentionConfig:
    """Attention manipulation (AM) of the ID tokens in the adapter's cross-attention (docs/method.md §6).

    Args:
        transforms: chain applied in order to the target-token columns; empty = AM off.
        target_parts: UNet parts whose ``attn2`` layers are manipulated ("down", "mid", "up").
        target_tokens: ID-token indices transformed (0..T-1, T = 4 for FaceID).
        target_steps: step indices at which AM is on.
        invert_token0: treat token 0 as a "negative" token (reference `inverse_neg_transforms`).
        schedule: per-step constants replacing the part constants (reference `apply_schedule`).
        adain_weight: weight w of the AdaIN blend in both stages, or None for no AdaIN.
        constants: per-part constants of the transforms.
        normalize_per_branch: min-max normalise the softmask transforms within each guidance
            branch instead of over the whole 3-branch batch (the reference). Not the reference's
            numbers, but a branch then no longer depends on the others, so steps can skip the
            branches their guidance does not read (AM2: 4 UNet evaluations instead of 12).
    """

    transforms: tuple[str, ...] = ()
    target_parts: tuple[str, ...] = ("down", "up")
    target_tokens: tuple[int, ...] = (0, 1, 2, 3)
    target_steps: tuple[int, ...] = (0, 1, 2, 3)
    invert_token0: bool = False
    schedule: AttentionSchedule | None = None
    adain_weight: float | None = None
    constants: PartTable = PartTable()
    normalize_per_branch: bool = False

    def __post_init__(self):
        for name in ("transforms", "target_parts"):
            object.__setattr__(self, name, strings_list(getattr(self, name), name))
        for name in ("target_tokens", "target_steps"):
            object.__setattr__(self, name, integers_list(getattr(self, name), name))
        for name in ("invert_token0", "normalize_per_branch"):
            object.__setattr__(self, name, boolean(getattr(self, name), name))
        if self.schedule is not None:
            instance(self.schedule, AttentionSchedule, "schedule", "use AttentionSchedule(...) or None")
        instance(self.constants, PartTable, "constants")
        object.__setattr__(self, "adain_weight", optional_number(self.adain_weight, "adain_weight", 0.0, 1.0))
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad:
            raise ConfigError(f"unknown attention transform(s) {bad}; valid: {', '.join(TRANSFORMS)}")
        _check_parts(self.target_parts, "target_parts")
        for name in ("target_tokens", "target_steps"):
            values = getattr(self, name)
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
                raise ConfigError(f"{name} must be non-negative integers, got {list(values)}")
        if self.adain_weight is not None and not 0.0 <= float(self.adain_weight) <= 1.0:
            raise ConfigError(f"adain_weight must lie in [0, 1], got {self.adain_weight!r}")

    @property
    def enabled(self) -> bool:
        return len(self.transforms) > 0

    def active(self, part: str, step_index: int) -> bool:
        """Is AM applied in a layer of this part at this step?"""
        return self.enabled and part in self.target_parts and step_index in self.target_steps

    def couples_batch(self, step_index: int) -> bool:
        """Does AM at this step normalise jointly over the batch (so branches must stay together)?"""
        return (
            self.enabled
            and not self.normalize_per_branch
            and step_index in self.target_steps
            and any(t in BATCH_COUPLED_TRANSFORMS for t in self.transforms)
        )

    def constants_at(self, part: str, step_index: int) -> PartConstants:
        """Part constants, with the per-step schedule applied where it covers this part."""
        base = self.constants[part]
        if self.schedule is None or part not in self.schedule.parts:
            return base
        return dataclasses.replace(
            base,
            softmask_k=self.schedule.softmask_k[step_index],
            quantile=self.schedule.quantile[step_index],
            scale=self.schedule.scale[step_index],
        )

    def check_steps(self, num_steps: int) -> None:
        if not self.enabled:
            return
        outside = [s for s in self.target_steps if s >= num_steps]
        if outside:
            raise ConfigError(
                f"attention target_steps {outside} are outside the {num_steps} steps of the run "
                f"(valid: 0..{num_steps - 1})"
            )
        if self.schedule is not None and self.schedule.num_steps != num_steps:
            raise ConfigError(
                f"the attention schedule has {self.schedule.num_steps} per-step values but the run "
                f"has {num_steps} steps; give one value per step or turn the schedule off"
            )

    def check_tokens(self, num_tokens: int) -> None:
        """Raise if a target token does not exist in an adapter with ``num_tokens`` ID tokens."""
        outside = [t for t in self.target_tokens if t >= num_tokens]
        if self.enabled and outside:
            raise ConfigError(
                f"attention target_tokens {outside} do not exist: the adapter has {num_tokens} "
                f"ID tokens (valid: 0..{num_tokens - 1})"
            )


def _check_parts(parts, what):
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"unknown UNet part(s) {bad} in {what}; valid: {', '.join(PARTS)}")
