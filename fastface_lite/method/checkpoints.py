"""The hub weights FastFace runs on: one table of distilled SDXL checkpoints and one of FaceID
adapters (docs/method.md §2). Pure data: no diffusers here, so the method layer, the evaluation
grid and the CLI can read it without loading a model library.

How each row is turned into a pipeline (schedulers, LoRA fusing, UNet files) lives in
:mod:`fastface_lite.sdxl.loading`; which files it reads, in :func:`fastface_lite.workbook.anatomy.hub_files`.
"""

from __future__ import annotations

from dataclasses import dataclass

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
FACEID_REPO = "h94/IP-Adapter-FaceID"  # the IP-Adapter authors' hub account
CLIP_VIT_H = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # the image encoder FaceID Plus reads crops with
NUM_ID_TOKENS = 4  # both FaceID SDXL adapters inject 4 ID tokens into every attn2

# Decoders for SDXL latents besides SDXL's own VAE (diffusers folders at the repo root).
# "fp16-fix": SDXL's VAE fine-tuned so its activations stay finite in float16; its config sets
# force_upcast=False, so decoding stays in fp16 (SDXL's VAE is lifted to fp32 for the decode, which
# is what pushes a 1024 px run past 15 GiB).
VAE_FP16_FIX = "madebyollin/sdxl-vae-fp16-fix"
# A tiny autoencoder (diffusers AutoencoderTiny) for previews: about 1% of the VAE's parameters,
# same latent space, a softer image.
PREVIEW_DECODER = "madebyollin/taesdxl"
VAES = {"sdxl": None, "fp16-fix": VAE_FP16_FIX}  # load_pipeline's `vae` -> repo (None: SDXL base's own)

# adapter name -> its file in FACEID_REPO
ADAPTERS = {
    "faceid": "ip-adapter-faceid_sdxl.bin",
    "faceid-plusv2": "ip-adapter-faceid-plusv2_sdxl.bin",
}


@dataclass(frozen=True)
class Checkpoint:
    """One distilled SDXL checkpoint on the hub, and how FastFace samples with it.

    Attributes:
        name: the short name used everywhere ("hyper", "lightning", "lcm", "turbo", "base").
        repo: the hub repository.
        how: how the weights enter the SDXL base pipeline: "lora" (load, fuse at 1.0, unload),
            "unet_file" (a full UNet state dict in one safetensors file), "unet_folder" (a diffusers
            UNet in the repo's `unet` subfolder) or "base" (nothing).
        scheduler: the diffusers scheduler class it samples with.
        timestep_spacing: overrides SDXL's "leading"; None keeps the config's own.
        default_size: image side in pixels (square).
        default_guidance: the weight a = b used when no DCG schedule is asked for.
        steps: step counts that have a checkpoint; empty means one checkpoint serves any count.
        file_pattern: the weight file; "{n}" = steps, "{s}" = "s" when steps > 1.
    """

    name: str
    repo: str
    how: str
    scheduler: str
    timestep_spacing: str | None
    default_size: int
    default_guidance: float
    steps: tuple[int, ...] = ()
    file_pattern: str | None = None

    def weight_name(self, steps: int) -> str | None:
        """Checkpoint file name for `steps` sampling steps (None when the repo layout names it)."""
        if self.file_pattern is None:
            return None
        return self.file_pattern.format(n=steps, s="s" if steps > 1 else "")


CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint(
            "hyper",
            "ByteDance/Hyper-SD",
            "lora",
            "DDIMScheduler",
            "trailing",
            1024,
            1.0,
            steps=(1, 2, 4, 8),
            file_pattern="Hyper-SDXL-{n}step{s}-lora.safetensors",
        ),
        Checkpoint(
            "lightning",
            "ByteDance/SDXL-Lightning",
            "unet_file",
            "EulerDiscreteScheduler",
            "trailing",
            1024,
            1.0,
            steps=(2, 4, 8),
            file_pattern="sdxl_lightning_{n}step_unet.safetensors",
        ),
        Checkpoint(
            "lcm",
            "latent-consistency/lcm-lora-sdxl",
            "lora",
            "LCMScheduler",
            None,
            1024,
            1.5,
            file_pattern="pytorch_lora_weights.safetensors",
        ),
        # Turbo ships its own scheduler config (repo subfolder `scheduler`): EulerAncestral, trailing
        Checkpoint(
            "turbo", "stabilityai/sdxl-turbo", "unet_folder", "EulerAncestralDiscreteScheduler", "trailing", 512, 1.0
        ),
        Checkpoint("base", SDXL_BASE, "base", "EulerDiscreteScheduler", None, 1024, 5.0),
    )
}
MODELS = tuple(CHECKPOINTS)


def check_model(model: str) -> Checkpoint:
    """The checkpoint called `model`, or a ValueError listing the valid names."""
    if model not in CHECKPOINTS:
        raise ValueError(f"model={model!r} is not a known checkpoint; use one of {', '.join(MODELS)}.")
    return CHECKPOINTS[model]


def check_steps(checkpoint: Checkpoint, steps: int) -> None:
    """Raise ValueError unless `checkpoint` has weights for `steps` sampling steps."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int.")
    if checkpoint.steps and steps not in checkpoint.steps:
        raise ValueError(
            f"steps={steps} has no {checkpoint.name!r} checkpoint in {checkpoint.repo}; "
            f"use one of {list(checkpoint.steps)} (or another model)."
        )


def check_vae(vae: str) -> str | None:
    """The repo of the VAE called `vae` (None for SDXL base's own), or a ValueError listing the names."""
    if vae not in VAES:
        raise ValueError(f"vae={vae!r} is unknown; use one of {', '.join(map(repr, VAES))}.")
    return VAES[vae]


def check_adapter(adapter: str | None) -> None:
    """Raise ValueError unless `adapter` is a FaceID adapter name (or None for no adapter)."""
    if adapter is not None and adapter not in ADAPTERS:
        raise ValueError(f"adapter={adapter!r} is unknown; use one of {sorted(ADAPTERS)} or None.")
