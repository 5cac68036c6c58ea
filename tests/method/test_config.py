"""Config values, presets, validation errors and the reference JSON format."""
import json
from pathlib import Path

import pytest

import fastface_lite as ff
from fastface_lite.method.config import MODEL_DEFAULT_GUIDANCE

CONFIGS = Path(__file__).resolve().parents[2] / "fastface_lite" / "data" / "configs"


@pytest.mark.parametrize("model", ff.MODELS)
def test_baseline_uses_model_default_guidance(model):
    cfg = ff.FastFaceConfig.preset("baseline", model=model)
    g = cfg.guidance
    assert g.dcg_type == 3 and g.rescale is None and not g.renorm
    expected = {"hyper": 1.0, "lightning": 1.0, "turbo": 1.0, "lcm": 1.5, "base": 5.0}[model]
    assert g.a.at(0, 999) == g.b.at(3, 249) == expected == MODEL_DEFAULT_GUIDANCE[model]
    assert not cfg.attention.enabled


def test_preset_constants_match_spec():
    dcg = ff.FastFaceConfig.preset("dcg").guidance
    assert [dcg.a.at(i, 0) for i in range(4)] == [1.0, 1.5, 1.5, 1.0]
    assert [dcg.b.at(i, 0) for i in range(4)] == [1.0, 3.0, 3.0, 1.0]
    assert dcg.rescale == 0.75 and dcg.dcg_type == 3

    am1 = ff.FastFaceConfig.preset("am1")
    assert am1.guidance == ff.FastFaceConfig.preset("baseline").guidance
    at = am1.attention
    assert at.transforms == ("pow", "scale") and not at.invert_token0
    assert at.schedule is None and at.adain_weight is None
    assert at.target_parts == ("down", "up") and at.target_tokens == (0, 1, 2, 3)
    assert at.target_steps == (0, 1, 2, 3)
    assert (at.constants.down.pow, at.constants.mid.pow, at.constants.up.pow) == (1.3, 1.0, 1.3)
    assert (at.constants.down.scale, at.constants.mid.scale, at.constants.up.scale) == (1.55, 1.0, 1.45)
    assert (at.constants.down.softmask_k, at.constants.up.softmask_k) == (12.5, 12.5)
    assert (at.constants.down.quantile, at.constants.mid.quantile, at.constants.up.quantile) == (0.6, 1.0, 0.6)

    am2 = ff.FastFaceConfig.preset("am2").attention
    assert am2.transforms == ("adaptive_softmask", "scale") and am2.invert_token0
    assert am2.schedule.softmask_k == (7.5, 5.0, 5.0, 5.0)
    assert am2.schedule.quantile == (0.65,) * 4
    assert am2.schedule.scale == (1.0, 1.55, 1.55, 1.55)
    assert am2.adain_weight is None
    assert ff.FastFaceConfig.preset("fastface-am2").attention.adain_weight == 0.7
    assert ff.FastFaceConfig.preset("fastface-am1").guidance == dcg


def test_schedule_replaces_constants_at_its_step_only():
    at = ff.FastFaceConfig.preset("am2").attention
    step0, step2 = at.constants_at("down", 0), at.constants_at("up", 2)
    assert (step0.softmask_k, step0.quantile, step0.scale) == (7.5, 0.65, 1.0)
    assert (step2.softmask_k, step2.quantile, step2.scale) == (5.0, 0.65, 1.55)
    assert at.constants_at("mid", 1) == at.constants.mid  # the schedule covers down and up only
    # configs are values: reading a scheduled step changes nothing for a later AM1 config
    assert ff.FastFaceConfig.preset("am1").attention.constants_at("up", 1).scale == 1.45


def test_configs_are_immutable_and_round_trip():
    cfg = ff.FastFaceConfig.preset("fastface-am2", model="lcm")
    with pytest.raises(Exception):
        cfg.num_steps = 8
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ff.FastFaceConfig.from_dict(data) == cfg
    changed = cfg.replace(ip_adapter_scale=0.6)
    assert changed.ip_adapter_scale == 0.6 and cfg.ip_adapter_scale == 0.8


@pytest.mark.parametrize("name", ff.PRESETS)
def test_reference_json_loads_to_preset(name):
    loaded = ff.FastFaceConfig.from_reference_json(CONFIGS / f"{name}.json")
    assert loaded == ff.FastFaceConfig.preset(name, model="hyper")
    assert loaded.name == name


