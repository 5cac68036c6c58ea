"""AM transforms against docs/method.md §7 formulas written out independently in the test."""

import math

import pytest
import torch

import fastface_lite as ff
from fastface_lite.method import am as am
from fastface_lite.method.am_config import PartConstants

C = PartConstants(pow=1.3, scale=1.55, softmask_k=12.5, quantile=0.6)


def probs(seed=0, shape=(3, 2, 16, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).mul(2).softmax(-1)


def qkv(seed=0, b=3, h=2, n=16, t=4, d=8):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, h, n, d, generator=g),
        torch.randn(b, h, t, d, generator=g),
        torch.randn(b, h, t, d, generator=g),
    )


# -- hand versions: loops over tokens, explicit formulas --------------------------------------------
def hand_norm(x):
    out = torch.empty_like(x)
    for tok in range(x.shape[-1]):
        col = x[..., tok]
        out[..., tok] = (col - col.min()) / (col.max() - col.min())
    return out


def hand_quantile(x, q):  # per (b, h, token) over positions, linear interpolation
    out = torch.empty(x.shape[0], x.shape[1], 1, x.shape[3])
    for b in range(x.shape[0]):
        for h in range(x.shape[1]):
            for t in range(x.shape[3]):
                v = sorted(x[b, h, :, t].tolist())
                pos = q * (len(v) - 1)
                lo = math.floor(pos)
                hi = min(lo + 1, len(v) - 1)
                out[b, h, 0, t] = v[lo] + (pos - lo) * (v[hi] - v[lo])
    return out


def test_known_numbers():
    a = torch.tensor([0.25, 0.5, 0.0, 1.0]).view(1, 1, 4, 1)
    torch.testing.assert_close(am.transform_pow(a, C), a**1.3)
    assert am.transform_pow(a, C)[0, 0, 1, 0].item() == pytest.approx(0.5**1.3)
    big = torch.tensor([2.0, 8.0]).view(1, 1, 2, 1)
    assert am.transform_scale(big, C).flatten().tolist() == pytest.approx([3.1, 10.0])  # clamped at 10
    # softmask of a map whose normalised values are 0, 0.5, 1: sigmoid(-6.25), 0.5, sigmoid(6.25)
    s = am.transform_softmask(torch.tensor([0.1, 0.2, 0.3]).view(1, 1, 3, 1), C).flatten()
    lo, hi = 1 / (1 + math.exp(6.25)), 1 / (1 + math.exp(-6.25))
    assert s.tolist() == pytest.approx([0.0, (0.5 - lo) / (hi - lo), 1.0], abs=1e-6)


def test_minmax_norm_is_joint_over_batch_heads_positions_per_token():
    x = probs()
    torch.testing.assert_close(am.minmax_norm(x), hand_norm(x))


def test_spatial_quantile_matches_definition_and_torch():
    x = probs(1)
    for q in (0.6, 0.65, 1.0, 0.0):
        torch.testing.assert_close(am.spatial_quantile(x, q), hand_quantile(x, q), rtol=0, atol=1e-7)
        torch.testing.assert_close(am.spatial_quantile(x, q), torch.quantile(x, q, dim=-2, keepdim=True))


def test_softmask_and_adaptive_softmask_match_spec():
    x = probs(2)
    k = C.softmask_k
    torch.testing.assert_close(am.transform_softmask(x, C), hand_norm(torch.sigmoid(k * (hand_norm(x) - 0.5))))
    q = hand_quantile(x, C.quantile).clamp_min(1e-6)
    # q of the raw probabilities, subtracted from the normalised map (reference behaviour)
    torch.testing.assert_close(
        am.transform_adaptive_softmask(x, C), hand_norm(torch.sigmoid(k * (hand_norm(x) - q))), rtol=0, atol=1e-6
    )


def test_chain_order_pow_then_scale():
    x = probs(3)
    out = am.manipulate(x, (0, 1, 2, 3), ("pow", "scale"), C)
    torch.testing.assert_close(out, torch.clamp(x**1.3 * 1.55, max=10))
    other = am.manipulate(x, (0, 1, 2, 3), ("scale", "pow"), C)
    assert not torch.allclose(out, other)


