"""Look inside a loaded FastFace pipeline: what it is made of, where its weights come from, how an
identity becomes the 4 ID tokens, and which layers the FaceID LoRA touches. For teaching
(notebook 01) and for checking a hub-loaded pipeline by eye.

    hub_files("hyper", steps=4, adapter="faceid-plusv2")   # what load_pipeline reads, per component
    parts = id_token_parts(pipe, inputs)                      # ID embedding -> (n, 4, D) tokens
    lora_layers(pipe.unet)                                    # attn1/attn2 projections under the FaceID LoRA
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from fastface_lite.method.am import attention_probs, merge_heads, split_heads
from fastface_lite.method.checkpoints import (
    ADAPTERS,
    CLIP_VIT_H,
    FACEID_REPO,
    PREVIEW_DECODER,
    SDXL_BASE,
    check_adapter,
    check_model,
    check_steps,
    check_vae,
)
from fastface_lite.sdxl.adapter import projection_layer

__all__ = [
    "DecoupledAttention",
    "HubFile",
    "IDTokenParts",
    "decoupled_attention",
    "hub_files",
    "id_token_parts",
    "lora_layers",
]


def _to_module(module: torch.nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` on the device and in the dtype of `module`'s weights.

    These helpers call UNet submodules directly, past the hooks of model CPU offload, which move
    the whole UNet (and its inputs) to the GPU only when ``unet.forward`` runs: the submodule's
    weights may then rest on the CPU while inputs built for the pipeline sit on the GPU. Computing
    where the weights are works in every case, offloaded or not.
    """
    weight = next(module.parameters())
    return tensor.to(device=weight.device, dtype=weight.dtype)


@dataclass(frozen=True)
class HubFile:
    """One thing `load_pipeline` reads from the Hugging Face hub."""

    component: str  # what it becomes in the pipeline
    repo: str
    file: str  # a file name, or "folder/" for a diffusers/transformers folder
    how: str  # how it enters the pipeline


def hub_files(
    model: str = "hyper",
    steps: int = 4,
    adapter: str | None = "faceid-plusv2",
    vae: str = "sdxl",
    preview_decoder: bool = False,
) -> list[HubFile]:
    """What :func:`fastface_lite.sdxl.loading.load_pipeline` reads for these arguments, in load order.

    Nothing is downloaded; the arguments are validated as `load_pipeline` validates them.
    """
    checkpoint = check_model(model)
    check_steps(checkpoint, steps)
    check_adapter(adapter)
    vae_repo = check_vae(vae)
    rows = []
    if checkpoint.how == "unet_folder":
        rows.append(HubFile("unet", checkpoint.repo, "unet/", "replaces SDXL's UNet"))
    elif checkpoint.how == "unet_file":
        rows.append(
            HubFile(
                "unet",
                checkpoint.repo,
                checkpoint.weight_name(steps),
                "full UNet state dict, loaded into SDXL's UNet config",
            )
        )
    if vae_repo is not None:
        rows.append(HubFile("vae", vae_repo, "folder/", "AutoencoderKL that decodes in fp16 (replaces SDXL's VAE)"))
    base_parts = "text encoders, tokenizers" + (", VAE" if vae_repo is None else "")
    base_parts += ", UNet" if checkpoint.how in ("lora", "base") else ""
    rows.append(HubFile(base_parts, SDXL_BASE, "*/ (fp16 variant on GPU)", "StableDiffusionXLPipeline layout"))
    if checkpoint.how == "unet_folder":
        rows.append(
            HubFile("scheduler", checkpoint.repo, "scheduler/", f"{checkpoint.scheduler}, the repo's own config")
        )
    else:
        spacing = f", timestep_spacing={checkpoint.timestep_spacing!r}" if checkpoint.timestep_spacing else ""
        rows.append(
            HubFile("scheduler", SDXL_BASE, "scheduler/", f"{checkpoint.scheduler} from SDXL's config{spacing}")
        )
    if checkpoint.how == "lora":
        rows.append(
            HubFile(
                "distillation LoRA",
                checkpoint.repo,
                checkpoint.weight_name(steps),
                "fused into the UNet at 1.0, then unloaded",
            )
        )
    if adapter == "faceid-plusv2":
        rows.append(HubFile("image_encoder", CLIP_VIT_H, "folder/", "CLIPVisionModelWithProjection (ViT-H/14)"))
    if adapter is not None:
        rows.append(
            HubFile(
                "FaceID adapter",
                FACEID_REPO,
                ADAPTERS[adapter],
                "load_ip_adapter: ID projection, to_k_ip/to_v_ip, LoRA 'faceid_0'",
            )
        )
    if preview_decoder:
        rows.append(
            HubFile("preview_decoder", PREVIEW_DECODER, "folder/", "AutoencoderTiny, latents_to_images(preview=True)")
        )
    return rows


@dataclass(frozen=True)
class IDTokenParts:
    """How the FaceID projection turns one identity into the ID tokens every attn2 attends to.

    Attributes:
        mlp: (n, T, D) the ID embedding through the MLP, reshaped to T tokens, LayerNorm'd.
        resampler: (n, T, D) Plus only: the perceiver resampler's output, the MLP tokens as its
            queries attending over the CLIP hidden states (before the shortcut); None for FaceID.
        tokens: (n, T, D) what the UNet uses: ``mlp + shortcut_scale * resampler`` for Plus v2
            (shortcut on), ``resampler`` for Plus v1, ``mlp`` for FaceID.
        clip_states: (n, S, D_clip) Plus only: the CLIP hidden states read (S = 257 for ViT-H/14).
        shortcut: Plus only: whether the v2 shortcut is on; None for FaceID.
        shortcut_scale: Plus only.
    """

    mlp: torch.Tensor
    resampler: torch.Tensor | None
    tokens: torch.Tensor
    clip_states: torch.Tensor | None = None
    shortcut: bool | None = None
    shortcut_scale: float | None = None


