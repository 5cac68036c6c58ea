"""The grid of an evaluation run (fastface_lite.evaluation.grid): per-item seeds that do not depend
on order or sharding, and the canonical order of the items."""
from __future__ import annotations

import random
from collections import Counter

from fastface_lite.evaluation.grid import EvalSpec, RunSettings, build_items, item_seed, shard

from .tiny_runs import N_ITEMS, SPEC


def test_item_seeds_are_stable_and_do_not_depend_on_order_or_sharding():
    # SHA-256 of (seed, identity, prompt): pinned, so a change to Python's hash() or to the
    # grid's order can never move an image's noise
    assert item_seed(0, "astronaut", "a photo of a person") == 1824630376682420279
    assert item_seed(0, "grace_hopper", "a photo of a person") == 4869380854937372202
    assert item_seed(1, "astronaut", "a photo of a person") != item_seed(0, "astronaut", "a photo of a person")

    settings = RunSettings.from_spec(SPEC)
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
    other = RunSettings.from_spec(EvalSpec(identities=("astronaut", "grace_hopper"), prompt_sets=("stylistic", "realistic"),
                                           prompts_per_set=2, variants=("baseline", "fastface-am2"), size=64, mode="tiny"))
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

