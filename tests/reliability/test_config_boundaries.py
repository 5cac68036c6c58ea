"""Configs at their boundaries: FastFaceConfig and its parts, `from_dict` and the reference JSON.

Table-driven: each case is a call, the error class it must raise, and words its message must
contain (the input's name or path, and what valid looks like). Nothing runs a pipeline here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import fastface_lite as ff
from fastface_lite.errors import ConfigError
from fastface_lite.method.am_config import AttentionConfig, AttentionSchedule, PartConstants
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.method.schedules import WeightSchedule

CONFIGS = Path(__file__).resolve().parents[2] / "fastface_lite" / "data" / "configs"
NAN, INF = float("nan"), float("inf")


def preset_dict(name="fastface-am2"):
    return ff.FastFaceConfig.preset(name).to_dict()


def edited(path: str, value, base=None):
    """The dict of a preset with the entry at ``path`` ("guidance.a.values.2") set to ``value``
    (the key removed when value is ...)."""
    data = copy.deepcopy(base if base is not None else preset_dict())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def reference(path: str, value):
    return edited(path, value, json.loads((CONFIGS / "fastface-am2.json").read_text()))


# -- the classes, built directly -----------------------------------------------------------------
CONSTRUCTORS = [
    (lambda: WeightSchedule.per_step("1221"), ["schedule values", "must be a list"]),
    (lambda: WeightSchedule.per_step([1.0, NAN, 1.0, 1.0]), ["values[1]", "finite"]),
    (lambda: WeightSchedule.constant(1e30), ["weight", "[-100.0, 100.0]"]),
    (lambda: WeightSchedule.constant(INF), ["weight", "finite"]),
    (lambda: WeightSchedule("linear", "3"), ["weight", "must be a number"]),
    (lambda: GuidanceConfig(a={"shape": "default"}), ["guidance weight a", "WeightSchedule"]),
    (lambda: GuidanceConfig(dcg_type=3.5), ["dcg_type", "integer"]),
    (lambda: GuidanceConfig(dcg_type=True), ["dcg_type", "integer"]),
    (lambda: GuidanceConfig(renorm="false"), ["renorm", "true or false"]),
    (lambda: GuidanceConfig(rescale=NAN), ["rescale", "finite"]),
    (lambda: PartConstants(quantile=1.5), ["quantile", "[0.0, 1.0]"]),
    (lambda: PartConstants(quantile=-0.1), ["quantile", "[0.0, 1.0]"]),
    (lambda: PartConstants(scale=NAN), ["scale", "finite"]),
    (lambda: PartConstants(softmask_k=1e30), ["softmask_k", "1000.0"]),
    (lambda: AttentionSchedule(quantile=(0.65, 0.65, 1.2, 0.65)), ["quantile[2]", "[0.0, 1.0]"]),
    (lambda: AttentionSchedule(parts="down"), ["parts", "must be a list"]),
    (lambda: AttentionConfig(transforms="pow"), ["transforms", "must be a list"]),
    (lambda: AttentionConfig(target_steps="1221"), ["target_steps", "must be a list"]),
    (lambda: AttentionConfig(target_steps=(0, 1.5)), ["target_steps[1]", "integer"]),
    (lambda: AttentionConfig(invert_token0="false"), ["invert_token0", "true or false"]),
    (lambda: AttentionConfig(adain_weight=NAN), ["adain_weight", "finite"]),
    (lambda: AttentionConfig(schedule={"scale": [1, 1, 1, 1]}), ["schedule", "AttentionSchedule"]),
    (lambda: ff.FastFaceConfig(guidance={"dcg_type": 3}), ["guidance", "from_dict"]),
    (lambda: ff.FastFaceConfig(attention={}), ["attention", "from_dict"]),
    (lambda: ff.FastFaceConfig(ip_adapter_scale=NAN), ["ip_adapter_scale", "finite"]),
    (lambda: ff.FastFaceConfig(ip_adapter_scale=1e30), ["ip_adapter_scale", "[0.0, 10.0]"]),
    (lambda: ff.FastFaceConfig(faceid_lora_scale=-INF), ["faceid_lora_scale", "finite"]),
    (lambda: ff.FastFaceConfig(num_steps=4.5), ["num_steps", "integer", "not rounded"]),
    (lambda: ff.FastFaceConfig(num_steps="4"), ["num_steps", "integer"]),
    (lambda: ff.FastFaceConfig(width=100), ["width", "multiple of 8"]),
    (lambda: ff.FastFaceConfig.preset("fastface-am2").replace(ip_adapter_scale=INF), ["ip_adapter_scale"]),
]

# -- FastFaceConfig.from_dict: every level, named by its path --------------------------------------
FROM_DICT = [
    ("not a dict", ["the config dict", "must be a dict"]),
    ({"guidance": {"dcg_typ": 3}}, ["unknown key", "'dcg_typ'", "in guidance", "valid keys"]),
    (edited("guidance.a.valuez", [1, 1, 1, 1]), ["'valuez'", "guidance.a"]),
    (edited("guidance.a.values", "1221"), ["guidance.a", "must be a list"]),
    (edited("guidance.a.values.2", NAN), ["guidance.a", "values[2]", "finite"]),
    (edited("guidance.b.values.0", 1e30), ["guidance.b", "values[0]"]),
    (edited("guidance.renorm", "false"), ["guidance", "renorm", "true or false"]),
    (edited("guidance.rescale", "0.75"), ["guidance", "rescale", "number"]),
    (edited("guidance", [1, 2]), ["guidance", "must be a dict"]),
    (edited("attention.invert_token0", "false"), ["attention", "invert_token0", "true or false"]),
    (edited("attention.target_steps", "0123"), ["attention", "target_steps", "must be a list"]),
    (edited("attention.target_tokens.0", 0.5), ["attention", "target_tokens[0]", "integer"]),
    (edited("attention.schedule.quantile.1", 2.0), ["attention.schedule", "quantile[1]", "[0.0, 1.0]"]),
    (edited("attention.schedule.scales", [1.0]), ["'scales'", "attention.schedule"]),
    (edited("attention.constants.down.quantile", -1), ["attention.constants.down", "quantile"]),
    (edited("attention.constants.side", {}), ["'side'", "attention.constants"]),
    (edited("attention.adain_weight", INF), ["attention", "adain_weight", "finite"]),
    (edited("num_steps", 4.5), ["num_steps", "integer"]),
    (edited("ip_adapter_scale", NAN), ["ip_adapter_scale", "finite"]),
    (edited("colour", "blue"), ["'colour'", "the config dict"]),
]

# -- the reference JSON format ------------------------------------------------------------------
REFERENCE = [
    (reference("patch_pipe", "false"), ["patch_pipe", "true or false", "without quotes"]),
    (reference("reset_gs_to_default", "true"), ["reset_gs_to_default", "true or false"]),
    (reference("am_patch_kwargs.apply_adain", "false"), ["am_patch_kwargs.apply_adain"]),
    (reference("am_patch_kwargs.inverse_neg_transforms", 1), ["inverse_neg_transforms", "true or false"]),
    (reference("am_patch_kwargs.target_tsteps", "0123"), ["am_patch_kwargs.target_tsteps", "must be a list"]),
    (reference("am_patch_kwargs.target_tokens", [0, 1.5]), ["am_patch_kwargs.target_tokens[1]", "integer"]),
    (reference("am_patch_kwargs.am_transforms", "scale"), ["am_patch_kwargs.am_transforms", "must be a list"]),
    (reference("am_patch_kwargs.target_parts", "up"), ["am_patch_kwargs.target_parts", "must be a list"]),
    (reference("pipe_kwargs.num_inference_steps", 4.5), ["pipe_kwargs.num_inference_steps", "integer"]),
    (reference("pipe_kwargs.num_inference_steps", "4"), ["pipe_kwargs.num_inference_steps", "integer"]),
    (reference("pipe_kwargs.dcg_kwargs.sch_kwargs.custom.a", "1221"), ["(a)", "must be a list"]),
    (reference("pipe_kwargs.dcg_kwargs.sch_kwargs.custom.b.1", NAN), ["(b)", "values[1]", "finite"]),
    (reference("pipe_kwargs.dcg_kwargs.dcg_type", "3"), ["pipe_kwargs.dcg_kwargs.dcg_type", "integer"]),
    (reference("pipe_kwargs.dcg_kwargs.rescale", 7.5), ["pipe_kwargs.dcg_kwargs.rescale", "[0.0, 1.0]"]),
    (reference("pipe_kwargs.dcg_kwargs.return_norms", "no"), ["return_norms", "true or false"]),
    (reference("pipe_kwargs.dcg_kwargs", "none"), ["pipe_kwargs.dcg_kwargs", "JSON object"]),
    (reference("pipe_kwargs.guidance_scale_a", 1e30), ["pipe_kwargs.guidance_scale_a", "100.0"]),
    (reference("pipe_kwargs.width", 1000.5), ["pipe_kwargs.width", "integer"]),
    (reference("ip_adapter_scale", NAN), ["ip_adapter_scale", "finite"]),
    (reference("ip_adapter_scale", "0.8"), ["ip_adapter_scale", "number"]),
    (reference("faceid_lora_scale", INF), ["faceid_lora_scale", "finite"]),
    (reference("model_name", 3), ["model_name", "string"]),
    ([1, 2], ["reference config", "JSON object"]),
]


def _check(call, words):
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(("call", "words"), CONSTRUCTORS, ids=[w[0] for _, w in CONSTRUCTORS])
def test_config_classes(call, words):
    _check(call, words)


@pytest.mark.parametrize(("data", "words"), FROM_DICT, ids=[w[0] for _, w in FROM_DICT])
def test_from_dict(data, words):
    _check(lambda: ff.FastFaceConfig.from_dict(data), words)


@pytest.mark.parametrize(("data", "words"), REFERENCE, ids=[w[0] for _, w in REFERENCE])
def test_reference_json(data, words):
    _check(lambda: ff.FastFaceConfig.from_reference_json(data), words)


def test_the_valid_inputs_still_read():
    """The other side of the table: shipped configs and every preset's dict are accepted as they are."""
    for path in sorted(CONFIGS.glob("*.json")):
        assert ff.FastFaceConfig.from_reference_json(path) == ff.FastFaceConfig.preset(path.stem)
    for name in ("baseline", "dcg", "am1", "am2", "fastface-am1", "fastface-am2"):
        cfg = ff.FastFaceConfig.preset(name)
        assert ff.FastFaceConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ff.FastFaceConfig(num_steps=4.0).num_steps == 4  # an integral float is an integer, not truncated
