"""Tiny offline twins of the SDXL + FaceID pipelines (random weights, built in seconds).

`tiny_pipeline` builds an SDXL-shaped pipeline offline: the real CLIP tokenizer, tiny text encoders /
UNet / VAE / CLIP vision tower, and tiny FaceID adapter checkpoints written in h94's original file
layout, then loaded through diffusers' `load_ip_adapter` like the real ones. `sized_pipeline` does
the same at other sizes (benchmarks).
"""

from __future__ import annotations

import copy
import io
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from fastface_lite.method.checkpoints import ADAPTERS, NUM_ID_TOKENS, check_adapter, check_model
from fastface_lite.sdxl.adapter import clip_image_processor, load_faceid
from fastface_lite.sdxl.cache import cache_root, content_key, write_atomic
from fastface_lite.sdxl.loading import make_scheduler, quiet_diffusers
from fastface_lite.sdxl.pipeline import FastFacePipeline
from fastface_lite.sdxl.tokenizer import bpe_fingerprint, sdxl_tokenizers

__all__ = [
    "TINY",
    "TINY_ID_DIM",
    "TinyDims",
    "faceid_state_dict",
    "sized_pipeline",
    "tiny_components",
    "tiny_pipeline",
    "tiny_size",
    "tokenizer_folder",
    "write_faceid_adapter",
]

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
# TinyDims overrides that give SDXL's own UNet shape (2.6 B parameters, cross_attention_dim 2048),
# with the other modules kept small: for GPU benchmarks of the UNet loop with random weights.
SDXL_UNET_DIMS = dict(
    unet_channels=(320, 640, 1280),
    unet_heads=(5, 10, 20),
    transformer_layers=(1, 2, 10),
    text_hidden=1024,
    text_projection=1280,
    time_embed_dim=256,
)


def tiny_size(model: str) -> int:
    """Default tiny image side in pixels: a quarter of the preset's (1024 -> 256, turbo 512 -> 128)."""
    return check_model(model).default_size // 4


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


def tiny_preview_decoder(seed: int = 0, dims: TinyDims = TINY) -> AutoencoderTiny:
    """A tiny twin of ``madebyollin/taesdxl`` (diffusers AutoencoderTiny, random weights): same
    classes and latent layout (4 channels, 1/8 of the pixels), one block per level."""
    n = len(dims.vae_channels)  # n levels: n - 1 doublings, as in the tiny VAE
    return _build(
        seed,
        "preview_decoder",
        lambda: AutoencoderTiny(
            encoder_block_out_channels=(8,) * n,
            decoder_block_out_channels=(8,) * n,
            num_encoder_blocks=(1,) * n,
            num_decoder_blocks=(1,) * n,
            latent_channels=4,
        ).eval(),
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


def tokenizer_folder() -> Path:
    """The cache folder of the real CLIP tokenizer files, rebuilt from the BPE list offline."""
    return cache_root() / f"clip-bpe-{bpe_fingerprint()}"


def tiny_components(
    seed: int = 0,
    model: str = "hyper",
    dims: TinyDims = TINY,
    with_image_encoder: bool = False,
    image_size: int | None = None,
) -> dict:
    """The modules of a tiny SDXL pipeline (random weights, deterministic from `seed`).

    Returns the keyword arguments of `StableDiffusionXLPipeline(...)`; with `with_image_encoder` the
    CLIP vision tower and its `CLIPImageProcessorPil` are filled in (needed by FaceID Plus v2).
    """
    check_model(model)
    image_size = image_size or tiny_size(model)
    latent = image_size // 2 ** (len(dims.vae_channels) - 1)
    tokenizer, tokenizer_2 = sdxl_tokenizers(tokenizer_folder())
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
        parts["feature_extractor"] = clip_image_processor(dims.clip_image_size)
    for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
        parts[name].eval()
    return parts


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
    check_adapter(adapter)
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
    check_adapter(adapter)
    layout = [(n, a.to_q.in_features, a.to_k.in_features, a.to_q.out_features) for n, a in _attention_layers(unet)]
    key = content_key("faceid-v1", adapter, seed, asdict(dims), unet.config.cross_attention_dim, layout)
    folder = Path(folder) if folder is not None else cache_root() / f"{adapter}-{key}"
    path = folder / ADAPTERS[adapter]
    if not path.is_file():
        buffer = io.BytesIO()
        torch.save(faceid_state_dict(unet, adapter, seed, dims), buffer)
        write_atomic(path, buffer.getvalue())
    return folder


# ----------------------------------------------------------------------------------------------
# tiny_pipeline
# ----------------------------------------------------------------------------------------------

_TINY_MEMO: dict[tuple, FastFacePipeline] = {}


def tiny_pipeline(
    adapter: str | None = "faceid-plusv2",
    seed: int = 0,
    model: str = "hyper",
    device: str = "cpu",
    preview_decoder: bool = False,
) -> FastFacePipeline:
    """A tiny, randomly initialised, SDXL-shaped `FastFacePipeline`, built offline in seconds.

    Same classes as the real thing (tokenizers are the real CLIP BPE); scheduler as `model`'s
    preset; the adapter is a tiny h94-layout checkpoint loaded through `load_ip_adapter`, taking a
    `TINY_ID_DIM` (128) ID embedding, 4 ID tokens. Pictures are noise; the mechanics are real.

    Same `seed` -> bit-identical weights. Each call returns an independent copy (a memo of built
    pipelines makes repeated calls cheap). Default size: `tiny_size(model)` (256 px, turbo 128 px).
    `preview_decoder`: also set `pipe.preview_decoder` to :func:`tiny_preview_decoder`, as
    `load_pipeline(preview_decoder=True)` does with the real one.
    """
    check_model(model)
    check_adapter(adapter)
    key = (adapter, seed, model)
    if key not in _TINY_MEMO:
        _TINY_MEMO[key] = _build_tiny_pipeline(adapter, seed, model)
    built = _TINY_MEMO[key]
    # Tokenizers are read-only in use and slow to copy: share them; copy everything else.
    shared = {id(built.tokenizer): built.tokenizer, id(built.tokenizer_2): built.tokenizer_2}
    pipe = copy.deepcopy(built, memo=shared).to(device)
    if preview_decoder:
        pipe.preview_decoder = tiny_preview_decoder(seed).to(device)
    return pipe


def sized_pipeline(
    dims: TinyDims,
    adapter: str | None = "faceid-plusv2",
    seed: int = 0,
    model: str = "hyper",
    image_size: int | None = None,
) -> FastFacePipeline:
    """Like `tiny_pipeline` but with other sizes (e.g. a mid-size or full-size SDXL UNet shape
    with random weights, for benchmarks). Built fresh each call, not memoised."""
    check_model(model)
    check_adapter(adapter)
    return _build_tiny_pipeline(adapter, seed, model, dims, image_size)


def _build_tiny_pipeline(
    adapter: str | None, seed: int, model: str, dims: TinyDims = TINY, image_size: int | None = None
) -> FastFacePipeline:
    # peft draws random LoRA inits while loading (then overwritten): keep the caller's RNG untouched
    with torch.random.fork_rng(devices=[]):
        parts = tiny_components(seed, model, dims, with_image_encoder=adapter == "faceid-plusv2", image_size=image_size)
        pipe = FastFacePipeline(**parts, force_zeros_for_empty_prompt=True)
        if adapter is not None:
            folder = write_faceid_adapter(pipe.unet, adapter, seed, dims)
            with quiet_diffusers():  # its "no text-encoder LoRA keys" notices are expected here
                load_faceid(pipe, adapter, str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe
