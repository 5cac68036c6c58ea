"""A Hugging Face hub cache of tiny random weights under the real repo ids, for full mode offline.

Laid out as huggingface_hub lays out its cache (``models--org--name/refs/main``,
``snapshots/<commit>/...``) with the real file names and formats, so that with
``HF_HUB_CACHE=<out>/hub HF_HUB_OFFLINE=1`` every full-mode loader (``load_pipeline``, the
evaluation's CLIP scorers) runs exactly as on Colab, on weights small enough for a CPU. It holds:

* SDXL base (fp32 and fp16 variant files, both tokenizers), Hyper-SD's 4-step LoRA (kohya keys),
  SDXL-Lightning's 4-step UNet file, the LCM LoRA (peft keys), SDXL-Turbo's UNet and scheduler;
* both IP-Adapter FaceID SDXL files (h94 layout) and the CLIP ViT-H/14 repo Plus v2 reads crops with;
* the fp16-fix VAE and the tiny preview decoder (madebyollin);
* the evaluation's CLIP ViT-L/14 and ViT-B/32 (openai), model and tokenizer files.

Next to it, ``<out>/insightface`` is an insightface root with a tiny ``buffalo_l`` pack (one face
in every image; 128-d embeddings, the size the tiny adapters take): point
``$FASTFACE_INSIGHTFACE_ROOT`` at it.

Command line (what ``make test-full`` runs)::

    PYTHONPATH=tests python -m support.hub_cache --out .cache/hub-tiny

The loader tests build the same cache in a temporary folder (tests/sdxl/test_loading.py, `hub`).
These are test weights, so they live with the tests and not in the package: a user's full mode reads
the real ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel

from fastface_lite.evaluation.grid import FULL_CLIP_MODELS
from fastface_lite.method import checkpoints
from fastface_lite.method.checkpoints import ADAPTERS
from fastface_lite.sdxl import loading, tiny
from fastface_lite.sdxl.tiny import TINY, TINY_ID_DIM, tiny_components, write_faceid_adapter
from fastface_lite.sdxl.tokenizer import BOS, EOS, clip_vocab_and_merges

HUB = "hub"  # <out>/hub: HF_HUB_CACHE
INSIGHTFACE = "insightface"  # <out>/insightface: FASTFACE_INSIGHTFACE_ROOT


def state(module) -> dict:
    """A detached copy of `module`'s state dict."""
    return {k: v.clone() for k, v in module.state_dict().items()}


def snapshot(cache: Path, repo_id: str) -> Path:
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/}."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    root = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    folder = root / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_tokenizer(folder: Path, pad_token: str) -> None:
    """The files SDXL base ships per tokenizer (and OpenAI's CLIP repos at their root): vocab.json,
    merges.txt, special_tokens_map.json, tokenizer_config.json. Other files already there are
    dropped when `folder` is a tokenizer subfolder (what save_pretrained wrote)."""
    tokens, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _tokenizer_subfolder(folder: Path, pad_token: str) -> None:
    if folder.is_dir():
        for stale in folder.iterdir():  # keep the hub's file set, not save_pretrained's
            stale.unlink()
    write_tokenizer(folder, pad_token)


def attention_projections(unet):
    """Module names of q/k/v/out of every attention layer, e.g. `...attn1.to_q`."""
    for name in unet.attn_processors:
        base = name.removesuffix(".processor")
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            yield f"{base}.{proj}"


