"""Attention manipulation (AM) of the ID tokens, docs/method.md §6. Pure tensor functions.

In the adapter's decoupled cross-attention every spatial position attends to the T ID tokens
(T = 4 for FaceID) with probabilities A = softmax(Q K_ip^T / sqrt(d)). AM rewrites selected token
columns of A before they weight the values, and does **not** renormalise afterwards: rows no longer
sum to 1, which is how identity gets amplified.

Shapes: query (B, heads, N, d), key/value (B, heads, T, d), A (B, heads, N, T), with B the whole
guidance batch (all branches), N the spatial positions of the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from fastface_lite.method.am_config import AttentionConfig, PartConstants

SCALE_CEILING = 10.0  # `scale` clamps amplified probabilities here
SOFTMASK_CENTRE = 0.5  # `softmask` centres its sigmoid on the middle of the normalised map
QUANTILE_FLOOR = 1e-6  # `adaptive_softmask` keeps its threshold above zero
ADAIN_EPS = 1e-6


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * d) -> (B, heads, L, d): the layout attention is computed in."""
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads * d): back to the layer's hidden size."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, x.shape[1] * x.shape[3])


def attention_probs(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """A = softmax(Q K^T / sqrt(d)): (B, H, N, d), (B, H, T, d) -> (B, H, N, T), in the input dtype."""
    scores = (query @ key.transpose(-2, -1)) * (1.0 / math.sqrt(query.shape[-1]))
    return scores.softmax(dim=-1)


def minmax_norm(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Min-max normalise (B, H, N, T) jointly over batch, heads and positions, per token.

    The batch holds every guidance branch, so with ``groups=1`` (the reference) this is what
    couples the branches together; ``groups=k`` normalises each of k equal batch chunks (one per
    branch) on its own.
    """
    chunks = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])
    lo = chunks.amin(dim=(1, 2, 3), keepdim=True)
    hi = chunks.amax(dim=(1, 2, 3), keepdim=True)
    # a constant column would divide 0 by 0; keep it at 0 instead of NaN
    return ((chunks - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)).reshape(x.shape)


def spatial_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile over the positions (dim -2), linear interpolation, computed in fp32.

    (B, H, N, T) -> (B, H, 1, T) in the input dtype. Sort-based, so unlike torch.quantile it
    has no input-size limit (SDXL maps with a batch of images exceed it).
    """
    values = x.float().sort(dim=-2).values
    n = values.shape[-2]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    low, high = values[..., lo : lo + 1, :], values[..., hi : hi + 1, :]
    return (low + frac * (high - low)).to(x.dtype)


# -- the transforms: (A_target (B, H, N, T'), constants, normalisation groups) -> (B, H, N, T') ------
def transform_pow(a: torch.Tensor, c: PartConstants, groups: int = 1) -> torch.Tensor:
    return a.pow(c.pow)


def transform_scale(a: torch.Tensor, c: PartConstants, groups: int = 1) -> torch.Tensor:
    return torch.clamp(a * c.scale, max=SCALE_CEILING)


def transform_softmask(a: torch.Tensor, c: PartConstants, groups: int = 1) -> torch.Tensor:
    return minmax_norm(torch.sigmoid(c.softmask_k * (minmax_norm(a, groups) - SOFTMASK_CENTRE)), groups)


def transform_adaptive_softmask(a: torch.Tensor, c: PartConstants, groups: int = 1) -> torch.Tensor:
    # The threshold is a quantile of the raw probabilities but is subtracted from the min-max
    # normalised map: a scale mismatch the reference has and FastFace's numbers depend on.
    threshold = spatial_quantile(a, c.quantile).clamp_min(QUANTILE_FLOOR)
    return minmax_norm(torch.sigmoid(c.softmask_k * (minmax_norm(a, groups) - threshold)), groups)


TRANSFORMS: dict[str, Callable[..., torch.Tensor]] = {
    "pow": transform_pow,
    "scale": transform_scale,
    "softmask": transform_softmask,
    "adaptive_softmask": transform_adaptive_softmask,
}


def manipulate(
    probs: torch.Tensor,
    tokens: tuple[int, ...],
    transforms: tuple[str, ...],
    constants: PartConstants,
    invert_token0: bool = False,
    groups: int = 1,
) -> torch.Tensor:
    """Apply the transform chain to the target-token columns of (B, H, N, T) probabilities.

    With ``invert_token0`` token 0 is handled as a "negative" token: its column is flipped to
    1 - A before the chain and mirrored to max_N(A) - A after it. ``groups``: see :func:`minmax_norm`.
    """
    columns = list(tokens)
    target = probs[..., columns]  # advanced indexing copies: probs itself stays untouched
    flip = [columns.index(0)] if invert_token0 and 0 in columns else []
    if flip:
        target[..., flip] = 1 - target[..., flip]
    for name in transforms:
        target = TRANSFORMS[name](target, constants, groups)
    if flip:
        col = target[..., flip]
        target[..., flip] = col.amax(dim=-2, keepdim=True) - col
    out = probs.clone()
    out[..., columns] = target
    return out


def adain(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give x the mean and (unbiased) std of ``reference`` along the last dim."""
    # std_mean: one reduction pass per tensor instead of two
    std, mean = torch.std_mean(x, dim=-1, keepdim=True)
    ref_std, ref_mean = torch.std_mean(reference, dim=-1, keepdim=True)
    return (x - mean) * (ref_std / (std + ADAIN_EPS)) + ref_mean


class IPAttention(NamedTuple):
    """Result of the ID-token attention of one layer."""

    output: torch.Tensor  # (B, H, N, d)
    raw: torch.Tensor  # (B, H, N, T) softmax probabilities
    used: torch.Tensor  # (B, H, N, T) probabilities after AM (== raw where AM is off)


def ip_attention_maps(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    part: str,
    step_index: int,
    cfg: AttentionConfig,
    branches: int = 1,
) -> IPAttention:
    """ID-token attention with AM, returning the output and both attention maps.

    ``branches``: guidance branches stacked on dim 0 (equal chunks); they are normalised
    separately only when ``cfg.normalize_per_branch`` is set.
    """
    probs = attention_probs(query, key)
    if not cfg.active(part, step_index):
        return IPAttention(probs @ value, probs, probs)
    constants = cfg.constants_at(part, step_index)
    groups = branches if cfg.normalize_per_branch else 1
    used = manipulate(probs, cfg.target_tokens, cfg.transforms, constants, cfg.invert_token0, groups)
    w = cfg.adain_weight
    if w is not None:  # stage 1: pull the manipulated map's per-row statistics towards the original
        used = w * used + (1 - w) * adain(used, probs)
    out = used @ value
    if w is not None:  # stage 2: the same on the attention output, over head_dim
        out = _blend_unless_nan(out, adain(out, probs @ value), w)
    return IPAttention(out, probs, used)


def _blend_unless_nan(out: torch.Tensor, matched: torch.Tensor, w: float) -> torch.Tensor:
    """w * out + (1 - w) * matched, or ``out`` unchanged if ``matched`` holds any NaN at all.

    The whole-tensor fallback is the reference's rule. The any-NaN flag stays a 0-d tensor on the
    device and picks through ``torch.where``: an ``if`` on it would wait for the GPU in every target
    layer (a host sync that stalls the launch queue and breaks CUDA graphs and torch.compile).
    """
    has_nan = torch.isnan(matched).any()  # 0-d bool, broadcast over the whole tensor
    return torch.where(has_nan, out, w * out + (1 - w) * matched)


def ip_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    part: str,
    step_index: int,
    cfg: AttentionConfig,
    branches: int = 1,
) -> torch.Tensor:
    """ID-token attention output with AM applied where ``cfg`` targets this part and step.

    Args:
        query: (B, heads, N, d) queries of the spatial positions.
        key, value: (B, heads, T, d) projections of the T ID tokens.
        part: "down", "mid" or "up", the UNet part of the layer.
        step_index: denoising step index.
        cfg: the attention config.
        branches: guidance branches stacked on dim 0 (only read with ``cfg.normalize_per_branch``).
    Returns:
        (B, heads, N, d), to be added to the text attention as ``ip_scale * output``.
    """
    return ip_attention_maps(query, key, value, part, step_index, cfg, branches).output


def unet_part(layer_name: str) -> str:
    """The UNet part of a module name: down_blocks.* -> down, mid_block.* -> mid, up_blocks.* -> up."""
    for prefix, part in (("down_blocks", "down"), ("mid_block", "mid"), ("up_blocks", "up")):
        if layer_name.startswith(prefix):
            return part
    raise ValueError(f"layer {layer_name!r} is not in down_blocks, mid_block or up_blocks")
