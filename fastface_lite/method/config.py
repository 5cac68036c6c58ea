"""FastFace configurations as immutable values.

A :class:`FastFaceConfig` says everything one generation needs beyond the prompt and the face:
how the three guidance branches are combined (:class:`GuidanceConfig`, SPEC §2) and how the ID-token
attention is manipulated (:class:`AttentionConfig`, SPEC §3). Configs are frozen dataclasses:
nothing mutates them during a run, so one run can never change the next (the reference's
module-level constants could).

    cfg = FastFaceConfig.preset("fastface-am2", model="hyper")
    cfg = FastFaceConfig.from_reference_json("am2_and_dcg.json")
    cfg2 = cfg.replace(ip_adapter_scale=0.6)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from fastface_lite.errors import ConfigError
from fastface_lite.method.schedules import WeightSchedule

MODELS = ("hyper", "lightning", "lcm", "turbo", "base")
# guidance weight a = b used when no DCG schedule is asked for (SPEC §1)
MODEL_DEFAULT_GUIDANCE = {"hyper": 1.0, "lightning": 1.0, "turbo": 1.0, "lcm": 1.5, "base": 5.0}
# image side the model was distilled at; None = the pipeline's own default
MODEL_DEFAULT_SIZE = {"hyper": 1024, "lightning": 1024, "lcm": 1024, "turbo": 512, "base": 1024}

DCG_TYPES = (1, 2, 3)
TRANSFORMS = ("pow", "scale", "softmask", "adaptive_softmask")
BATCH_COUPLED_TRANSFORMS = ("softmask", "adaptive_softmask")  # min-max normalise over the batch
PARTS = ("down", "mid", "up")
PRESETS = ("baseline", "dcg", "am1", "am2", "fastface-am1", "fastface-am2")


# ----------------------------------------------------------------------------------------------
# guidance
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuidanceConfig:
    """How the three UNet branches are combined at each step (SPEC §2).

    Args:
        dcg_type: 1, 2 or 3 (3 is FastFace: e = e_u + a (e_i - e_u) + b (e_ti - e_i)).
        a, b: the two weights, as schedules over the steps.
        renorm: scale the second guidance term to the Frobenius norm of the first.
        rescale: phi of the std rescale applied after combining, or None for no rescale.
        record_norms: keep the norms of the branches and terms per step (needs all branches).
    """

    dcg_type: int = 3
    a: WeightSchedule = WeightSchedule()
    b: WeightSchedule = WeightSchedule()
    renorm: bool = False
    rescale: Optional[float] = None
    record_norms: bool = False

    def __post_init__(self):
        if self.dcg_type not in DCG_TYPES:
            raise ConfigError(f"dcg_type must be one of {DCG_TYPES}, got {self.dcg_type!r}")
        if self.rescale is not None and not 0.0 <= float(self.rescale) <= 1.0:
            raise ConfigError(f"rescale (phi) must lie in [0, 1], got {self.rescale!r}")

    def check_steps(self, num_steps: int) -> None:
        self.a.check_steps(num_steps, "guidance weight a")
        self.b.check_steps(num_steps, "guidance weight b")


# ----------------------------------------------------------------------------------------------
# attention manipulation
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartConstants:
    """Transform constants of one UNet part (down, mid or up)."""

    pow: float = 1.0          # exponent p of `pow`
    scale: float = 1.0        # factor s of `scale`
    softmask_k: float = 1.0   # sigmoid slope k of the softmask transforms
    quantile: float = 1.0     # quantile level qa of `adaptive_softmask`


@dataclass(frozen=True)
class PartTable:
    down: PartConstants = PartConstants(pow=1.3, scale=1.55, softmask_k=12.5, quantile=0.6)
    mid: PartConstants = PartConstants(pow=1.0, scale=1.0, softmask_k=1.0, quantile=1.0)
    up: PartConstants = PartConstants(pow=1.3, scale=1.45, softmask_k=12.5, quantile=0.6)

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
        for name in ("softmask_k", "quantile", "scale"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "parts", tuple(self.parts))
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
    """Attention manipulation (AM) of the ID tokens in the adapter's cross-attention (SPEC §3).

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
    schedule: Optional[AttentionSchedule] = None
    adain_weight: Optional[float] = None
    constants: PartTable = PartTable()
    normalize_per_branch: bool = False

    def __post_init__(self):
        for name in ("transforms", "target_parts", "target_tokens", "target_steps"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
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


# ----------------------------------------------------------------------------------------------
# the whole run
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FastFaceConfig:
    """Everything that defines a FastFace variant for one model and step count."""

    model: str = "hyper"
    num_steps: int = 4
    guidance: GuidanceConfig = GuidanceConfig()
    attention: AttentionConfig = AttentionConfig()
    ip_adapter_scale: float = 0.8
    faceid_lora_scale: float = 1.0
    width: Optional[int] = None
    height: Optional[int] = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError(f"num_steps must be a positive integer, got {self.num_steps!r}")
        self.guidance.check_steps(self.num_steps)
        self.attention.check_steps(self.num_steps)

    def replace(self, **changes) -> "FastFaceConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, model: str = "hyper", num_steps: int = 4, **overrides) -> "FastFaceConfig":
        """One of the six named variants of SPEC §3 for a model preset of SPEC §1.

        ``baseline dcg am1 am2 fastface-am1 fastface-am2``. The DCG and AM2 variants carry
        per-step lists written for 4 steps, so they need ``num_steps=4``.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
        with_dcg = name in ("dcg", "fastface-am1", "fastface-am2")
        if with_dcg:
            guidance = GuidanceConfig(
                dcg_type=3,
                a=WeightSchedule.per_step((1.0, 1.5, 1.5, 1.0)),
                b=WeightSchedule.per_step((1.0, 3.0, 3.0, 1.0)),
                rescale=0.75,
            )
        else:
            w = MODEL_DEFAULT_GUIDANCE[model]
            guidance = GuidanceConfig(dcg_type=3, a=WeightSchedule.constant(w), b=WeightSchedule.constant(w))
        # AM is on at the first four steps; a shorter run keeps the ones it has
        steps = tuple(range(min(4, num_steps)))
        if name in ("am1", "fastface-am1"):
            attention = AttentionConfig(transforms=("pow", "scale"), target_steps=steps)
        elif name in ("am2", "fastface-am2"):
            attention = AttentionConfig(
                transforms=("adaptive_softmask", "scale"),
                target_steps=steps,
                invert_token0=True,
                schedule=AttentionSchedule(),
                adain_weight=0.7 if name == "fastface-am2" else None,
            )
        else:
            attention = AttentionConfig()
        if (with_dcg or attention.schedule is not None) and num_steps != 4:
            raise ConfigError(
                f"preset {name!r} uses per-step lists written for 4 steps, but num_steps={num_steps}; "
                f"use num_steps=4 or build a GuidanceConfig/AttentionConfig for {num_steps} steps"
            )
        return cls(model=model, num_steps=num_steps, guidance=guidance, attention=attention,
                   name=name, **overrides)

    # -- plain-dict round trip -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready nested dict; :meth:`from_dict` gives back an equal config."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FastFaceConfig":
        data = dict(data)
        g = dict(data.pop("guidance", {}))
        for key in ("a", "b"):
            if key in g:
                g[key] = WeightSchedule(**_tuples(g[key]))
        at = dict(data.pop("attention", {}))
        if at.get("schedule") is not None:
            at["schedule"] = AttentionSchedule(**_tuples(at["schedule"]))
        if "constants" in at:
            at["constants"] = PartTable(**{p: PartConstants(**c) for p, c in at["constants"].items()})
        try:
            return cls(guidance=GuidanceConfig(**g), attention=AttentionConfig(**_tuples(at)), **data)
        except TypeError as err:  # unknown keys
            raise ConfigError(f"not a FastFaceConfig dict: {err}") from None

    # -- the reference implementation's JSON format (SPEC §3) ----------------------------------
    @classmethod
    def from_reference_json(cls, source) -> "FastFaceConfig":
        """Read a variant stored in the reference implementation's JSON format (a path or a dict)."""
        from fastface_lite.method.reference_json import config_from_reference

        name = "custom"
        if not isinstance(source, Mapping):
            path = Path(source)
            try:
                source = json.loads(path.read_text())
            except FileNotFoundError:
                raise ConfigError(f"config file {str(path)!r} does not exist") from None
            except json.JSONDecodeError as err:
                raise ConfigError(f"config file {str(path)!r} is not valid JSON: {err}") from None
            name = path.stem
        return config_from_reference(cls, source, name=name)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _tuples(d: Mapping) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