def test_reference_json_timestep_schedules_and_renorm():
    data = json.loads((CONFIGS / "dcg.json").read_text())
    dcg = data["pipe_kwargs"]["dcg_kwargs"]
    dcg.update(a_scheduler="clamped_pcs", b_scheduler="linear", term_preproc="renorm",
               sch_kwargs={"a": {"c": 1.0, "s": 2.0}, "b": {}})
    data["reset_gs_to_default"] = False
    data["pipe_kwargs"].update(guidance_scale_a=3.0, guidance_scale_b=2.0)
    g = ff.FastFaceConfig.from_reference_json(data).guidance
    assert g.renorm and g.rescale == 0.75
    assert g.a == ff.WeightSchedule("clamped_pcs", 3.0, c=1.0, s=2.0)
    assert g.b.at(0, 250) == pytest.approx(2.0 * 0.75)


# -- validation errors -----------------------------------------------------------------------------
def _error(fn, *words):
    with pytest.raises(ff.ConfigError) as info:
        fn()
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value), str(info.value)
    return info.value


def test_per_step_list_length_must_match_steps():
    g = ff.GuidanceConfig(a=ff.WeightSchedule.per_step((1.0, 2.0, 3.0)))
    _error(lambda: ff.FastFaceConfig(num_steps=4, guidance=g), "3 values", "4 steps")
    _error(lambda: ff.FastFaceConfig.preset("dcg", num_steps=8), "4 steps", "num_steps=8")
    sched = ff.AttentionConfig(transforms=("scale",), target_steps=(0,), schedule=ff.AttentionSchedule())
    _error(lambda: ff.FastFaceConfig(num_steps=2, attention=sched), "4 per-step values", "2 steps")


def test_timestep_shapes_work_for_any_step_count():
    g = ff.GuidanceConfig(a=ff.WeightSchedule("linear", 2.0), b=ff.WeightSchedule("cos", 1.0))
    cfg = ff.FastFaceConfig(num_steps=8, guidance=g)
    assert cfg.num_steps == 8
    am1 = ff.FastFaceConfig.preset("am1", num_steps=2)  # AM kept on the steps the run has
    assert am1.attention.target_steps == (0, 1)


def test_unknown_names_list_valid_ones():
    _error(lambda: ff.WeightSchedule("cosine"), "cosine", "inv_clamped_pcs", "custom")
    _error(lambda: ff.AttentionConfig(transforms=("pow", "blur")), "blur", "adaptive_softmask")
    _error(lambda: ff.AttentionConfig(target_parts=("down", "middle")), "middle", "mid")
    _error(lambda: ff.GuidanceConfig(dcg_type=4), "dcg_type", "(1, 2, 3)")
    _error(lambda: ff.FastFaceConfig.preset("fastface"), "fastface-am1")
    _error(lambda: ff.FastFaceConfig(model="sd15"), "sd15", "lightning")
    _error(lambda: ff.WeightSchedule("pcs", 1.0), "'s'")


def test_token_outside_adapter_tokens():
    at = ff.AttentionConfig(transforms=("pow",), target_tokens=(0, 4))
    _error(lambda: at.check_tokens(4), "[4]", "4 ID tokens")
    at.check_tokens(5)  # an adapter with more tokens has token 4
    _error(lambda: ff.AttentionConfig(transforms=("pow",), target_tokens=(-1,)), "non-negative")


def test_target_step_outside_run():
    at = ff.AttentionConfig(transforms=("pow",), target_steps=(0, 5))
    _error(lambda: ff.FastFaceConfig(num_steps=4, attention=at), "[5]", "0..3")


def test_reference_json_errors_name_the_problem(tmp_path):
    _error(lambda: ff.FastFaceConfig.from_reference_json(tmp_path / "missing.json"), "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _error(lambda: ff.FastFaceConfig.from_reference_json(bad), "bad.json", "not valid JSON")
    data = json.loads((CONFIGS / "am1.json").read_text())
    data["am_patch_kwargs"]["am_transforms"] = ["pow", "sharpen"]
    _error(lambda: ff.FastFaceConfig.from_reference_json(data), "sharpen")
    data = json.loads((CONFIGS / "dcg.json").read_text())
    data["pipe_kwargs"]["dcg_kwargs"]["sch_kwargs"]["custom"]["a"] = [1.0, 1.5]
    _error(lambda: ff.FastFaceConfig.from_reference_json(data), "2 values", "4 steps")
