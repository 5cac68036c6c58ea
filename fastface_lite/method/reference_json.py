"""Read variants stored in the reference implementation's JSON format (SPEC §3).

The format nests guidance under ``pipe_kwargs.dcg_kwargs`` and attention under
``am_patch_kwargs``; this module maps it onto the fields of :class:`~fastface_lite.method.config.FastFaceConfig`.
Unknown schedule or transform names raise :class:`ConfigError` (through the config classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastface_lite.errors import ConfigError
from fastface_lite.method.am_config import AttentionConfig, AttentionSchedule
from fastface_lite.method.checkpoints import CHECKPOINTS, MODELS
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.method.schedules import TIMESTEP_SHAPES, WeightSchedule

# spellings of model names seen in configs and scripts
MODEL_ALIASES = {
    "hyper-sd": "hyper",
    "hypersd": "hyper",
    "sdxl-lightning": "lightning",
    "lcm-lora": "lcm",
    "sdxl-lcm": "lcm",
    "sdxl-turbo": "turbo",
    "sdxl": "base",
    "sdxl-base": "base",
}
ADAIN_WEIGHT = 0.7  # the reference uses 0.7 at every step when apply_adain is set


def reference_fields(data: Mapping[str, Any]) -> dict:
    """The :class:`~fastface_lite.method.config.FastFaceConfig` fields a reference-format dict
    describes (``FastFaceConfig.from_reference_json`` builds the config from them)."""
    raw_model = str(data.get("model_name", "hyper")).lower()
    model = MODEL_ALIASES.get(raw_model, raw_model)
    if model not in MODELS:
        raise ConfigError(f"model_name {raw_model!r} is not a known model; valid: {', '.join(MODELS)}")
    method = data.get("method", "faceid")
    if method != "faceid":
        raise ConfigError(f"method {method!r} is not supported; only 'faceid' configs can be read")

    pipe = dict(data.get("pipe_kwargs", {}))
    num_steps = int(pipe.get("num_inference_steps", 4))
    weight_a = float(pipe.get("guidance_scale_a", CHECKPOINTS[model].default_guidance))
    weight_b = float(pipe.get("guidance_scale_b", CHECKPOINTS[model].default_guidance))
    if data.get("reset_gs_to_default", False):
        weight_a = weight_b = CHECKPOINTS[model].default_guidance

    guidance = _guidance(dict(pipe.get("dcg_kwargs", {})), weight_a, weight_b)
    attention = _attention(dict(data.get("am_patch_kwargs", {}))) if data.get("patch_pipe") else AttentionConfig()

    # the model's own size is what the pipeline uses anyway; keep None so presets compare equal
    width, height = pipe.get("width"), pipe.get("height")
    default = CHECKPOINTS[model].default_size
    if width == default and height == default:
        width = height = None
    return dict(
        model=model,
        num_steps=num_steps,
        guidance=guidance,
        attention=attention,
        ip_adapter_scale=float(data.get("ip_adapter_scale", 0.8)),
        faceid_lora_scale=float(data.get("faceid_lora_scale", 1.0)),
        width=width,
        height=height,
    )


def _guidance(dcg: dict, weight_a: float, weight_b: float) -> GuidanceConfig:
    sch_kwargs = dict(dcg.get("sch_kwargs", {}))
    custom = dict(sch_kwargs.get("custom", {}))
    postproc = str(dcg.get("term_postproc", "") or "")
    return GuidanceConfig(
        dcg_type=int(dcg.get("dcg_type", 3)),
        a=_schedule(dcg.get("a_scheduler", "default"), weight_a, sch_kwargs.get("a", {}), custom.get("a"), "a"),
        b=_schedule(dcg.get("b_scheduler", "default"), weight_b, sch_kwargs.get("b", {}), custom.get("b"), "b"),
        renorm="renorm" in str(dcg.get("term_preproc", "") or ""),
        rescale=float(dcg.get("rescale", 0.7)) if postproc.startswith("rescale") else None,
        record_norms=bool(dcg.get("return_norms", False)),
    )


def _schedule(shape: str, weight: float, params: Mapping, custom_values, which: str) -> WeightSchedule:
    if shape == "custom":
        if custom_values is None:
            raise ConfigError(f"{which}_scheduler is 'custom' but sch_kwargs.custom.{which} is missing")
        return WeightSchedule.per_step(custom_values)
    if shape not in TIMESTEP_SHAPES:
        return WeightSchedule(shape)  # raises the error listing the valid names
    needed = TIMESTEP_SHAPES[shape][1]
    kwargs = {k: float(params[k]) for k in needed if k in params}
    return WeightSchedule(shape, weight, **kwargs)


def _attention(am: dict) -> AttentionConfig:
    transforms = tuple(am.get("am_transforms") or ())
    if not transforms:
        raise ConfigError("patch_pipe is true but am_patch_kwargs.am_transforms is empty")
    return AttentionConfig(
        transforms=transforms,
        target_parts=tuple(am.get("target_parts") or ("down", "mid", "up")),
        target_tokens=tuple(am.get("target_tokens", (0, 1, 2, 3))),
        target_steps=tuple(am.get("target_tsteps", ())),
        invert_token0=bool(am.get("inverse_neg_transforms", False)),
        schedule=AttentionSchedule() if am.get("apply_schedule", False) else None,
        adain_weight=ADAIN_WEIGHT if am.get("apply_adain", False) else None,
    )
