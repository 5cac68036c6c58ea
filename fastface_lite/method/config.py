"""FastFace configurations as immutable values.

A :class:`FastFaceConfig` says everything one generation needs beyond the prompt and the face:
how the three guidance branches are combined
(:class:`~fastface_lite.method.dcg_config.GuidanceConfig`) and how the ID-token attention is
manipulated (:class:`~fastface_lite.method.am_config.AttentionConfig`). Configs are frozen dataclasses:
nothing mutates them during a run, so one run can never change the next (the reference's
module-level constants could).

    cfg = FastFaceConfig.preset("fastface-am2", model="hyper")
    cfg = FastFaceConfig.from_reference_json("am2_and_dcg.json")
    cfg2 = cfg.replace(ip_adapter_scale=0.6)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastface_lite.errors import ConfigError
from fastface_lite.method.am_config import AttentionConfig, AttentionSchedule, PartConstants, PartTable
from fastface_lite.method.checkpoints import CHECKPOINTS, MODELS
from fastface_lite.method.checks import MAX_SCALE, instance, integer, number
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.method.reference_json import reference_fields
from fastface_lite.method.schedules import WeightSchedule

VARIANTS = ("baseline", "dcg", "am1", "am2", "fastface-am1", "fastface-am2")  # the named method settings


@dataclass(frozen=True)
class FastFaceConfig:
    """Everything that defines a FastFace variant for one model and step count."""

    model: str = "hyper"
    num_steps: int = 4
    guidance: GuidanceConfig = GuidanceConfig()
    attention: AttentionConfig = AttentionConfig()
    ip_adapter_scale: float = 0.8
    faceid_lora_scale: float = 1.0
    width: int | None = None
    height: int | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        if not isinstance(self.model, str) or self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        object.__setattr__(self, "num_steps", integer(self.num_steps, "num_steps", 1))
        dict_hint = "build it with its class, or read a whole dict with FastFaceConfig.from_dict"
        instance(self.guidance, GuidanceConfig, "guidance", dict_hint)
        instance(self.attention, AttentionConfig, "attention", dict_hint)
        for name in ("ip_adapter_scale", "faceid_lora_scale"):
            object.__setattr__(self, name, number(getattr(self, name), name, 0.0, MAX_SCALE))
        for name in ("width", "height"):
            size = getattr(self, name)
            if size is not None and (integer(size, name, 64) % 8):
                raise ConfigError(f"{name} must be a multiple of 8 (pixels), got {size!r}")
            object.__setattr__(self, name, None if size is None else int(size))
        self.guidance.check_steps(self.num_steps)
        self.attention.check_steps(self.num_steps)

    def replace(self, **changes) -> FastFaceConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- the named variants -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, model: str = "hyper", num_steps: int = 4, **overrides) -> FastFaceConfig:
        """One of the six named variants of docs/method.md §12 for a checkpoint of docs/method.md §3 (``model``).

        ``baseline dcg am1 am2 fastface-am1 fastface-am2``. The DCG and AM2 variants carry
        per-step lists written for 4 steps, so they need ``num_steps=4``.
        """
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
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
            w = CHECKPOINTS[model].default_guidance
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
        return cls(model=model, num_steps=num_steps, guidance=guidance, attention=attention, name=name, **overrides)

    # -- plain-dict round trip -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready nested dict; :meth:`from_dict` gives back an equal config."""
        return _as_json_tree(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FastFaceConfig:
        """The config a :meth:`to_dict` dict (e.g. read back from JSON) describes.

        Every level is checked: keys must be fields of their class, values have the types and
        ranges the classes demand (lists as lists, booleans as booleans, finite numbers). An error
        names the path of the offending entry, e.g. ``guidance.a.values[2]``.
        """
        top = _keys(cls, data, "the config dict")
        g = _keys(GuidanceConfig, top.pop("guidance", {}), "guidance")
        for key in ("a", "b"):
            if key in g:
                g[key] = _nested(f"guidance.{key}", WeightSchedule, g[key])
        at = _keys(AttentionConfig, top.pop("attention", {}), "attention")
        if at.get("schedule") is not None:
            at["schedule"] = _nested("attention.schedule", AttentionSchedule, at["schedule"])
        if "constants" in at:
            parts = _keys(PartTable, at["constants"], "attention.constants")
            at["constants"] = PartTable(
                **{p: _nested(f"attention.constants.{p}", PartConstants, c) for p, c in parts.items()}
            )
        guidance = _at("guidance", GuidanceConfig, g)
        attention = _at("attention", AttentionConfig, at)
        return _at("the config dict", cls, {**top, "guidance": guidance, "attention": attention})

    # -- the reference implementation's JSON format (docs/method.md §13) ----------------------------------
    @classmethod
    def from_reference_json(cls, source) -> FastFaceConfig:
        """Read a variant stored in the reference implementation's JSON format (a path or a dict)."""
        name = "custom"
        if not isinstance(source, Mapping):
            if not isinstance(source, (str, os.PathLike)):
                raise ConfigError(
                    f"a reference config must be a JSON object (a dict) or the path of a JSON file, "
                    f"got {type(source).__name__}"
                )
            path = Path(source)
            try:
                source = json.loads(path.read_text())
            except FileNotFoundError:
                raise ConfigError(f"config file {str(path)!r} does not exist") from None
            except json.JSONDecodeError as err:
                raise ConfigError(f"config file {str(path)!r} is not valid JSON: {err}") from None
            name = path.stem
        return cls(**reference_fields(source), name=name)


def _as_json_tree(value):
    """Nested dicts with tuples turned into lists, as JSON stores them."""
    if isinstance(value, dict):
        return {k: _as_json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json_tree(v) for v in value]
    return value


def _keys(cls, data, where: str) -> dict:
    """``data`` as a dict whose keys are all fields of ``cls`` (ConfigError naming ``where`` if not)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a dict (a JSON object), got {type(data).__name__} {data!r:.80}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {', '.join(valid)}")
    return dict(data)


def _nested(where: str, cls, data):
    return _at(where, cls, _keys(cls, data, where))


def _at(where: str, cls, fields: dict):
    """``cls(**fields)``, with a ConfigError saying where in the dict the bad value sits."""
    try:
        return cls(**fields)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
