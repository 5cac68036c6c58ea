"""Fuzzing the two config readers with hypothesis: any JSON value at any place of a valid config
dict either reads as a valid config or raises ConfigError, never another exception; and whatever
is accepted is finite and reads back equal through to_dict.

A few hundred examples each, derandomized (the same examples on every run, so CI is reproducible)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastface_lite as ff
from fastface_lite.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "fastface_lite" / "data" / "configs"
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-10, 10)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "false", "true", "1221", "0.8", "custom", "down", "pow", "hyper"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def paths(node, prefix=()):
    """Every place in a JSON tree: dict keys and list indices, at every depth."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def replaced(tree, path, value):
    tree = copy.deepcopy(tree)
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(finite(v) for v in tree.values())
    if isinstance(tree, list):
        return all(finite(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


PRESETS = [ff.FastFaceConfig.preset(n).to_dict() for n in ("baseline", "dcg", "am1", "fastface-am2")]
REFERENCES = [json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json"))]


def mutations(trees):
    return st.sampled_from(trees).flatmap(
        lambda tree: st.tuples(st.just(tree), st.sampled_from(list(paths(tree))), JSON)
    )


def read_or_refuse(reader, data):
    try:
        cfg = reader(data)
    except ConfigError:
        return
    tree = cfg.to_dict()
    assert finite(tree), tree
    assert ff.FastFaceConfig.from_dict(json.loads(json.dumps(tree))) == cfg


@FUZZ
@given(mutations(PRESETS))
def test_from_dict_reads_or_refuses(case):
    tree, path, value = case
    read_or_refuse(ff.FastFaceConfig.from_dict, replaced(tree, path, value))


@FUZZ
@given(mutations(REFERENCES))
def test_from_reference_json_reads_or_refuses(case):
    tree, path, value = case
    read_or_refuse(ff.FastFaceConfig.from_reference_json, replaced(tree, path, value))


@FUZZ
@given(JSON)
def test_any_json_value_as_a_whole_config(value):
    read_or_refuse(ff.FastFaceConfig.from_dict, value)
    read_or_refuse(ff.FastFaceConfig.from_reference_json, value if isinstance(value, dict) else {"x": value})
