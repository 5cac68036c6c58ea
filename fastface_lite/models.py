"""Pipelines: the real hub presets (`load_pipeline`) and their tiny offline twin (`tiny_pipeline`).

Both return a `FastFacePipeline` (an SDXL pipeline) with IP-Adapter FaceID loaded through diffusers'
own `load_ip_adapter`, so everything downstream — attention processors, the peft adapter
`faceid_0`, `encoder_hid_proj` — is the same object graph in both modes.

* `load_pipeline` reads the real checkpoints of SPEC §1 from the Hugging Face hub (or its cache).
* `tiny_pipeline` builds an SDXL-shaped pipeline with random weights in a few seconds, offline: the
  real CLIP tokenizer, tiny text encoders / UNet / VAE / CLIP vision tower, and tiny FaceID adapter
  checkpoints written in h94's original file layout, then loaded like the real ones.

On-disk cache (tokenizer files, tiny adapter files): `$FASTFACE_LITE_CACHE`, else
`$XDG_CACHE_HOME/fastface_lite`, else `~/.cache/fastface_lite`. Entries are named by a hash of
what they contain, so a stale entry is never reused and concurrent writers agree.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UNet2DConditionModel,
)
from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from .pipeline import FastFacePipeline
from .tokenizer import bpe_fingerprint, sdxl_tokenizers, write_atomic

__all__ = [
    "ADAPTERS",
    "CLIP_VIT_H",
    "FACEID_REPO",
    "NUM_ID_TOKENS",
    "SDXL_BASE",
    "SDXL_SCHEDULER_CONFIG",
    "MODEL_PRESETS",
    "TINY",
    "TINY_ID_DIM",
    "ModelPreset",
    "TinyDims",
    "adapter_info",
    "cache_root",
    "faceid_state_dict",
    "load_pipeline",
    "make_scheduler",
    "preset_timesteps",
    "tiny_components",
    "tiny_pipeline",
    "tiny_size",
    "write_faceid_adapter",
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
# Tiny SDXL
# ----------------------------------------------------------------------------------------------

TINY_ID_DIM = 128  # dlib's face descriptor size; the real FaceID adapters take 512-d ArcFace


@dataclass(frozen=True)
class TinyDims:
    """Sizes of the tiny twin. Real SDXL in brackets."""

    text_hidden: int = 32  # both text encoders [768, 1280]; cross_attention_dim = 2 * 32 = 64 [2048]
    text_layers: int = 2  # >= 2: SDXL reads the penultimate hidden states [12, 32]
    text_heads: int = 4
    text_projection: int = 32  # pooled text embedding [1280]
    unet_channels: tuple[int, ...] = (32, 64, 128)  # [320, 640, 1280]
    unet_heads: tuple[int, ...] = (2, 2, 4)  # heads per block, 32 per head [5, 10, 20] heads of 64
    transformer_layers: tuple[int, ...] = (1, 1, 2)  # [1, 2, 10]
    layers_per_block: int = 2  # [2]
    time_embed_dim: int = 8  # per add_time_id [256]
    vae_channels: tuple[int, ...] = (8, 16, 32, 32)  # 4 levels: latents are 1/8 of pixels, as in SDXL
    clip_hidden: int = 32  # CLIP vision tower [1280, ViT-H/14]
    clip_layers: int = 2
    clip_heads: int = 4
    clip_image_size: int = 224  # [224]; patch 14 -> 257 tokens, as ViT-H/14
    clip_patch: int = 14
    id_dim: int = TINY_ID_DIM  # [512]
    lora_rank: int = 4  # FaceID LoRA [128]

    @property
    def cross_attention_dim(self) -> int:
        return 2 * self.text_hidden


TINY = TinyDims()


def tiny_size(model: str) -> int:
    """Default tiny image side in pixels: a quarter of the preset's (1024 -> 256, turbo 512 -> 128)."""
    return _check_model(model).default_size // 4


def _text_config(d: TinyDims, **kwargs) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=d.text_hidden,
        intermediate_size=2 * d.text_hidden,
        num_hidden_layers=d.text_layers,
        num_attention_heads=d.text_heads,
        max_position_embeddings=77,
        projection_dim=d.text_projection,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        **kwargs,
    )


