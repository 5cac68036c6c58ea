"""Read variants stored in the reference implementation's JSON format (docs/method.md §13).

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
from fastface_lite.method.checks import (
    MAX_SCALE,
    MAX_WEIGHT,
    boolean,
    integer,
    integers_list,
    number,
    strings_list,
)
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
    describes (``FastFaceConfig.from_reference_json`` builds the config from them).

    Types are checked, not guessed: booleans must be JSON booleans (``"false"`` is refused, not
    read as true), lists must be lists (``"1221"`` is not four values), counts must be integers,
    numbers finite. Errors name the entry by its path, e.g. ``pipe_kwargs.dcg_kwargs.dcg_type``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a reference config must be a JSON object, got {type(data).__name__}")
    raw_model = _text(data.get("model_name", "hyper"), "model_name").lower()
    model = MODEL_ALIASES.get(raw_model, raw_model)
    if model not in MODELS:
        raise ConfigError(f"model_name {raw_model!r} is not a known model; valid: {', '.join(MODELS)}")
    method = data.get("method", "faceid")
    if method != "faceid":
        raise ConfigError(f"method {method!r} is not supported; only 'faceid' configs can be read")

    pipe = _section(data, "pipe_kwargs", "pipe_kwargs")
    num_steps = integer(pipe.get("num_inference_steps", 4), "pipe_kwargs.num_inference_steps", 1)
    default = CHECKPOINTS[model].default_guidance
    weight_a = number(pipe.get("guidance_scale_a", default), "pipe_kwargs.guidance_scale_a", -MAX_WEIGHT, MAX_WEIGHT)
    weight_b = number(pipe.get("guidance_scale_b", default), "pipe_kwargs.guidance_scale_b", -MAX_WEIGHT, MAX_WEIGHT)
    if boolean(data.get("reset_gs_to_default", False), "reset_gs_to_default"):
        weight_a = weight_b = default

    guidance = _guidance(_section(pipe, "dcg_kwargs", "pipe_kwargs.dcg_kwargs"), weight_a, weight_b)
    patch = boolean(data.get("patch_pipe", False), "patch_pipe")
    attention = _attention(_section(data, "am_patch_kwargs", "am_patch_kwargs")) if patch else AttentionConfig()

    # the model's own size is what the pipeline uses anyway; keep None so presets compare equal
    width, height = (
        None if pipe.get(k) is None else integer(pipe[k], f"pipe_kwargs.{k}", 64) for k in ("width", "height")
    )
    size = CHECKPOINTS[model].default_size
    if width == size and height == size:
        width = height = None
    return dict(
        model=model,
        num_steps=num_steps,
        guidance=guidance,
        attention=attention,
        ip_adapter_scale=number(data.get("ip_adapter_scale", 0.8), "ip_adapter_scale", 0.0, MAX_SCALE),
        faceid_lora_scale=number(data.get("faceid_lora_scale", 1.0), "faceid_lora_scale", 0.0, MAX_SCALE),
        width=width,
        height=height,
    )


def _section(data: Mapping, key: str, where: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(value).__name__} {value!r:.60}")
    return dict(value)


def _text(value, where: str, optional: bool = False) -> str:
    if optional and value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r} ({type(value).__name__})")
    return value


def _guidance(dcg: dict, weight_a: float, weight_b: float) -> GuidanceConfig:
    where = "pipe_kwargs.dcg_kwargs"
    sch_kwargs = _section(dcg, "sch_kwargs", f"{where}.sch_kwargs")
    custom = _section(sch_kwargs, "custom", f"{where}.sch_kwargs.custom")
    postproc = _text(dcg.get("term_postproc"), f"{where}.term_postproc", optional=True)
    preproc = _text(dcg.get("term_preproc"), f"{where}.term_preproc", optional=True)
    schedules = {}
    for k, weight in (("a", weight_a), ("b", weight_b)):
        shape = _text(dcg.get(f"{k}_scheduler", "default"), f"{where}.{k}_scheduler")
        params = _section(sch_kwargs, k, f"{where}.sch_kwargs.{k}")
        try:
            schedules[k] = _schedule(shape, weight, params, custom.get(k), k)
        except ConfigError as err:
            raise ConfigError(f"{where} ({k}): {err}") from None
    rescale = None
    if postproc.startswith("rescale"):
        rescale = number(dcg.get("rescale", 0.7), f"{where}.rescale", 0.0, 1.0)
    return GuidanceConfig(
        dcg_type=integer(dcg.get("dcg_type", 3), f"{where}.dcg_type"),
        a=schedules["a"],
        b=schedules["b"],
        renorm="renorm" in preproc,
        rescale=rescale,
        record_norms=boolean(dcg.get("return_norms", False), f"{where}.return_norms"),
    )


def _schedule(shape: str, weight: float, params: Mapping, custom_values, which: str) -> WeightSchedule:
    if shape == "custom":
        if custom_values is None:
            raise ConfigError(f"{which}_scheduler is 'custom' but sch_kwargs.custom.{which} is missing")
        return WeightSchedule.per_step(custom_values)
    if shape not in TIMESTEP_SHAPES:
        return WeightSchedule(shape)  # raises the error listing the valid names
    needed = TIMESTEP_SHAPES[shape][1]
    kwargs = {k: number(params[k], f"sch_kwargs.{which}.{k}") for k in needed if k in params}
    return WeightSchedule(shape, weight, **kwargs)


def _attention(am: dict) -> AttentionConfig:
    where = "am_patch_kwargs"
    transforms = strings_list(am.get("am_transforms") or (), f"{where}.am_transforms")
    if not transforms:
        raise ConfigError("patch_pipe is true but am_patch_kwargs.am_transforms is empty")
    parts = am.get("target_parts") or ("down", "mid", "up")
    return AttentionConfig(
        transforms=transforms,
        target_parts=strings_list(parts, f"{where}.target_parts"),
        target_tokens=integers_list(am.get("target_tokens", (0, 1, 2, 3)), f"{where}.target_tokens"),
        target_steps=integers_list(am.get("target_tsteps", ()), f"{where}.target_tsteps"),
        invert_token0=boolean(am.get("inverse_neg_transforms", False), f"{where}.inverse_neg_transforms"),
        schedule=AttentionSchedule() if boolean(am.get("apply_schedule", False), f"{where}.apply_schedule") else None,
        adain_weight=ADAIN_WEIGHT if boolean(am.get("apply_adain", False), f"{where}.apply_adain") else None,
    )
