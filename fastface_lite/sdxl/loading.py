"""Loading the real checkpoints from the Hugging Face hub (or its cache): `load_pipeline`, and the
scheduler each checkpoint samples with.

`load_pipeline` returns a `FastFacePipeline` (an SDXL pipeline) with IP-Adapter FaceID loaded
through diffusers' own `load_ip_adapter`, exactly as the tiny offline twin
(:func:`fastface_lite.sdxl.tiny.tiny_pipeline`) does, so everything downstream (attention
processors, the peft adapter `faceid_0`, `encoder_hid_proj`) is the same object graph in both modes.
Which repositories and files it reads: :func:`fastface_lite.workbook.anatomy.hub_files`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPVisionModelWithProjection

from fastface_lite.errors import WeightsUnavailable
from fastface_lite.method.checkpoints import (
    CLIP_VIT_H,
    FACEID_REPO,
    PREVIEW_DECODER,
    SDXL_BASE,
    Checkpoint,
    check_adapter,
    check_model,
    check_steps,
    check_vae,
)
from fastface_lite.sdxl.adapter import clip_image_processor, load_faceid
from fastface_lite.sdxl.pipeline import FastFacePipeline

# ----------------------------------------------------------------------------------------------
# schedulers
# ----------------------------------------------------------------------------------------------
# `stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json`: what every checkpoint's scheduler is
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

SCHEDULERS = {  # class name -> class, for the names in the checkpoint table
    cls.__name__: cls for cls in (DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, LCMScheduler)
}


def make_scheduler(model: str, base_config: dict | None = None):
    """The checkpoint's scheduler, derived from SDXL's scheduler config (or `base_config`)."""
    checkpoint = check_model(model)
    overrides = {"timestep_spacing": checkpoint.timestep_spacing} if checkpoint.timestep_spacing else {}
    return SCHEDULERS[checkpoint.scheduler].from_config(dict(base_config or SDXL_SCHEDULER_CONFIG), **overrides)


def model_timesteps(model: str, steps: int = 4) -> list[int]:
    """Timesteps the checkpoint's scheduler visits in `steps` steps, e.g. hyper 4 -> [999, 749, 499, 249]."""
    scheduler = make_scheduler(model)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


@contextmanager
def quiet_diffusers():
    """Diffusers at error level inside the block (for notices that are expected there)."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


# ----------------------------------------------------------------------------------------------
# load_pipeline: the real checkpoints
# ----------------------------------------------------------------------------------------------


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; honour a later change of the env var too
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _load_unet(checkpoint: Checkpoint, steps: int, dtype, variant, hub: dict) -> UNet2DConditionModel | None:
    """The replacement UNet of "unet_file" / "unet_folder" presets (None for the others)."""
    if checkpoint.how == "unet_folder":
        return UNet2DConditionModel.from_pretrained(
            checkpoint.repo, subfolder="unet", dtype=dtype, variant=variant, **hub
        )
    if checkpoint.how == "unet_file":
        from accelerate import init_empty_weights
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        config = UNet2DConditionModel.load_config(SDXL_BASE, subfolder="unet", **hub)
        with init_empty_weights():  # no throw-away fp32 init of 2.6B parameters
            unet = UNet2DConditionModel.from_config(config)
        path = hf_hub_download(checkpoint.repo, checkpoint.weight_name(steps), **hub)
        # strict: a layout mismatch is an error, not silent noise
        unet.load_state_dict(load_file(path), strict=True, assign=True)
        return unet.to(dtype).eval()
    return None


def _fuse_lora(pipe: FastFacePipeline, checkpoint: Checkpoint, steps: int, hub: dict) -> None:
    """Fuse the distillation LoRA into the UNet at 1.0, then drop the adapter, so only the FaceID
    LoRA (`faceid_0`) is a live peft adapter afterwards."""
    with quiet_diffusers():  # UNet-only LoRAs: diffusers' "no text encoder LoRA keys" notes are expected
        pipe.load_lora_weights(
            checkpoint.repo, weight_name=checkpoint.weight_name(steps), adapter_name=checkpoint.name, **hub
        )
    pipe.fuse_lora(lora_scale=1.0, adapter_names=[checkpoint.name])
    pipe.unload_lora_weights()


class ClipVisionTower(CLIPVisionModelWithProjection):
    """CLIP's vision tower (with projection) read from a whole CLIP checkpoint.

    The repo FaceID Plus v2 reads crops with (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``) holds the
    text tower too; those weights are unused here by design, so transformers is told not to list
    them as unexpected keys (a table of every text layer otherwise printed on each load). Missing or
    mismatched vision weights are still reported.
    """

    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^text_projection\.", r"^logit_scale$"]


def _load_scheduler(checkpoint: Checkpoint, base_config: dict, hub: dict):
    if checkpoint.how == "unet_folder":  # Turbo ships its own scheduler config
        return SCHEDULERS[checkpoint.scheduler].from_pretrained(checkpoint.repo, subfolder="scheduler", **hub)
    return make_scheduler(checkpoint.name, base_config)


def load_pipeline(
    model: str = "hyper",
    steps: int = 4,
    adapter: str | None = "faceid-plusv2",
    device: str = "cuda",
    dtype: torch.dtype = torch.float16,
    cache_dir: str | os.PathLike | None = None,
    vae: str = "sdxl",
    preview_decoder: bool = False,
) -> FastFacePipeline:
    """The real docs/method.md §3 checkpoint `model` for `steps` steps, with the FaceID `adapter`, on `device`.

    Args:
        model: a checkpoint of ``method.checkpoints.CHECKPOINTS`` (hyper, lightning, lcm, turbo, base).
        steps: picks the Hyper / Lightning file (1/2/4/8, 2/4/8); the others accept any count.
        adapter: "faceid", "faceid-plusv2" (also loads CLIP ViT-H/14 as `image_encoder`) or None.
        dtype: float16 loads the fp16 variant files of SDXL base.
        cache_dir: the hub cache folder (default: huggingface_hub's); with HF_HUB_OFFLINE=1 only
            cached files are read.
        vae: "sdxl" (SDXL base's VAE; in float16 it is lifted to float32 for each decode) or
            "fp16-fix" (``madebyollin/sdxl-vae-fp16-fix``: decodes in float16, a lower memory peak
            at the cost of slightly different pixels).
        preview_decoder: also load the tiny autoencoder ``madebyollin/taesdxl`` as
            ``pipe.preview_decoder``, for ``pipe.latents_to_images(latents, preview=True)``.

    The FaceID LoRA stays at 1.0 here: its weight is set per call by
    `FastFaceConfig.faceid_lora_scale`, so the pipeline holds no hidden weight.
    """
    checkpoint = check_model(model)
    check_steps(checkpoint, steps)
    check_adapter(adapter)
    vae_repo = check_vae(vae)
    hub = {"cache_dir": cache_dir, "local_files_only": _offline()}
    try:
        return _load(checkpoint, steps, adapter, device, dtype, hub, vae_repo, preview_decoder)
    except OSError as err:  # diffusers/transformers/huggingface_hub: a file not cached, no network
        where = "HF_HUB_OFFLINE is set and they are not cached" if hub["local_files_only"] else "no network?"
        raise WeightsUnavailable(
            f"the weights of model={model!r} adapter={adapter!r} could not be loaded ({where}): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Download them once "
            "online (unset HF_HUB_OFFLINE), or use --mode tiny / FASTFACE_MODE=tiny to run offline."
        ) from err


def _load(checkpoint, steps, adapter, device, dtype, hub, vae_repo, preview_decoder):
    variant = "fp16" if dtype == torch.float16 else None

    unet = _load_unet(checkpoint, steps, dtype, variant, hub)
    components = {"unet": unet} if unet is not None else {}
    if vae_repo is not None:  # no fp16 variant files there: the one file, cast on load
        components["vae"] = AutoencoderKL.from_pretrained(vae_repo, dtype=dtype, **hub)
    pipe = FastFacePipeline.from_pretrained(SDXL_BASE, dtype=dtype, variant=variant, **components, **hub)
    pipe.to(device)  # before fusing: the LoRA math then runs on the accelerator
    pipe.scheduler = _load_scheduler(checkpoint, pipe.scheduler.config, hub)
    if checkpoint.how == "lora":
        _fuse_lora(pipe, checkpoint, steps, hub)
    # the checkpoint's size, whatever sample_size the UNet config carries
    pipe.default_sample_size = checkpoint.default_size // pipe.vae_scale_factor

    if adapter == "faceid-plusv2":
        encoder = ClipVisionTower.from_pretrained(CLIP_VIT_H, dtype=dtype, **hub).to(device).eval()
        pipe.register_modules(image_encoder=encoder, feature_extractor=clip_image_processor(encoder.config.image_size))
    if adapter is not None:
        # as in tiny_pipeline: the FaceID LoRA holds UNet keys only, and diffusers re-casts the UNet
        # to its own dtype; the notes it logs on both are expected
        with quiet_diffusers():
            load_faceid(pipe, adapter, FACEID_REPO, **hub)
    if preview_decoder:
        decoder = AutoencoderTiny.from_pretrained(PREVIEW_DECODER, dtype=dtype, **hub)
        pipe.preview_decoder = decoder.to(device).eval()
    return pipe.to(device)
