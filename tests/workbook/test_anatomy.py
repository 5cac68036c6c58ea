"""anatomy.py: the hub-file table against docs/method.md §3, the ID-token steps against the UNet's own
projection, the LoRA layer table, and the hand-computed decoupled attention against diffusers."""

import pytest
import torch
from conftest import random_id_inputs

from fastface_lite.workbook.anatomy import decoupled_attention, hub_files, id_token_parts, lora_layers

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


def files(model, steps=4, adapter="faceid-plusv2"):
    return {(row.component, row.repo, row.file) for row in hub_files(model, steps, adapter)}


@pytest.mark.parametrize(
    "model, steps, expected",
    [
        ("hyper", 4, ("distillation LoRA", "ByteDance/Hyper-SD", "Hyper-SDXL-4steps-lora.safetensors")),
        ("hyper", 1, ("distillation LoRA", "ByteDance/Hyper-SD", "Hyper-SDXL-1step-lora.safetensors")),
        ("lightning", 8, ("unet", "ByteDance/SDXL-Lightning", "sdxl_lightning_8step_unet.safetensors")),
        ("lcm", 4, ("distillation LoRA", "latent-consistency/lcm-lora-sdxl", "pytorch_lora_weights.safetensors")),
        ("turbo", 4, ("unet", "stabilityai/sdxl-turbo", "unet/")),
    ],
)
def test_hub_files_follow_spec_table(model, steps, expected):
    rows = files(model, steps)
    assert expected in rows
    assert ("image_encoder", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "folder/") in rows
    assert ("FaceID adapter", "h94/IP-Adapter-FaceID", "ip-adapter-faceid-plusv2_sdxl.bin") in rows
    assert any(repo == SDXL for _, repo, _ in rows)  # every preset starts from SDXL base


def test_hub_files_scheduler_and_adapters():
    turbo = {r.component: r for r in hub_files("turbo")}
    assert turbo["scheduler"].repo == "stabilityai/sdxl-turbo"  # Turbo's own scheduler config
    assert "trailing" in {r.component: r for r in hub_files("hyper")}["scheduler"].how
    assert not any(r.component == "unet" for r in hub_files("base"))
    plain = files("hyper", adapter="faceid")
    assert ("FaceID adapter", "h94/IP-Adapter-FaceID", "ip-adapter-faceid_sdxl.bin") in plain
    assert not any(c == "image_encoder" for c, _, _ in plain)  # no CLIP for plain FaceID
    assert not any(c in ("image_encoder", "FaceID adapter") for c, _, _ in files("hyper", adapter=None))


@pytest.mark.parametrize("kwargs", [{"model": "hyper", "steps": 3}, {"model": "sd15"}, {"adapter": "plus"}])
def test_hub_files_validate_like_load_pipeline(kwargs):
    with pytest.raises(ValueError):
        hub_files(**kwargs)


def unet_tokens(pipe, inputs, index):
    """The ID tokens as the UNet's encoder_hid_proj computes them for one (negative/positive) half."""
    layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    saved = getattr(layer, "clip_embeds", None)
    try:
        if inputs.clip_embeds is not None:
            layer.clip_embeds = inputs.clip_embeds[index : index + 1]
        with torch.no_grad():
            return pipe.unet.encoder_hid_proj([inputs.image_embeds[0][index : index + 1]])[0][0]
    finally:
        if inputs.clip_embeds is not None:
            layer.clip_embeds = saved


@pytest.mark.parametrize("positive", [True, False])
def test_plus_v2_tokens_are_mlp_plus_resampler_and_match_the_unet(tiny_plus, positive):
    inputs = random_id_inputs(tiny_plus)
    layer = tiny_plus.unet.encoder_hid_proj.image_projection_layers[0]
    before = (layer.clip_embeds, layer.shortcut)
    parts = id_token_parts(tiny_plus, inputs, positive=positive)
    assert (layer.clip_embeds, layer.shortcut) == before  # left as found
    assert parts.mlp.shape == parts.resampler.shape == parts.tokens.shape == (1, 4, 64)
    assert parts.clip_states.shape == (1, 257, 32)
    assert parts.shortcut is True and parts.shortcut_scale == 1.0
    torch.testing.assert_close(parts.tokens, parts.mlp + parts.resampler)
    torch.testing.assert_close(parts.tokens, unet_tokens(tiny_plus, inputs, 1 if positive else 0))
    assert not torch.allclose(parts.resampler, torch.zeros_like(parts.resampler))


def test_plus_without_crop_is_explained(tiny_plus):
    inputs = random_id_inputs(tiny_plus)
    with pytest.raises(ValueError, match="clip_embeds"):
        id_token_parts(tiny_plus, type(inputs)(inputs.image_embeds, None))


def test_faceid_tokens_are_the_mlp_alone(tiny_faceid):
    inputs = random_id_inputs(tiny_faceid)
    parts = id_token_parts(tiny_faceid, inputs)
    assert parts.resampler is None and parts.clip_states is None and parts.shortcut is None
    torch.testing.assert_close(parts.tokens, parts.mlp)
    torch.testing.assert_close(parts.tokens, unet_tokens(tiny_faceid, inputs, 1))


def test_lora_on_every_attention_projection_but_not_the_id_projections(tiny_plus):
    n_attn2 = sum(
        1
        for name in tiny_plus.unet.attn_processors
        if name.endswith("attn2.processor") and not name.startswith("encoder_hid_proj")
    )
    table = lora_layers(tiny_plus.unet)
    projections = {"to_q": n_attn2, "to_k": n_attn2, "to_v": n_attn2, "to_out.0": n_attn2}
    assert table == {"attn1": projections, "attn2": projections}
    assert lora_layers(tiny_plus.unet, adapter_name="other") == {}


@pytest.mark.parametrize("ip_scale", [1.0, 0.5])
def test_decoupled_attention_matches_the_stock_processor(tiny_plus, ip_scale):
    attn = tiny_plus.unet.get_submodule("up_blocks.0.attentions.0.transformer_blocks.0.attn2")
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    text = torch.randn(2, 77, attn.to_k.in_features, generator=g)
    ids = torch.randn(2, 4, attn.to_k.in_features, generator=g)
    result = decoupled_attention(attn, hidden, text, ids, ip_scale=ip_scale)
    saved = attn.processor.scale
    try:
        attn.processor.scale = [ip_scale]
        with torch.no_grad():
            stock = attn(hidden, encoder_hidden_states=(text, [ids[:, None]]))
    finally:
        attn.processor.scale = saved
    torch.testing.assert_close(result.output, stock, atol=1e-5, rtol=1e-5)
    assert result.text.shape == result.id.shape == (2, 16, attn.to_q.out_features)
    assert result.id_probs.shape == (2, attn.heads, 16, 4)
    torch.testing.assert_close(result.id_probs.sum(-1), torch.ones(2, attn.heads, 16))
