"""DCG numbers against the docs/method.md §4 formulas written out by hand, schedules, branch needs."""

import pytest
import torch

import fastface_lite as ff
from fastface_lite.method import dcg as dcg


def branches(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 4, 3, 3, generator=g) for _ in range(3)]


def cfg(dcg_type=3, a=1.0, b=1.0, **kw):
    return ff.GuidanceConfig(dcg_type=dcg_type, a=ff.WeightSchedule.constant(a), b=ff.WeightSchedule.constant(b), **kw)


@pytest.mark.parametrize(
    "dcg_type,formula",
    [
        (1, lambda u, x, y, a, b: u + a * (x - u) + b * (y - x)),
        (2, lambda u, x, y, a, b: u + a * (x - u) + b * (y - u)),
        (3, lambda u, x, y, a, b: u + a * (x - u) + b * (y - x)),
    ],
)
def test_combinations_match_spec(dcg_type, formula):
    u, x, y = branches()
    out = dcg.guide(torch.cat([u, x, y]), 1, 749, cfg(dcg_type, a=1.5, b=3.0))
    torch.testing.assert_close(out, formula(u, x, y, 1.5, 3.0), rtol=0, atol=1e-6)


def test_known_numbers_on_scalars():
    # one-element branches make the formula checkable with pencil and paper
    u, i, ti = (torch.full((1, 1, 1, 1), v) for v in (1.0, 2.0, 4.0))
    out = dcg.guide(torch.cat([u, i, ti]), 0, 999, cfg(3, a=1.5, b=3.0))
    assert out.item() == pytest.approx(1 + 1.5 * (2 - 1) + 3.0 * (4 - 2))  # 8.5


def test_rescale_matches_spec():
    u, x, y = branches(1)
    phi = 0.75
    out = dcg.guide(torch.cat([u, x, y]), 0, 999, cfg(3, a=1.5, b=3.0, rescale=phi))
    e = u + 1.5 * (x - u) + 3.0 * (y - x)
    for n in range(e.shape[0]):  # per sample, unbiased std over (C, H, W)
        f = (x[n].std() + y[n].std()) / (2 * e[n].std())
        f = phi * f + (1 - phi)
        torch.testing.assert_close(out[n], e[n] * f, rtol=0, atol=1e-5)


def test_rescale_applies_even_when_a_equals_b_equals_one():
    u, x, y = branches(2)
    out = dcg.guide(torch.cat([u, x, y]), 0, 999, cfg(3, rescale=0.75))
    assert not torch.allclose(out, y)  # e = e_ti but f != 1
    plain = dcg.guide(torch.cat([u, x, y]), 0, 999, cfg(3))
    assert torch.equal(plain, y)  # exactly e_ti without rescale


def test_renorm_scales_term2_to_term1_norm():
    u, x, y = branches(3)
    out = dcg.guide(torch.cat([u, x, y]), 0, 999, cfg(3, a=2.0, b=0.5, renorm=True))
    t1, t2 = x - u, y - x
    t2 = t2 * (t1.norm() / t2.norm())
    torch.testing.assert_close(out, u + 2.0 * t1 + 0.5 * t2, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "dcg_type,a,b,rescale,expected",
    [
        (3, 1.0, 1.0, None, (False, False, True)),  # baseline: text+ID only
        (3, 1.0, 1.0, 0.75, (False, True, True)),  # rescale reads branches 1 and 2
        (3, 1.5, 3.0, 0.75, (True, True, True)),
        (3, 1.5, 1.5, None, (True, False, True)),  # a = b: ordinary CFG between e_u and e_ti
        (3, 1.0, 0.0, None, (False, True, False)),  # ID only
        (1, 1.0, 1.0, None, (False, False, True)),
        (2, 1.0, 0.0, None, (False, True, False)),
        (2, 0.5, 0.5, None, (False, True, True)),
    ],
)
def test_needed_branches(dcg_type, a, b, rescale, expected):
    assert dcg.needed_branches(0, 999, cfg(dcg_type, a, b, rescale=rescale)) == expected


@pytest.mark.parametrize("dcg_type", [1, 2, 3])
@pytest.mark.parametrize(
    "a,b,rescale", [(1.0, 1.0, None), (1.0, 1.0, 0.75), (1.5, 1.5, None), (1.0, 0.0, None), (0.5, 0.5, 0.5)]
)
def test_skipping_unneeded_branches_changes_nothing(dcg_type, a, b, rescale):
    full = branches(4)
    c = cfg(dcg_type, a, b, rescale=rescale)
    needed = dcg.needed_branches(0, 999, c)
    partial = [e if k else None for e, k in zip(full, needed, strict=True)]
    torch.testing.assert_close(
        dcg.combine(partial, 0, 999, c), dcg.guide(torch.cat(full), 0, 999, c), rtol=0, atol=1e-6
    )


def test_missing_needed_branch_is_an_error():
    u, x, y = branches()
    with pytest.raises(ValueError, match="not evaluated"):
        dcg.combine([None, x, y], 0, 999, cfg(3, a=1.5, b=3.0))


def test_guide_requires_three_branches():
    with pytest.raises(ValueError, match="three branches"):
        dcg.guide(torch.zeros(4, 4, 2, 2), 0, 999, cfg())


def test_term_norms():
    u, x, y = branches(5)
    norms = dcg.term_norms([u, x, y], 3)
    assert norms["term1"] == pytest.approx(float((x - u).norm()), rel=1e-6)
    assert norms["term2"] == pytest.approx(float((y - x).norm()), rel=1e-6)
    assert set(norms) == {"uncond", "id", "text+id", "term1", "term2"}


def test_dtype_is_kept():
    u, x, y = (e.half() for e in branches())
    out = dcg.guide(torch.cat([u, x, y]), 1, 749, ff.FastFaceConfig.preset("dcg").guidance)
    assert out.dtype == torch.float16