def _tiny_unet(d: TinyDims, sample_size: int) -> UNet2DConditionModel:
    """SDXL's block layout: attention in down_blocks.1/2, mid_block, up_blocks.0/1; text_time embeds."""
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=d.unet_channels,
        layers_per_block=d.layers_per_block,
        transformer_layers_per_block=d.transformer_layers,
        attention_head_dim=d.unet_heads,  # diffusers' SDXL quirk: this field holds the head *count*
        cross_attention_dim=d.cross_attention_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=d.time_embed_dim,
        projection_class_embeddings_input_dim=d.text_projection + 6 * d.time_embed_dim,
        norm_num_groups=8,
    )


def _tiny_vae(d: TinyDims, sample_size: int) -> AutoencoderKL:
    n = len(d.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=d.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        scaling_factor=0.13025,  # SDXL VAE's
    )


def _tiny_image_encoder(d: TinyDims) -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=d.clip_hidden,
        intermediate_size=2 * d.clip_hidden,
        num_hidden_layers=d.clip_layers,
        num_attention_heads=d.clip_heads,
        image_size=d.clip_image_size,
        patch_size=d.clip_patch,
        projection_dim=d.clip_hidden,
        hidden_act="gelu",
    )
    return CLIPVisionModelWithProjection(config).eval()


def _seed_for(seed: int, part: str) -> int:
    # one stream per component, so adding or dropping a component never shifts the others' weights
    return zlib.crc32(f"{seed}:{part}".encode())


def _build(seed: int, part: str, make):
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(_seed_for(seed, part))
        return make()


def _tokenizer_folder() -> Path:
    return cache_root() / f"clip-bpe-{bpe_fingerprint()}"


def tiny_components(
    seed: int = 0, model: str = "hyper", dims: TinyDims = TINY, with_image_encoder: bool = False,
    image_size: int | None = None,
) -> dict:
    """The modules of a tiny SDXL pipeline (random weights, deterministic from `seed`).

    Returns the keyword arguments of `StableDiffusionXLPipeline(...)`; with `with_image_encoder` the
    CLIP vision tower and its `CLIPImageProcessor` are filled in (needed by FaceID Plus v2).
    """
    _check_model(model)
    image_size = image_size or tiny_size(model)
    latent = image_size // 2 ** (len(dims.vae_channels) - 1)
    tokenizer, tokenizer_2 = sdxl_tokenizers(_tokenizer_folder())
    parts = {
        "text_encoder": _build(
            seed, "text_encoder", lambda: CLIPTextModel(_text_config(dims, hidden_act="quick_gelu"))
        ),
        "text_encoder_2": _build(
            seed, "text_encoder_2", lambda: CLIPTextModelWithProjection(_text_config(dims, hidden_act="gelu"))
        ),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "unet": _build(seed, "unet", lambda: _tiny_unet(dims, latent)),
        "vae": _build(seed, "vae", lambda: _tiny_vae(dims, image_size)),
        "scheduler": make_scheduler(model),
        "image_encoder": None,
        "feature_extractor": None,
    }
    if with_image_encoder:
        parts["image_encoder"] = _build(seed, "image_encoder", lambda: _tiny_image_encoder(dims))
        parts["feature_extractor"] = _clip_processor(dims.clip_image_size)
    for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
        parts[name].eval()
    return parts


def _clip_processor(size: int) -> CLIPImageProcessor:
    # what diffusers' load_ip_adapter builds for a CLIP tower of this size (CLIP mean/std, bicubic)
    return CLIPImageProcessor(size=size, crop_size=size)


# ----------------------------------------------------------------------------------------------
# Tiny FaceID checkpoints in h94's original layout
# ----------------------------------------------------------------------------------------------


def _attention_layers(unet) -> list[tuple[str, torch.nn.Module]]:
    """(processor name, Attention module) in `unet.attn_processors` order — the order h94's
    checkpoints number their `ip_adapter` keys by (attn1, attn2, attn1, attn2, ...).

    Only the UNet's own layers: once Plus v2 is loaded, its resampler's attentions (registered
    last, under `encoder_hid_proj.`) also show up in `attn_processors`; they carry no adapter keys.
    """
    names = [name for name in unet.attn_processors if not name.startswith("encoder_hid_proj.")]
    return [(name, unet.get_submodule(name.removesuffix(".processor"))) for name in names]


