"""Guidance-weight schedules: per-step lists and every timestep shape against its formula."""

import math

import pytest

import fastface_lite as ff
from fastface_lite.method import dcg
from fastface_lite.method.schedules import TIMESTEP_SHAPES


@pytest.mark.parametrize(
    "shape,params,expected",
    [
        ("default", {}, lambda w, t: w),
        ("linear", {}, lambda w, t: w * (1 - t / 1000)),
        ("inv_linear", {}, lambda w, t: w * t / 1000),
        ("clamped_lin", {"c": 1.2}, lambda w, t: max(1.2, w * (1 - t / 1000))),
        ("inv_clamp_linear", {"c": 1.2}, lambda w, t: max(1.2, w * t / 1000)),
        ("cos", {}, lambda w, t: w * (math.cos(math.pi * t / 1000) + 1)),
        ("inv_cos", {}, lambda w, t: w * (math.cos(math.pi * (1000 - t) / 1000) + 1)),
        ("pcs", {"s": 2.0}, lambda w, t: 0.5 * w * (1 - math.cos(math.pi * ((1000 - t) / 1000) ** 2))),
        ("inv_pcs", {"s": 2.0}, lambda w, t: 0.5 * w * (1 - math.cos(math.pi * (t / 1000) ** 2))),
        (
            "clamped_pcs",
            {"c": 1.2, "s": 2.0},
            lambda w, t: max(1.2, 0.5 * w * (1 - math.cos(math.pi * ((1000 - t) / 1000) ** 2))),
        ),
        (
            "inv_clamped_pcs",
            {"c": 1.2, "s": 2.0},
            lambda w, t: max(1.2, 0.5 * w * (1 - math.cos(math.pi * (t / 1000) ** 2))),
        ),
        ("capshape", {}, lambda w, t: w * (1 - t / 1000) if t > 500 else w * t / 1000),
        ("ccshape", {"c": 1.2}, lambda w, t: max(1.2, w * (1 - t / 1000) if t > 500 else w * t / 1000)),
    ],
)
def test_timestep_shapes(shape, params, expected):
    sched = ff.WeightSchedule(shape, 3.0, **params)
    for t in (999, 749, 500, 499, 249, 0):
        assert sched.at(0, t) == pytest.approx(expected(3.0, t), abs=1e-12), (shape, t)


def test_every_shape_is_tested():
    assert set(TIMESTEP_SHAPES) == {
        "default",
        "linear",
        "inv_linear",
        "clamped_lin",
        "inv_clamp_linear",
        "cos",
        "inv_cos",
        "pcs",
        "inv_pcs",
        "clamped_pcs",
        "inv_clamped_pcs",
        "capshape",
        "ccshape",
    }


def test_known_schedule_values():
    assert ff.WeightSchedule("linear", 2.0).at(0, 750) == pytest.approx(0.5)
    assert ff.WeightSchedule("cos", 1.0).at(0, 500) == pytest.approx(1.0)
    assert ff.WeightSchedule("pcs", 2.0, s=1.0).at(0, 500) == pytest.approx(1.0)
    assert ff.WeightSchedule("capshape", 2.0).at(0, 250) == pytest.approx(0.5)


def test_custom_schedule_uses_step_index_and_timestep_shapes_use_timestep():
    g = ff.FastFaceConfig.preset("dcg").guidance
    assert dcg.weights_at(1, 0, g) == (1.5, 3.0)
    lin = ff.GuidanceConfig(a=ff.WeightSchedule("linear", 2.0), b=ff.WeightSchedule.constant(1.0))
    assert dcg.weights_at(0, 500, lin) == (pytest.approx(1.0), 1.0)
