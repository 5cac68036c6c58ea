"""The model presets of SPEC §1 and the FaceID adapter loading shared by both modes.

Each preset says where a distilled SDXL lives on the hub, how it is applied (LoRA fused at 1.0,
a full UNet state dict, or a UNet folder), which scheduler and timestep spacing it samples with,
its image size and its guidance weight when no DCG schedule is used.

On-disk cache (tokenizer files, tiny adapter files): `$FASTFACE_LITE_CACHE`, else
`$XDG_CACHE_HOME/fastface_lite`, else `~/.cache/fastface_lite`. Entries are named by a hash of
what they contain, so a stale entry is never reused and concurrent writers agree.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)
from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection

from fastface_lite.sdxl.pipeline import FastFacePipeline

__all__ = [
    "ADAPTERS", "CLIP_VIT_H", "FACEID_REPO", "NUM_ID_TOKENS", "SDXL_BASE", "SDXL_SCHEDULER_CONFIG",
    "MODEL_PRESETS", "ModelPreset", "adapter_info", "cache_root", "make_scheduler", "preset_timesteps",
]

# ----------------------------------------------------------------------------------------------
# The presets of SPEC §1
# ----------------------------------------------------------------------------------------------

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
FACEID_REPO = "h94/IP-Adapter-FaceID"
CLIP_VIT_H = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
NUM_ID_TOKENS = 4  # both FaceID SDXL adapters inject 4 ID tokens into every attn2

# adapter name -> h94 file name
ADAPTERS = {
    "faceid": "ip-adapter-faceid_sdxl.bin",
    "faceid-plusv2": "ip-adapter-faceid-plusv2_sdxl.bin",
}

# `stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json`: what every preset's scheduler is
# derived from (the distilled checkpoints keep SDXL's noise schedule and change the sampler/spacing).
SDXL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "clip_sample": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

_SCHEDULERS = {
    cls.__name__: cls
    for cls in (DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, LCMScheduler)
}


@dataclass(frozen=True)
class ModelPreset:
    """One row of SPEC §1's table of distilled checkpoints.

    `how` says how the weights enter the SDXL base pipeline: "lora" (load, fuse at 1.0, unload),
    "unet_file" (a full UNet state dict in one safetensors file), "unet_folder" (a diffusers UNet in
    the repo's `unet` subfolder) or "base" (nothing). `steps` lists the step counts that have a
    checkpoint; empty means one checkpoint serves any count.
    """

    name: str
    repo: str
    how: str
    scheduler: str
    timestep_spacing: str | None  # overrides SDXL's "leading"; None keeps the config's own
    default_size: int  # pixels, square
    default_guidance: float  # a = b of SPEC §2 when no DCG schedule is used
    steps: tuple[int, ...] = ()
    file_pattern: str | None = None  # "{n}" = steps, "{s}" = "s" when steps > 1

    def weight_name(self, steps: int) -> str | None:
        """Checkpoint file name for `steps` sampling steps (None when the repo layout names it)."""
        if self.file_pattern is None:
            return None
        return self.file_pattern.format(n=steps, s="s" if steps > 1 else "")


MODEL_PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "hyper", "ByteDance/Hyper-SD", "lora", "DDIMScheduler", "trailing", 1024, 1.0,
            steps=(1, 2, 4, 8), file_pattern="Hyper-SDXL-{n}step{s}-lora.safetensors",
        ),
        ModelPreset(
            "lightning", "ByteDance/SDXL-Lightning", "unet_file", "EulerDiscreteScheduler", "trailing", 1024, 1.0,
            steps=(2, 4, 8), file_pattern="sdxl_lightning_{n}step_unet.safetensors",
        ),
        ModelPreset(
            "lcm", "latent-consistency/lcm-lora-sdxl", "lora", "LCMScheduler", None, 1024, 1.5,
            file_pattern="pytorch_lora_weights.safetensors",
        ),
        # Turbo's own scheduler config (repo subfolder `scheduler`) is EulerAncestral with trailing
        # spacing; load_pipeline reads that file, the tiny twin mirrors it.
        ModelPreset(
            "turbo", "stabilityai/sdxl-turbo", "unet_folder", "EulerAncestralDiscreteScheduler", "trailing", 512, 1.0
        ),
        ModelPreset("base", SDXL_BASE, "base", "EulerDiscreteScheduler", None, 1024, 5.0),
    )
}


def _check_model(model: str) -> ModelPreset:
    if model not in MODEL_PRESETS:
        raise ValueError(f"model={model!r} is not a preset; use one of {sorted(MODEL_PRESETS)}.")
    return MODEL_PRESETS[model]


def _check_steps(preset: ModelPreset, steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int.")
    if preset.steps and steps not in preset.steps:
        raise ValueError(
            f"steps={steps} has no {preset.name!r} checkpoint in {preset.repo}; "
            f"use one of {list(preset.steps)} (or another model)."
        )


def _check_adapter(adapter: str | None) -> None:
    if adapter is not None and adapter not in ADAPTERS:
        raise ValueError(f"adapter={adapter!r} is unknown; use one of {sorted(ADAPTERS)} or None.")


def make_scheduler(model: str, base_config: dict | None = None):
    """The preset's scheduler, derived from SDXL's scheduler config (or `base_config`)."""
    preset = _check_model(model)
    overrides = {"timestep_spacing": preset.timestep_spacing} if preset.timestep_spacing else {}
    return _SCHEDULERS[preset.scheduler].from_config(dict(base_config or SDXL_SCHEDULER_CONFIG), **overrides)


def preset_timesteps(model: str, steps: int = 4) -> list[int]:
    """Timesteps the preset's scheduler visits in `steps` steps, e.g. hyper 4 -> [999, 749, 499, 249]."""
    scheduler = make_scheduler(model)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


# ----------------------------------------------------------------------------------------------
# On-disk cache
# ----------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Folder for built artefacts: $FASTFACE_LITE_CACHE, $XDG_CACHE_HOME/fastface_lite or ~/.cache/fastface_lite."""
    if os.environ.get("FASTFACE_LITE_CACHE"):
        return Path(os.environ["FASTFACE_LITE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "fastface_lite"


def _content_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Adapter loading, shared by both modes
# ----------------------------------------------------------------------------------------------


def _load_faceid(pipe: FastFacePipeline, adapter: str, source: str, **hub) -> None:
    """`load_ip_adapter` as SPEC §1 does it; for Plus v2 turn on the v2 shortcut."""
    pipe.load_ip_adapter(source, subfolder=None, weight_name=ADAPTERS[adapter], image_encoder_folder=None, **hub)
    if adapter == "faceid-plusv2":
        projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        projection.shortcut = True  # v2: ID tokens = MLP(id) + shortcut_scale * resampler(...)
        projection.shortcut_scale = 1.0


def adapter_info(pipe) -> tuple[int, int]:
    """(number of ID tokens, ID embedding size) of the FaceID adapter loaded in `pipe`.

    Real checkpoints give (4, 512); the tiny ones (4, TINY_ID_DIM).
    """
    hid = getattr(pipe.unet, "encoder_hid_proj", None)
    if hid is None or not hasattr(hid, "image_projection_layers"):
        raise ValueError("pipe has no IP adapter loaded; build it with adapter='faceid' or 'faceid-plusv2'.")
    layer = hid.image_projection_layers[0]
    if isinstance(layer, IPAdapterFaceIDPlusImageProjection):
        return layer.num_tokens, layer.proj.net[0].proj.in_features
    if isinstance(layer, IPAdapterFaceIDImageProjection):
        return layer.num_tokens, layer.ff.net[0].proj.in_features
    raise ValueError(f"pipe's IP adapter is a {type(layer).__name__}, not FaceID; load a FaceID adapter.")



@contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