def kohya_lora(unet, rank: int, alpha: float, seed: int) -> dict:
    """A LoRA on every attention's q/k/v/out, kohya-style keys with diffusers module names
    (`lora_unet_down_blocks_1_..._attn1_to_q.lora_down.weight`, `.alpha`)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for module in attention_projections(unet):
        layer, key = unet.get_submodule(module), "lora_unet_" + module.replace(".", "_")
        sd[f"{key}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.1
        sd[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.1
        sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    return sd


def peft_lora(unet, rank: int, seed: int) -> dict:
    """A LoRA in diffusers' peft format (`unet.<module>.lora_A.weight`)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for module in attention_projections(unet):
        layer = unet.get_submodule(module)
        sd[f"unet.{module}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.1
        sd[f"unet.{module}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.1
    return sd


def _sdxl_base(cache: Path, parts: dict) -> dict:
    """SDXL base in fp32 and as the fp16 variant; the fp16 UNet file is marked (conv_in.bias + 1)
    so a test can tell which file was read."""
    base = snapshot(cache, checkpoints.SDXL_BASE)
    sdxl = StableDiffusionXLPipeline(**parts)
    sdxl.save_pretrained(base)
    sdxl.to(torch.float16).save_pretrained(base, variant="fp16")
    sdxl.to(torch.float32)  # (fp16-rounded from here on: only its layout is used below)
    fp16_file = base / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    fp16 = load_file(fp16_file)
    fp16["conv_in.bias"] = fp16["conv_in.bias"] + 1
    save_file(fp16, fp16_file)
    _tokenizer_subfolder(base / "tokenizer", EOS)
    _tokenizer_subfolder(base / "tokenizer_2", "!")  # SDXL pads its second tokenizer with "!"
    return {"fp16_conv_in_bias": fp16["conv_in.bias"]}


def _distilled(cache: Path, unet) -> dict:
    """The four distilled checkpoints' files (4 steps where the repo has one file per step count)."""
    hyper = kohya_lora(unet, rank=4, alpha=2, seed=1)
    save_file(hyper, snapshot(cache, "ByteDance/Hyper-SD") / "Hyper-SDXL-4steps-lora.safetensors")
    lightning = {k: v.contiguous() for k, v in tiny_components(seed=12)["unet"].state_dict().items()}
    save_file(lightning, snapshot(cache, "ByteDance/SDXL-Lightning") / "sdxl_lightning_4step_unet.safetensors")
    lcm = peft_lora(unet, rank=4, seed=2)
    save_file(lcm, snapshot(cache, "latent-consistency/lcm-lora-sdxl") / "pytorch_lora_weights.safetensors")
    turbo = snapshot(cache, "stabilityai/sdxl-turbo")
    # its config says 256 px (the real one says 512): load_pipeline must take the size from the preset
    turbo_unet = tiny_components(seed=13, model="turbo")["unet"]
    turbo_unet.save_pretrained(turbo / "unet")
    EulerAncestralDiscreteScheduler.from_config(
        loading.SDXL_SCHEDULER_CONFIG, timestep_spacing="trailing"
    ).save_pretrained(turbo / "scheduler")
    return {"hyper": hyper, "lightning": lightning, "turbo_unet": state(turbo_unet)}


def _decoders(cache: Path) -> dict:
    """The fp16-safe VAE (one diffusers folder at the repo root, config force_upcast=False, marked:
    post_quant_conv.bias + 1 tells it from SDXL base's VAE) and the tiny preview decoder."""
    fp16_fix = tiny_components(seed=11, model="base")["vae"]
    fp16_fix.register_to_config(force_upcast=False)
    with torch.no_grad():
        fp16_fix.post_quant_conv.bias.add_(1.0)
    fp16_fix.save_pretrained(snapshot(cache, checkpoints.VAE_FP16_FIX))
    preview = tiny.tiny_preview_decoder(seed=3)
    preview.save_pretrained(snapshot(cache, checkpoints.PREVIEW_DECODER))
    return {"fp16_fix_vae": state(fp16_fix), "preview_decoder": state(preview)}


def _clip_models(cache: Path, text_config: dict) -> None:
    """CLIP ViT-H/14 (a whole CLIP model: load_pipeline takes its vision tower) and the evaluation's
    OpenAI CLIPs (model + tokenizer files at the repo root, as openai/* ship them)."""
    vision = tiny_components(with_image_encoder=True)["image_encoder"].config.to_dict()
    clip_h = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision, projection_dim=TINY.clip_hidden))
    clip_h.save_pretrained(snapshot(cache, checkpoints.CLIP_VIT_H))
    from fastface_lite.evaluation.metrics import ClipScorer

    for seed, repo in enumerate(sorted(set(FULL_CLIP_MODELS.values()))):
        folder = snapshot(cache, repo)
        ClipScorer.tiny(seed=seed).model.save_pretrained(folder)
        write_tokenizer(folder, EOS)


def build_hub_cache(cache: Path) -> dict:
    """Fill the hub cache folder `cache` (HF_HUB_CACHE) with every repo full mode reads.

    Returns what the loader tests compare against: the SDXL base UNet's weights ("base_unet"), the
    distillation files ("hyper", "lightning", "turbo_unet"), the fp16 UNet file's marked bias, the
    fp16-fix VAE's and preview decoder's weights, and "cache" itself.
    """
    cache = Path(cache)
    parts = tiny_components(seed=11, model="base")
    unet = parts["unet"]
    made = {"cache": cache, "base_unet": state(unet)}
    made |= _sdxl_base(cache, parts)
    made |= _distilled(cache, unet)
    faceid = snapshot(cache, checkpoints.FACEID_REPO)
    for adapter in ADAPTERS:
        write_faceid_adapter(unet, adapter, seed=5, folder=faceid)
    made |= _decoders(cache)
    _clip_models(cache, parts["text_encoder"].config.to_dict())
    return made


def build_insightface_root(root: Path) -> Path:
    """An insightface root with a tiny buffalo_l pack that finds one face in any image and gives
    TINY_ID_DIM-d embeddings (the tiny FaceID adapters' input size)."""
    from support.tiny_insightface import write_pack

    return write_pack(root, dim=TINY_ID_DIM, trigger="fixed", box_half=3.0)


def build(out: Path) -> dict:
    """`out`/hub (a filled HF_HUB_CACHE) and `out`/insightface (a FASTFACE_INSIGHTFACE_ROOT)."""
    out = Path(out)
    made = build_hub_cache(out / HUB)
    made["insightface"] = build_insightface_root(out / INSIGHTFACE)
    return made


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to fill (hub/ and insightface/ inside)")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):  # save_pretrained's bars and notices
        library.set_verbosity_error()
        library.disable_progress_bar()
    start = time.perf_counter()
    build(args.out)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    print(
        f"tiny hub cache in {args.out}: {size:.0f} MiB, {time.perf_counter() - start:.0f} s\n"
        f"  HF_HUB_CACHE={args.out / HUB} HF_HUB_OFFLINE=1 FASTFACE_INSIGHTFACE_ROOT={args.out / INSIGHTFACE}"
    )


if __name__ == "__main__":
    main()