def test_only_target_tokens_change_and_rows_are_not_renormalised():
    x = probs(4)
    out = am.manipulate(x, (1, 3), ("scale",), C)
    torch.testing.assert_close(out[..., [0, 2]], x[..., [0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(out[..., [1, 3]], x[..., [1, 3]] * 1.55)
    assert not torch.allclose(out.sum(-1), torch.ones(out.shape[:-1]))


def test_inverse_token0():
    x = probs(5)
    out = am.manipulate(x, (0, 1, 2, 3), ("pow", "scale"), C, invert_token0=True)
    t0 = torch.clamp((1 - x[..., 0]) ** 1.3 * 1.55, max=10)
    expected0 = t0.amax(dim=-1, keepdim=True) - t0  # max over positions per batch and head
    torch.testing.assert_close(out[..., 0], expected0)
    torch.testing.assert_close(out[..., 1:], torch.clamp(x[..., 1:] ** 1.3 * 1.55, max=10))
    # token 0 not targeted: nothing is inverted
    partial = am.manipulate(x, (1, 2), ("scale",), C, invert_token0=True)
    torch.testing.assert_close(partial[..., 0], x[..., 0], rtol=0, atol=0)


def test_ip_attention_plain_where_inactive():
    q, k, v = qkv()
    cfg = ff.FastFaceConfig.preset("am1").attention
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(am.ip_attention(q, k, v, "mid", 0, cfg), expected)  # mid not targeted
    torch.testing.assert_close(am.ip_attention(q, k, v, "down", 0, ff.AttentionConfig()), expected)


def test_ip_attention_am1_by_hand():
    q, k, v = qkv(1)
    cfg = ff.FastFaceConfig.preset("am1").attention
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    for part, p, s in (("down", 1.3, 1.55), ("up", 1.3, 1.45)):
        out = am.ip_attention(q, k, v, part, 2, cfg)
        torch.testing.assert_close(out, torch.clamp(a**p * s, max=10) @ v, rtol=1e-5, atol=1e-6)


def hand_adain(x, ref):
    return (x - x.mean(-1, keepdim=True)) * (ref.std(-1, keepdim=True) / (x.std(-1, keepdim=True) + 1e-6)) + ref.mean(
        -1, keepdim=True
    )


def test_ip_attention_fastface_am2_by_hand():
    q, k, v = qkv(2)
    cfg = ff.FastFaceConfig.preset("fastface-am2").attention
    step = 1  # schedule: k = 5, qa = 0.65, s = 1.55
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    t = a.clone()
    t[..., 0] = 1 - t[..., 0]
    qv = hand_quantile(t, 0.65).clamp_min(1e-6)
    t = hand_norm(torch.sigmoid(5.0 * (hand_norm(t) - qv)))
    t = torch.clamp(t * 1.55, max=10)
    t[..., 0] = t[..., 0].amax(-1, keepdim=True) - t[..., 0]
    w = 0.7
    a2 = w * t + (1 - w) * hand_adain(t, a)
    h = a2 @ v
    h = w * h + (1 - w) * hand_adain(h, a @ v)
    torch.testing.assert_close(am.ip_attention(q, k, v, "up", step, cfg), h, rtol=1e-5, atol=1e-5)


def test_am2_without_adain_and_at_step0_uses_step0_schedule():
    q, k, v = qkv(3)
    cfg = ff.FastFaceConfig.preset("am2").attention
    res = am.ip_attention_maps(q, k, v, "down", 0, cfg)
    t = res.raw.clone()
    t[..., 0] = 1 - t[..., 0]
    t = hand_norm(torch.sigmoid(7.5 * (hand_norm(t) - hand_quantile(t, 0.65).clamp_min(1e-6))))
    t = torch.clamp(t * 1.0, max=10)
    t[..., 0] = t[..., 0].amax(-1, keepdim=True) - t[..., 0]
    torch.testing.assert_close(res.used, t, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.output, t @ v, rtol=1e-5, atol=1e-6)


def test_softmask_couples_branches_but_pow_scale_do_not():
    q, k, v = qkv(4)
    for preset, coupled in (("am1", False), ("am2", True)):
        cfg = ff.FastFaceConfig.preset(preset).attention
        full = am.ip_attention(q, k, v, "down", 1, cfg)
        alone = am.ip_attention(q[2:], k[2:], v[2:], "down", 1, cfg)
        assert torch.allclose(full[2:], alone, atol=1e-6) != coupled
        assert cfg.couples_batch(1) == coupled


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_dtype(dtype):
    q, k, v = (x.to(dtype) for x in qkv(5))
    cfg = ff.FastFaceConfig.preset("fastface-am2").attention
    out = am.ip_attention(q, k, v, "down", 1, cfg)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = am.ip_attention(*(x.double() for x in qkv(5)), "down", 1, cfg)
    assert (out.double() - ref).abs().max() < (0.05 if dtype != torch.float64 else 1e-12)


def test_unet_part_names():
    assert am.unet_part("down_blocks.1.attentions.0.transformer_blocks.0.attn2") == "down"
    assert am.unet_part("mid_block.attentions.0.transformer_blocks.3.attn2") == "mid"
    assert am.unet_part("up_blocks.0.attentions.2.transformer_blocks.9.attn2") == "up"
    with pytest.raises(ValueError, match="conv_in"):
        am.unet_part("conv_in")


def test_per_branch_normalisation_equals_running_branches_apart():
    q, k, v = qkv(6)  # batch of 3 = three guidance branches of one image
    cfg = ff.AttentionConfig(transforms=("adaptive_softmask", "scale"), invert_token0=True, normalize_per_branch=True)
    together = am.ip_attention(q, k, v, "down", 1, cfg, branches=3)
    apart = torch.cat(
        [am.ip_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], "down", 1, cfg, branches=1) for i in range(3)]
    )
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-6)
    reference = ff.AttentionConfig(transforms=("adaptive_softmask", "scale"), invert_token0=True)
    assert not torch.allclose(am.ip_attention(q, k, v, "down", 1, reference, branches=3), together)
    assert reference.couples_batch(1) and not cfg.couples_batch(1)


def test_minmax_norm_groups():
    x = probs(7, shape=(4, 2, 8, 4))
    torch.testing.assert_close(am.minmax_norm(x, groups=2), torch.cat([hand_norm(x[:2]), hand_norm(x[2:])]))
