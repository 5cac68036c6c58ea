"""What a run is (fastface_lite.evaluation.grid): per-item seeds that do not depend on order or
sharding, the canonical order of the items, the settings' stored JSON layout, the spec's checks."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest

from fastface_lite.errors import ConfigError
from fastface_lite.evaluation.grid import EvalSpec, RunSettings, build_items, item_seed, shard
from fastface_lite.evaluation.run_folder import RunFolderError, sha256_file
from fastface_lite.faces.photos import face_path, load_prompts
from fastface_lite.method.config import FastFaceConfig

from .tiny_runs import EVAL_GRID, N_ITEMS


def test_item_seeds_are_stable_and_do_not_depend_on_order_or_sharding():
    # SHA-256 of (seed, identity, prompt): pinned, so a change to Python's hash() or to the
    # grid's order can never move an image's noise
    assert item_seed(0, "astronaut", "a photo of a person") == 1824630376682420279
    assert item_seed(0, "grace_hopper", "a photo of a person") == 4869380854937372202
    assert item_seed(1, "astronaut", "a photo of a person") != item_seed(0, "astronaut", "a photo of a person")

    settings = RunSettings.from_spec(EVAL_GRID)
    items = build_items(settings)
    assert len(items) == N_ITEMS and len({i.key for i in items}) == N_ITEMS
    assert [i.identity for i in items[:8]] == ["astronaut"] * 8  # sorted inputs
    for item in items:
        assert item.seed == item_seed(0, item.identity, item.prompt)
    # variants share the noise of their (identity, prompt); different prompts / identities do not
    by_pair = {}
    for item in items:
        by_pair.setdefault((item.identity, item.prompt), set()).add(item.seed)
    assert all(len(seeds) == 1 for seeds in by_pair.values())
    assert len({next(iter(s)) for s in by_pair.values()}) == len(by_pair)

    # the same grid given in any order
    shuffled = settings.to_json()
    rng = random.Random(0)
    rng.shuffle(shuffled["identities"])
    for prompts in shuffled["prompts"].values():
        rng.shuffle(prompts)
    assert build_items(RunSettings.from_json(shuffled)) == items
    other = RunSettings.from_spec(
        EvalSpec(
            identities=("astronaut", "grace_hopper"),
            prompt_sets=("stylistic", "realistic"),
            prompts_per_set=2,
            variants=("baseline", "fastface-am2"),
            size=64,
            mode="tiny",
        )
    )
    assert {(i.key, i.seed) for i in build_items(other)} == {(i.key, i.seed) for i in items}

    # sharded over 1..4 processes, in grid order or shuffled: every item exactly once, with its seed
    scrambled = list(items)
    rng.shuffle(scrambled)
    for listing in (items, scrambled):
        for count in range(1, 5):
            parts = [shard(listing, index, count) for index in range(count)]
            assert sorted(i.key for part in parts for i in part) == sorted(i.key for i in items)
            assert all(i.seed == item_seed(0, i.identity, i.prompt) for part in parts for i in part)
    # the variants of an image stay together, so two processes get the same mix of variants
    for index in range(2):
        assert Counter(i.variant for i in shard(items, index, 2)) == {"baseline": 4, "fastface-am2": 4}


# ------------------------------------------------------------------------------- the settings
def test_run_settings_json_is_the_layout_stored_runs_have():
    settings = RunSettings.from_spec(EVAL_GRID)
    stored = settings.to_json()
    # settings.json's "settings" object of every run so far: these keys, in this order, plain JSON
    assert list(stored) == [
        "format",
        "mode",
        "models",
        "variants",
        "adapter",
        "seed",
        "num_steps",
        "size",
        "clip_crop_bgr",
        "identities",
        "prompts",
        "weights",
        "variant_configs",
    ]
    assert {k: stored[k] for k in list(stored)[:9]} == {
        "format": 1,
        "mode": "tiny",
        "models": ["hyper"],
        "variants": ["baseline", "fastface-am2"],
        "adapter": "faceid-plusv2",
        "seed": 0,
        "num_steps": 4,
        "size": 64,
        "clip_crop_bgr": True,
    }
    assert stored["identities"] == [
        {"name": name, "sha256": sha256_file(face_path(name))} for name in ("astronaut", "grace_hopper")
    ]  # sorted by name
    assert stored["prompts"] == {name: sorted(load_prompts(name))[:2] for name in ("realistic", "stylistic")}
    assert stored["weights"] == {"tiny_pipeline_seed": 0, "clip": "ClipScorer.tiny(seed=0)", "face_analyzer": "dlib"}
    configs = {f"hyper/{v}": FastFaceConfig.preset(v, model="hyper").to_dict() for v in ("baseline", "fastface-am2")}
    assert stored["variant_configs"] == configs
    assert json.loads(json.dumps(stored)) == stored  # lists and dicts only: what json.load gives back
    assert RunSettings.from_json(stored) == settings and RunSettings.from_json(stored).to_json() == stored
    full = RunSettings.from_spec(EvalSpec(**{**EVAL_GRID.__dict__, "mode": "full"})).to_json()["weights"]
    clip = {"clip_score": "openai/clip-vit-large-patch14", "clip_score_b32": "openai/clip-vit-base-patch32"}
    assert full == {
        "clip": clip,
        "face_analyzer": "insightface buffalo_l",
        "second_opinion": "dlib",
        "dtype": "float16 on CUDA, else float32",
    }


def test_run_settings_are_immutable_and_bad_stored_settings_are_named():
    settings = RunSettings.from_spec(EVAL_GRID)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1
    with pytest.raises(TypeError):
        settings.weights["clip"] = "another"
    with pytest.raises(TypeError):
        settings.variant_configs["hyper/baseline"]["num_steps"] = 8
    stored = settings.to_json()
    stored["prompts"]["realistic"].append("changed")  # a copy: the settings do not change
    assert list(settings.prompts["realistic"]) == sorted(load_prompts("realistic"))[:2]
    with pytest.raises(RunFolderError, match="lack seed, variant_configs"):
        RunSettings.from_json({k: v for k, v in stored.items() if k not in ("seed", "variant_configs")})
    with pytest.raises(RunFolderError, match="format 2"):
        RunSettings.from_json({**stored, "format": 2})
    with pytest.raises(RunFolderError, match="identities"):
        RunSettings.from_json({**stored, "identities": ["astronaut"]})


@pytest.mark.parametrize(
    "change,message",
    [
        ({"variants": ()}, "variants is empty"),
        ({"variants": ("baseline", "fastface")}, r"unknown variants \['fastface'\]"),
        ({"models": ("sdxl",)}, r"unknown models \['sdxl'\]"),
        ({"prompt_sets": ()}, "prompt_sets is empty"),
        ({"adapter": "faceid-plus"}, "unknown adapter 'faceid-plus'; valid: faceid, faceid-plusv2"),
        ({"mode": "huge"}, "unknown mode 'huge'"),
        ({"prompts_per_set": 0}, "prompts_per_set must be a positive integer"),
        ({"size": 60}, "size must be a multiple of 8"),
        ({"seed": True}, "seed must be an integer"),
        ({"num_steps": 2, "variants": ("fastface-am2",)}, "written for 4 steps, but num_steps=2"),
    ],
)
def test_eval_spec_refuses_bad_input_before_any_work(change, message):
    with pytest.raises(ConfigError, match=message):
        EvalSpec(**{**EVAL_GRID.__dict__, **change})
