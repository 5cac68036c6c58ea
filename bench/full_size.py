"""Peak GPU memory and seconds per image of a full-size FastFace pipeline (random weights).

Builds every module at the real SDXL + FaceID Plus v2 sizes (UNet 2.6 B parameters, 3.3 B with the
adapter loaded, SDXL VAE,
CLIP ViT-L and bigG text encoders, ViT-H/14 image encoder, rank-128 FaceID LoRA, 512-d ID) with
random weights straight on the device, then runs 1024 px, 4-step images per variant and reports
`torch.cuda.max_memory_allocated` with and without VAE slicing + tiling. This is what the T4
(15 GiB usable) note in the notebooks rests on. Random weights cost the same time and memory as
real ones of the same shapes.

    python bench/full_size.py --device cuda --dtype float16        # on a GPU
    python bench/full_size.py --small                              # CPU smoke test, shrunken shapes
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

import fastface_lite as ff
from fastface_lite.sdxl.adapter import adapter_id_dim, clip_image_processor, id_inputs, load_faceid
from fastface_lite.sdxl.loading import make_scheduler
from fastface_lite.sdxl.pipeline import FastFacePipeline
from fastface_lite.sdxl.tiny import TinyDims, tokenizer_folder, write_faceid_adapter
from fastface_lite.sdxl.tokenizer import sdxl_tokenizers

# SDXL base 1.0 / h94 FaceID Plus v2 shapes. `--small` divides widths by 8 and depths by 4.
UNET = dict(
    block_out_channels=(320, 640, 1280),
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
VAE = dict(block_out_channels=(128, 256, 512, 512))
TEXT_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)
TEXT_G = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280
)
VISION_H = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, projection_dim=1024
)
ADAPTER = TinyDims(id_dim=512, lora_rank=128, clip_hidden=1280)


def _shrink(cfg: dict) -> dict:
    out = dict(cfg)
    for key in ("block_out_channels", "hidden_size", "intermediate_size", "projection_dim", "cross_attention_dim"):
        if key in out:
            out[key] = tuple(c // 8 for c in out[key]) if isinstance(out[key], tuple) else out[key] // 8
    if "transformer_layers_per_block" in out:
        out["transformer_layers_per_block"] = (1, 1, 2)
    if "num_hidden_layers" in out:
        out["num_hidden_layers"] = max(2, out["num_hidden_layers"] // 4)
    if "num_attention_heads" in out:
        out["num_attention_heads"] = 4
    if "attention_head_dim" in out:
        out["attention_head_dim"] = (1, 2, 4)
    if "projection_class_embeddings_input_dim" in out:
        out["addition_time_embed_dim"] = 32
        out["projection_class_embeddings_input_dim"] = (1280 // 8) + 6 * 32
    return out


def build(device: str, dtype: torch.dtype, small: bool, size: int) -> FastFacePipeline:
    pick = _shrink if small else dict
    unet_cfg, text_l, text_g = pick(UNET), pick(TEXT_L), pick(TEXT_G)
    if small:
        unet_cfg["cross_attention_dim"] = text_l["hidden_size"] + text_g["hidden_size"]
        unet_cfg["projection_class_embeddings_input_dim"] = (
            text_g["projection_dim"] + 6 * unet_cfg["addition_time_embed_dim"]
        )
    text = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    vision = pick(VISION_H)
    with torch.device(device):  # initialise on the device: seconds on a GPU instead of minutes on CPU
        unet = UNet2DConditionModel(
            sample_size=size // 8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            mid_block_type="UNetMidBlock2DCrossAttn",
            layers_per_block=2,
            use_linear_projection=True,
            addition_embed_type="text_time",
            norm_num_groups=32 if not small else 8,
            **unet_cfg,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=size,
            scaling_factor=0.13025,
            norm_num_groups=32 if not small else 8,
            **pick(VAE),
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", **text, **text_l))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_act="gelu", **text, **text_g))
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(image_size=224, patch_size=14, hidden_act="gelu", **vision)
        )
    tokenizer, tokenizer_2 = sdxl_tokenizers(tokenizer_folder())
    pipe = FastFacePipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=make_scheduler("hyper"),
        image_encoder=image_encoder,
        feature_extractor=clip_image_processor(224),
        force_zeros_for_empty_prompt=True,
    )
    adapter_dims = TinyDims(
        id_dim=ADAPTER.id_dim // (8 if small else 1),
        lora_rank=ADAPTER.lora_rank // (8 if small else 1),
        clip_hidden=vision["hidden_size"],
    )
    load_faceid(pipe, "faceid-plusv2", str(write_faceid_adapter(pipe.unet, "faceid-plusv2", 0, adapter_dims)))
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e9


def run(pipe, inputs, cfg, size: int, device: str, output_type: str = "pil") -> tuple[float, float, int]:
    """(seconds, peak GiB, UNet evaluations) of one image (decoded to PIL unless output_type="latent")."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = pipe(
        prompt="a photo of a person reading in a park",
        fastface=cfg,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(0),
        output_type=output_type,
        **inputs.call_kwargs(),
    )
    if device == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return time.perf_counter() - start, peak, out.unet_evaluations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--small", action="store_true", help="shrunken shapes (CPU smoke test)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024; 256 with --small)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    size = args.size or (256 if args.small else 1024)
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    pipe = build(args.device, dtype, args.small, size)
    print(
        f"built in {time.perf_counter() - start:.0f} s; parameters (billions): unet {params(pipe.unet):.3f}, "
        f"vae {params(pipe.vae):.3f}, text {params(pipe.text_encoder) + params(pipe.text_encoder_2):.3f}, "
        f"image encoder {params(pipe.image_encoder):.3f}"
    )
    if args.device == "cuda":
        print(f"weights on the GPU: {torch.cuda.memory_allocated() / 2**30:.2f} GiB ({args.dtype})")
    emb = torch.randn(adapter_id_dim(pipe), generator=torch.Generator().manual_seed(0))
    crop = torch.randint(0, 256, (224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
    inputs = id_inputs(pipe, (emb / emb.norm()).numpy(), crop)
    print(f"{size} px, 4 steps, {args.dtype}, median of {args.reps}")
    print(f"VAE force_upcast (decodes in float32): {pipe.vae.config.force_upcast}")
    print("| variant | setting | UNet evals | s / image | peak GiB |\n|---|---|---|---|---|")
    settings = [
        ("latents only (no decode)", "latent", None),
        ("decoded", "pil", None),
        ("decoded, VAE sliced+tiled", "pil", "vae"),
        ("decoded, model CPU offload", "pil", "offload"),
    ]
    for label, output_type, change in settings:
        if change == "vae":
            pipe.vae.enable_slicing()
            pipe.vae.enable_tiling()
        if change == "offload" and args.device == "cuda":
            pipe.enable_model_cpu_offload()
        for name in ("baseline", "fastface-am2"):
            cfg = ff.FastFaceConfig.preset(name)
            run(pipe, inputs, cfg, size, args.device, output_type)  # warm-up
            results = [run(pipe, inputs, cfg, size, args.device, output_type) for _ in range(args.reps)]
            seconds = statistics.median(r[0] for r in results)
            peak = max(r[1] for r in results)
            print(f"| {name} | {label} | {results[0][2]} | {seconds:.3f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
