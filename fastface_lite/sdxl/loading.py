"""Pipelines: the real hub presets (`load_pipeline`) and their tiny offline twin (`tiny_pipeline`).

Both return a `FastFacePipeline` (an SDXL pipeline) with IP-Adapter FaceID loaded through diffusers'
own `load_ip_adapter`, so everything downstream — attention processors, the peft adapter
`faceid_0`, `encoder_hid_proj` — is the same object graph in both modes.

* `load_pipeline` (here) reads the real checkpoints of SPEC §1 from the Hugging Face hub (or its cache).
* `tiny_pipeline` (in `tiny.py`) builds the offline twin with random weights.
"""
from __future__ import annotations

import os

import torch
from diffusers import (
    UNet2DConditionModel,
)
from transformers import (
    CLIPVisionModelWithProjection,
)

from fastface_lite.sdxl.pipeline import FastFacePipeline

from fastface_lite.sdxl.checkpoints import (  # noqa: F401 (re-exported: one import place for model loading)
    ADAPTERS,
    CLIP_VIT_H,
    FACEID_REPO,
    MODEL_PRESETS,
    NUM_ID_TOKENS,
    SDXL_BASE,
    SDXL_SCHEDULER_CONFIG,
    _SCHEDULERS,
    ModelPreset,
    _check_adapter,
    _check_model,
    _check_steps,
    _load_faceid,
    adapter_info,
    cache_root,
    make_scheduler,
    preset_timesteps,
)
from fastface_lite.sdxl.tiny import (  # noqa: F401
    SDXL_UNET_DIMS,
    TINY,
    TINY_ID_DIM,
    TinyDims,
    _clip_processor,
    faceid_state_dict,
    sized_pipeline,
    tiny_components,
    tiny_pipeline,
    tiny_size,
    write_faceid_adapter,
)

# ----------------------------------------------------------------------------------------------
# load_pipeline: the real checkpoints
# ----------------------------------------------------------------------------------------------


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; honour a later change of the env var too
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _load_unet(preset: ModelPreset, steps: int, dtype, variant, hub: dict) -> UNet2DConditionModel | None:
    """The replacement UNet of "unet_file" / "unet_folder" presets (None for the others)."""
    if preset.how == "unet_folder":
        return UNet2DConditionModel.from_pretrained(
            preset.repo, subfolder="unet", torch_dtype=dtype, variant=variant, **hub
        )
    if preset.how == "unet_file":
        from accelerate import init_empty_weights
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        config = UNet2DConditionModel.load_config(SDXL_BASE, subfolder="unet", **hub)
        with init_empty_weights():  # no throw-away fp32 init of 2.6B parameters
            unet = UNet2DConditionModel.from_config(config)
        path = hf_hub_download(preset.repo, preset.weight_name(steps), **hub)
        # strict: a layout mismatch is an error, not silent noise
        unet.load_state_dict(load_file(path), strict=True, assign=True)
        return unet.to(dtype).eval()
    return None


def _fuse_lora(pipe: FastFacePipeline, preset: ModelPreset, steps: int, hub: dict) -> None:
    """Fuse the distillation LoRA into the UNet at 1.0, then drop the adapter, so only the FaceID
    LoRA (`faceid_0`) is a live peft adapter afterwards."""
    pipe.load_lora_weights(preset.repo, weight_name=preset.weight_name(steps), adapter_name=preset.name, **hub)
    pipe.fuse_lora(lora_scale=1.0, adapter_names=[preset.name])
    pipe.unload_lora_weights()


def _load_scheduler(preset: ModelPreset, base_config: dict, hub: dict):
    if preset.how == "unet_folder":  # Turbo ships its own scheduler config
        return _SCHEDULERS[preset.scheduler].from_pretrained(preset.repo, subfolder="scheduler", **hub)
    return make_scheduler(preset.name, base_config)


def load_pipeline(
    model: str = "hyper",
    steps: int = 4,
    adapter: str | None = "faceid-plusv2",
    device: str = "cuda",
    dtype: torch.dtype = torch.float16,
    cache_dir: str | os.PathLike | None = None,
) -> FastFacePipeline:
    """The real SPEC §1 preset `model` for `steps` steps, with the FaceID `adapter`, on `device`.

    model: one of MODEL_PRESETS (hyper, lightning, lcm, turbo, base). steps: picks the Hyper /
    Lightning checkpoint (1/2/4/8, 2/4/8); other presets accept any count. adapter: "faceid",
    "faceid-plusv2" (also loads CLIP ViT-H/14 as `image_encoder`) or None. dtype float16 loads the
    fp16 variant files of SDXL base. The FaceID LoRA stays at 1.0 here: its weight is set per call by
    `FastFaceConfig.faceid_lora_scale`, so the pipeline holds no hidden weight. cache_dir: hub cache folder (default: huggingface_hub's); with HF_HUB_OFFLINE=1
    only cached files are read.
    """
    preset = _check_model(model)
    _check_steps(preset, steps)
    _check_adapter(adapter)
    hub = {"cache_dir": cache_dir, "local_files_only": _offline()}
    variant = "fp16" if dtype == torch.float16 else None

    unet = _load_unet(preset, steps, dtype, variant, hub)
    components = {"unet": unet} if unet is not None else {}
    pipe = FastFacePipeline.from_pretrained(SDXL_BASE, torch_dtype=dtype, variant=variant, **components, **hub)
    pipe.to(device)  # before fusing: the LoRA math then runs on the accelerator
    pipe.scheduler = _load_scheduler(preset, pipe.scheduler.config, hub)
    if preset.how == "lora":
        _fuse_lora(pipe, preset, steps, hub)
    # the preset's size, whatever sample_size the UNet config carries
    pipe.default_sample_size = preset.default_size // pipe.vae_scale_factor

    if adapter == "faceid-plusv2":
        encoder = CLIPVisionModelWithProjection.from_pretrained(CLIP_VIT_H, dtype=dtype, **hub).to(device).eval()
        pipe.register_modules(image_encoder=encoder, feature_extractor=_clip_processor(encoder.config.image_size))
    if adapter is not None:
        _load_faceid(pipe, adapter, FACEID_REPO, **hub)
    return pipe.to(device)

