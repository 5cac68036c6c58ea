"""synthetic.py: a probability tensor shaped as AM sees it, with the face where it was put."""

import pytest
import torch

from fastface_lite.method import am as am
from fastface_lite.method.am_config import PartTable
from fastface_lite.workbook.synthetic import face_mask, synthetic_face_attention


def test_face_mask_peaks_at_the_centre():
    mask = face_mask(41, centre=(0.5, 0.25), radii=(0.2, 0.1))  # grid step 1/40: the radii fall on the grid
    assert mask.shape == (41, 41)
    assert float(mask.max()) == pytest.approx(1.0)
    assert tuple(int(i) for i in torch.nonzero(mask == mask.max())[0]) == (20, 10)
    edge = float(torch.exp(torch.tensor(-0.5)))
    assert float(mask[20, 14]) == pytest.approx(edge, abs=1e-5)  # col radius 0.1 = 4 steps
    assert float(mask[28, 10]) == pytest.approx(edge, abs=1e-5)  # row radius 0.2 = 8 steps


def test_probabilities_with_the_face_where_it_was_put():
    syn = synthetic_face_attention(size=24, heads=3, seed=1)
    assert syn.probs.shape == (1, 3, 24 * 24, 4)
    torch.testing.assert_close(syn.probs.sum(-1), torch.ones(1, 3, 24 * 24))
    face = syn.mask.flatten() > 0.5
    background = syn.mask.flatten() < 0.1
    inside, outside = syn.probs[0, :, face].mean((0, 1)), syn.probs[0, :, background].mean((0, 1))
    assert inside[1] > inside[2] > inside[3] and inside[1] > outside[1] and inside[2] > outside[2]  # face tokens
    assert inside[0] < outside[0]  # negative strength: a background token
    assert torch.allclose(outside, torch.full((4,), 0.25), atol=0.03)  # about 1/T away from the face


def test_seeded_and_branch_gains():
    a = synthetic_face_attention(branches=3, branch_gain=(0.0, 1.0, 0.8), seed=2).probs
    assert torch.equal(a, synthetic_face_attention(branches=3, branch_gain=(0.0, 1.0, 0.8), seed=2).probs)
    assert not torch.equal(a, synthetic_face_attention(branches=3, branch_gain=(0.0, 1.0, 0.8), seed=3).probs)
    mask = synthetic_face_attention().mask.flatten()
    face, background = mask > 0.5, mask < 0.1
    contrast = [float(a[b, :, face, 1].mean() - a[b, :, background, 1].mean()) for b in range(3)]
    assert abs(contrast[0]) < 0.02 < contrast[2] < contrast[1]  # gain 0: no face at all
    with pytest.raises(ValueError, match="branch_gain"):
        synthetic_face_attention(branches=2, branch_gain=(1.0,))


def test_softmask_of_the_synthetic_map_finds_the_face():
    syn = synthetic_face_attention()
    mask = am.manipulate(syn.probs, (1,), ("softmask",), PartTable().up)[0, :, :, 1].mean(0)
    face, background = syn.mask.flatten() > 0.5, syn.mask.flatten() < 0.1
    assert float(mask[face].mean()) > 0.7 and float(mask[background].mean()) < 0.1