class _Init:
    """Random tensors from one seeded generator, scaled like PyTorch's default Linear init."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * std

    def linear(self, prefix: str, n_out: int, n_in: int, bias: bool = True, gain: float = 1.0) -> dict:
        out = {f"{prefix}.weight": self.randn(n_out, n_in, std=gain / n_in**0.5)}
        if bias:
            out[f"{prefix}.bias"] = self.randn(n_out, std=0.02)
        return out

    def layer_norm(self, prefix: str, n: int) -> dict:
        return {f"{prefix}.weight": 1 + self.randn(n, std=0.02), f"{prefix}.bias": self.randn(n, std=0.02)}


def _faceid_image_proj(init: _Init, id_dim: int, cross_dim: int) -> dict:
    """h94 `MLPProjModel`: Linear(id, 2 id) -> GELU -> Linear(2 id, 4 cross), LayerNorm(cross)."""
    return {
        **init.linear("proj.0", 2 * id_dim, id_dim),
        **init.linear("proj.2", NUM_ID_TOKENS * cross_dim, 2 * id_dim),
        **init.layer_norm("norm", cross_dim),
    }


def _faceid_plus_image_proj(init: _Init, id_dim: int, cross_dim: int, clip_dim: int) -> dict:
    """h94 `ProjPlusModel`: the MLP above plus a 4-layer `FacePerceiverResampler` over CLIP tokens
    (dim = cross_dim, 64 per head, ff mult 4). Shapes (out, in) as in the released file."""
    inner = 64 * max(1, cross_dim // 64)  # heads = cross_dim // 64, as h94 builds it
    sd = _faceid_image_proj(init, id_dim, cross_dim)
    sd.update(init.linear("perceiver_resampler.proj_in", cross_dim, clip_dim))
    sd.update(init.linear("perceiver_resampler.proj_out", cross_dim, cross_dim))
    sd.update(init.layer_norm("perceiver_resampler.norm_out", cross_dim))
    for i in range(4):  # depth 4: diffusers' key conversion is written for exactly 4 layers
        layer = f"perceiver_resampler.layers.{i}"
        sd.update(init.layer_norm(f"{layer}.0.norm1", cross_dim))
        sd.update(init.layer_norm(f"{layer}.0.norm2", cross_dim))
        sd.update(init.linear(f"{layer}.0.to_q", inner, cross_dim, bias=False))
        sd.update(init.linear(f"{layer}.0.to_kv", 2 * inner, cross_dim, bias=False))
        sd.update(init.linear(f"{layer}.0.to_out", cross_dim, inner, bias=False))
        sd.update(init.layer_norm(f"{layer}.1.0", cross_dim))
        sd.update(init.linear(f"{layer}.1.1", 4 * cross_dim, cross_dim, bias=False))
        sd.update(init.linear(f"{layer}.1.3", cross_dim, 4 * cross_dim, bias=False))
    return sd


def _faceid_ip_layers(init: _Init, unet, rank: int) -> dict:
    """`ip_adapter` part: a LoRA on q/k/v/out of *every* attention (key `{i}.to_q_lora.down.weight`,
    i = processor index) and the decoupled ID key/value projections on every attn2 (`{i}.to_k_ip.weight`)."""
    sd = {}
    for i, (name, attn) in enumerate(_attention_layers(unet)):
        for proj, layer in (("to_q", attn.to_q), ("to_k", attn.to_k), ("to_v", attn.to_v), ("to_out", attn.to_out[0])):
            sd[f"{i}.{proj}_lora.down.weight"] = init.randn(rank, layer.in_features, std=1 / layer.in_features**0.5)
            # large enough that the LoRA visibly changes outputs (a zero "up", as at LoRA init, would not)
            sd[f"{i}.{proj}_lora.up.weight"] = init.randn(layer.out_features, rank, std=0.3 / rank**0.5)
        if name.endswith("attn2.processor"):
            hidden = attn.to_q.out_features
            sd.update(init.linear(f"{i}.to_k_ip", hidden, attn.to_k.in_features, bias=False))
            sd.update(init.linear(f"{i}.to_v_ip", hidden, attn.to_v.in_features, bias=False))
    return sd


def faceid_state_dict(unet, adapter: str, seed: int = 0, dims: TinyDims = TINY) -> dict:
    """A random FaceID / FaceID-Plus-v2 checkpoint for `unet`, as h94 lays it out:
    {"image_proj": {...}, "ip_adapter": {...}} (see `_faceid_image_proj`, `_faceid_ip_layers`)."""
    _check_adapter(adapter)
    init = _Init(_seed_for(seed, adapter))
    cross_dim = unet.config.cross_attention_dim
    if adapter == "faceid":
        image_proj = _faceid_image_proj(init, dims.id_dim, cross_dim)
    else:
        image_proj = _faceid_plus_image_proj(init, dims.id_dim, cross_dim, dims.clip_hidden)
    return {"image_proj": image_proj, "ip_adapter": _faceid_ip_layers(init, unet, dims.lora_rank)}


def write_faceid_adapter(unet, adapter: str, seed: int = 0, dims: TinyDims = TINY, folder: Path | None = None) -> Path:
    """Write (once) a tiny h94-layout adapter file for `unet` and return its folder.

    The file has the real name (`ADAPTERS[adapter]`) inside a folder named by a hash of everything
    that determines its bytes (adapter, seed, dims, the UNet's attention layout), so
    `pipe.load_ip_adapter(folder, subfolder=None, weight_name=ADAPTERS[adapter], ...)` loads it.
    """
    _check_adapter(adapter)
    layout = [(n, a.to_q.in_features, a.to_k.in_features, a.to_q.out_features) for n, a in _attention_layers(unet)]
    key = _content_key("faceid-v1", adapter, seed, asdict(dims), unet.config.cross_attention_dim, layout)
    folder = Path(folder) if folder is not None else cache_root() / f"{adapter}-{key}"
    path = folder / ADAPTERS[adapter]
    if not path.is_file():
        buffer = io.BytesIO()
        torch.save(faceid_state_dict(unet, adapter, seed, dims), buffer)
        write_atomic(path, buffer.getvalue())
    return folder


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


# ----------------------------------------------------------------------------------------------
# tiny_pipeline
# ----------------------------------------------------------------------------------------------

_TINY_MEMO: dict[tuple, FastFacePipeline] = {}


def tiny_pipeline(
    adapter: str | None = "faceid-plusv2", seed: int = 0, model: str = "hyper", device: str = "cpu"
) -> FastFacePipeline:
    """A tiny, randomly initialised, SDXL-shaped `FastFacePipeline`, built offline in seconds.

    Same classes as the real thing (tokenizers are the real CLIP BPE); scheduler as `model`'s
    preset; the adapter is a tiny h94-layout checkpoint loaded through `load_ip_adapter`, taking a
    `TINY_ID_DIM` (128) ID embedding, 4 ID tokens. Pictures are noise; the mechanics are real.

    Same `seed` -> bit-identical weights. Each call returns an independent copy (a memo of built
    pipelines makes repeated calls cheap). Default size: `tiny_size(model)` (256 px, turbo 128 px).
    """
    _check_model(model)
    _check_adapter(adapter)
    key = (adapter, seed, model)
    if key not in _TINY_MEMO:
        _TINY_MEMO[key] = _build_tiny_pipeline(adapter, seed, model)
    built = _TINY_MEMO[key]
    # Tokenizers are read-only in use and slow to copy: share them; copy everything else.
    shared = {id(built.tokenizer): built.tokenizer, id(built.tokenizer_2): built.tokenizer_2}
    return copy.deepcopy(built, memo=shared).to(device)


def sized_pipeline(
    dims: TinyDims, adapter: str | None = "faceid-plusv2", seed: int = 0, model: str = "hyper",
    image_size: int | None = None,
) -> FastFacePipeline:
    """Like `tiny_pipeline` but with other sizes (e.g. a mid-size or full-size SDXL UNet shape
    with random weights, for benchmarks). Built fresh each call, not memoised."""
    _check_model(model)
    _check_adapter(adapter)
    return _build_tiny_pipeline(adapter, seed, model, dims, image_size)


def _build_tiny_pipeline(
    adapter: str | None, seed: int, model: str, dims: TinyDims = TINY, image_size: int | None = None
) -> FastFacePipeline:
    # peft draws random LoRA inits while loading (then overwritten): keep the caller's RNG untouched
    with torch.random.fork_rng(devices=[]):
        parts = tiny_components(seed, model, dims, with_image_encoder=adapter == "faceid-plusv2",
                                image_size=image_size)
        pipe = FastFacePipeline(**parts, force_zeros_for_empty_prompt=True)
        if adapter is not None:
            folder = write_faceid_adapter(pipe.unet, adapter, seed, dims)
            with _quiet_diffusers():  # its "no text-encoder LoRA keys" notices are expected here
                _load_faceid(pipe, adapter, str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def _quiet_diffusers():
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