@torch.no_grad()
def id_token_parts(pipe, inputs, positive: bool = True) -> IDTokenParts:
    """Run the pipeline's FaceID projection on `inputs` (an :class:`~fastface_lite.sdxl.adapter.IDInputs`)
    step by step.

    positive: the identity (True) or the "no ID" input (False: zero embedding, CLIP of a zero image).
    The projection layer is left as found (its `clip_embeds` and `shortcut` are restored).
    """
    layer = projection_layer(pipe)
    index = 1 if positive else 0
    embedding = _to_module(layer, inputs.image_embeds[0][index])  # (n, D_id)
    if not hasattr(layer, "clip_embeds"):  # IPAdapterFaceIDImageProjection
        dim = layer.cross_attention_dim
        mlp = layer.norm(layer.ff(embedding).reshape(-1, layer.num_tokens, dim))
        return IDTokenParts(mlp=mlp, resampler=None, tokens=layer(embedding))
    if inputs.clip_embeds is None:
        raise ValueError("FaceID Plus needs inputs with clip_embeds (build them with id_inputs(pipe, embedding, crop))")
    clip_states = _to_module(layer, inputs.clip_embeds[index : index + 1])  # (1, n, S, D_clip), as the pipeline sets it
    saved = layer.clip_embeds, layer.shortcut
    try:
        layer.clip_embeds = clip_states
        mlp = layer.norm(layer.proj(embedding).reshape(-1, layer.num_tokens, layer.embed_dim))
        layer.shortcut = False
        resampler = layer(embedding)
        layer.shortcut = saved[1]
        tokens = layer(embedding)
    finally:
        layer.clip_embeds, layer.shortcut = saved
    return IDTokenParts(
        mlp=mlp,
        resampler=resampler,
        tokens=tokens,
        clip_states=clip_states[0],
        shortcut=bool(saved[1]),
        shortcut_scale=float(layer.shortcut_scale),
    )


def lora_layers(unet, adapter_name: str = "faceid_0") -> dict[str, dict[str, int]]:
    """Which linear layers carry the peft LoRA `adapter_name`: {"attn1": {"to_q": count, ...}, "attn2": {...}}.

    Counts are over the UNet's attention layers; projections without the LoRA are absent (the
    adapter's own `to_k_ip`/`to_v_ip` never carry it). Empty when the UNet has no such LoRA.
    """
    counts: Counter = Counter()
    for name, module in unet.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter_name not in lora_a:
            continue
        parts = name.split(".")
        attention = next((p for p in parts if p.startswith("attn")), None)
        if attention is None:
            counts[("other", name)] += 1
            continue
        projection = ".".join(parts[parts.index(attention) + 1 :])
        counts[(attention, projection)] += 1
    table: dict[str, dict[str, int]] = {}
    for (attention, projection), n in sorted(counts.items()):
        table.setdefault(attention, {})[projection] = n
    return table


@dataclass(frozen=True)
class DecoupledAttention:
    """The two halves of one IP-Adapter cross-attention (``attn2``), heads merged.

    Attributes:
        text: (B, N, C) softmax(Q K_text^T / sqrt(d)) V_text, K/V = to_k/to_v of the 77 text states.
        id: (B, N, C) softmax(Q K_ip^T / sqrt(d)) V_ip, K/V = to_k_ip/to_v_ip of the T ID tokens.
        id_probs: (B, heads, N, T) the ID-token attention probabilities (what AM rewrites).
        output: (B, N, C) to_out(text + ip_scale * id): the layer's result.
    """

    text: torch.Tensor
    id: torch.Tensor
    id_probs: torch.Tensor
    output: torch.Tensor


@torch.no_grad()
def decoupled_attention(
    attn, hidden_states, text_states, id_tokens, ip_scale: float = 1.0, adapter: int = 0
) -> DecoupledAttention:
    """Compute an IP-Adapter ``attn2`` by hand, as diffusers' ``IPAdapterAttnProcessor2_0`` does
    without masks: one query, two key/value sets, outputs added.

    Args:
        attn: a diffusers ``Attention`` whose processor holds ``to_k_ip``/``to_v_ip``.
        hidden_states: (B, N, C) image features (the queries).
        text_states: (B, L, D) prompt embeddings; id_tokens: (B, T, D) ID tokens of adapter `adapter`.
    """
    processor = attn.processor
    heads = attn.heads
    hidden_states, text_states, id_tokens = (_to_module(attn, x) for x in (hidden_states, text_states, id_tokens))

    query = split_heads(attn.to_q(hidden_states), heads)
    text = merge_heads(
        attention_probs(query, split_heads(attn.to_k(text_states), heads)) @ split_heads(attn.to_v(text_states), heads)
    )
    probs = attention_probs(query, split_heads(processor.to_k_ip[adapter](id_tokens), heads))
    ident = merge_heads(probs @ split_heads(processor.to_v_ip[adapter](id_tokens), heads))
    output = attn.to_out[1](attn.to_out[0](text + ip_scale * ident)) / attn.rescale_output_factor
    return DecoupledAttention(text=text, id=ident, id_probs=probs, output=output)
