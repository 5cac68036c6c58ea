"""A synthetic ID-token attention map with a known face, to watch the AM transforms work
(notebook 02) before looking at recorded maps.

    face = synthetic_face_attention(size=32)
    face.probs          # (1, heads, 32*32, 4) probabilities: every position's row sums to 1 over the 4 tokens
    face.mask           # (32, 32) the face: an elliptical Gaussian, 1 at its centre
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["SyntheticAttention", "face_mask", "synthetic_face_attention"]


class SyntheticAttention(NamedTuple):
    probs: torch.Tensor  # (branches, heads, size*size, tokens) softmax over tokens
    mask: torch.Tensor  # (size, size) the face blob in [0, 1]


def face_mask(
    size: int = 32, centre: tuple[float, float] = (0.45, 0.5), radii: tuple[float, float] = (0.22, 0.16)
) -> torch.Tensor:
    """(size, size) elliptical Gaussian: 1 at `centre` (row, col as fractions of the side), falling
    to exp(-1/2) at `radii` (row radius, col radius), so a face taller than wide by default."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    (cy, cx), (ry, rx) = centre, radii
    return torch.exp(-0.5 * (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2))


def synthetic_face_attention(
    size: int = 32,
    heads: int = 2,
    strengths: Sequence[float] = (-2.5, 3.0, 2.0, 1.2),
    noise: float = 0.2,
    branches: int = 1,
    branch_gain: Sequence[float] | None = None,
    centre: tuple[float, float] = (0.45, 0.5),
    radii: tuple[float, float] = (0.22, 0.16),
    seed: int = 0,
) -> SyntheticAttention:
    """ID-token attention probabilities of a picture with one face, shaped as AM sees them.

    Token t gets the logit ``strengths[t] * face + noise * N(0, 1)`` at every position, then a softmax
    over the tokens, as softmax(Q K_ip^T / sqrt(d)) gives. A positive strength makes a token attend
    to the face, a negative one to the background (token 0 by default: the token AM2 treats as
    "negative"). Away from the face every token gets about 1/T.

    Args:
        size: side of the square grid; N = size * size positions.
        heads: attention heads (independent noise each).
        strengths: one per ID token (T = len(strengths)).
        noise: standard deviation of the logit noise.
        branches: batch entries (guidance branches) stacked on dim 0.
        branch_gain: per branch, a factor on the strengths (e.g. 0 for a branch without the
            identity); default 1 for all.
        centre, radii: the face (see :func:`face_mask`).
        seed: the noise.
    Returns:
        :class:`SyntheticAttention` with probs (branches, heads, N, T) and the face mask (size, size).
    """
    gains = [1.0] * branches if branch_gain is None else [float(g) for g in branch_gain]
    if len(gains) != branches:
        raise ValueError(f"branch_gain has {len(gains)} entries for {branches} branches")
    mask = face_mask(size, centre, radii)
    s = torch.tensor([float(v) for v in strengths])
    gain = torch.tensor(gains).view(branches, 1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    logits = gain * s * mask.reshape(1, 1, -1, 1) + noise * torch.randn(
        branches, heads, size * size, len(s), generator=generator
    )
    return SyntheticAttention(logits.softmax(-1), mask)
