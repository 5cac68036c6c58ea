"""Reading variants stored in the reference implementation's JSON format."""

import json
from pathlib import Path

import pytest

import fastface_lite as ff

CONFIGS = Path(__file__).resolve().parents[2] / "fastface_lite" / "data" / "configs"


def _error(fn, *words):
    with pytest.raises(ff.ConfigError) as info:
        fn()
    for word in words:
        assert word in str(info.value), str(info.value)
    return info.value


@pytest.mark.parametrize("name", ff.VARIANTS)
def test_reference_json_loads_to_preset(name):
    loaded = ff.FastFaceConfig.from_reference_json(CONFIGS / f"{name}.json")
    assert loaded == ff.FastFaceConfig.preset(name, model="hyper")
    assert loaded.name == name


def test_reference_json_timestep_schedules_and_renorm():
    data = json.loads((CONFIGS / "dcg.json").read_text())
    dcg = data["pipe_kwargs"]["dcg_kwargs"]
    dcg.update(
        a_scheduler="clamped_pcs",
        b_scheduler="linear",
        term_preproc="renorm",
        sch_kwargs={"a": {"c": 1.0, "s": 2.0}, "b": {}},
    )
    data["reset_gs_to_default"] = False
    data["pipe_kwargs"].update(guidance_scale_a=3.0, guidance_scale_b=2.0)
    g = ff.FastFaceConfig.from_reference_json(data).guidance
    assert g.renorm and g.rescale == 0.75
    assert g.a == ff.WeightSchedule("clamped_pcs", 3.0, c=1.0, s=2.0)
    assert g.b.at(0, 250) == pytest.approx(2.0 * 0.75)


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
