"""The attention store: aggregation and queries, alone (fed tensors by hand) and behind a trace."""

import pytest
import torch
from traced_runs import BLOCKS, run

from fastface_lite.errors import NothingRecorded
from fastface_lite.inspect.store import AttentionStore, as_list, format_indices, matches_block, memory_bound
from fastface_lite.inspect.trace import trace
from fastface_lite.sdxl.processor import StepContext

FINE = "down_blocks.1.attentions.{}.transformer_blocks.0.attn2"  # two layers of one block, 4x4 grid
COARSE = "up_blocks.0.attentions.0.transformer_blocks.0.attn2"  # 2x2 grid


def context(step, names=("uncond", "cond")):
    return StepContext(
        step_index=step,
        timestep=1000.0 - 250 * step,
        branches=tuple(range(len(names))),
        branch_names=names,
        batch_per_branch=2,
    )


def probabilities(batch, heads, n, k, seed):
    """(batch, heads, n, k) rows that sum to 1 over the k tokens, as attention probabilities do."""
    return torch.randn(batch, heads, n, k, generator=torch.Generator().manual_seed(seed)).softmax(-1)


# -- the store alone ----------------------------------------------------------------------------
def test_a_store_fed_by_hand_averages_images_heads_layers_and_steps():
    store = AttentionStore()
    layer0, layer1 = [probabilities(4, 2, 16, 3, seed) for seed in (0, 1)]  # 2 branches x 2 images
    later = probabilities(4, 2, 16, 3, 2)
    store.add_text(FINE.format(0), context(0), layer0)
    store.add_text(FINE.format(1), context(0), layer1)
    store.add_text(FINE.format(0), context(1), later)
    assert store.blocks == ["down_blocks.1"] and store.steps == [0, 1] and store.branches == ["uncond", "cond"]
    assert store.resolution == (4, 4) and store.timesteps == {0: 1000.0, 1: 750.0} and store.rows("text") == 3

    def cond(probs, row):  # branch "cond" = batch items 2, 3; images and heads averaged, N -> 4x4
        return probs[2:4].mean((0, 1))[:, row].reshape(4, 4)

    step0 = store.maps("text", rows=1, block="down_blocks.1", step=0, branch="cond")
    torch.testing.assert_close(step0.values, (cond(layer0, 1) + cond(layer1, 1)) / 2)
    assert (step0.token, step0.block, step0.step, step0.branch) == ("rows 1", "down_blocks.1", "step 0", "cond")
    both = store.maps("text", rows=[0, 2], label="two tokens", branch="cond")  # steps weigh equally
    expected = (
        (cond(layer0, 0) + cond(layer0, 2) + cond(layer1, 0) + cond(layer1, 2)) / 4
        + (cond(later, 0) + cond(later, 2)) / 2
    ) / 2
    torch.testing.assert_close(both.values, expected)
    assert both.token == "two tokens" and both.step == "steps 0,1" and both.block == "all blocks"
    uncond = store.maps("text", rows=0, step=0, branch="uncond").values
    torch.testing.assert_close(uncond, (layer0[:2].mean((0, 1)) + layer1[:2].mean((0, 1)))[:, 0].reshape(4, 4) / 2)
    assert store.nbytes == memory_bound((4, 4), groups=1, steps=2, branches=2, text_tokens=3, id_tokens=0)


def test_a_coarser_layer_is_resized_and_rows_still_sum_to_one():
    store = AttentionStore()
    store.add_text(FINE.format(0), context(0), probabilities(4, 2, 16, 3, 0))  # sets the 4x4 resolution
    weights = torch.tensor([0.5, 0.3, 0.2])
    store.add_text(COARSE, context(0), weights.expand(4, 2, 4, 3).clone())  # the same weights at every position
    for row in range(3):  # a constant map stays that constant when resized
        coarse = store.maps("text", rows=row, block="up", branch="cond").values
        torch.testing.assert_close(coarse, torch.full((4, 4), float(weights[row])))
    total = store.maps("text", branch="cond").values * 3  # mean over all rows x 3 = the sum over rows
    torch.testing.assert_close(total, torch.ones(4, 4), atol=1e-6, rtol=0)


def test_a_non_square_latent_gives_each_layer_its_grid():
    store = AttentionStore()
    store.add_text(FINE.format(0), context(0), probabilities(4, 1, 24, 2, 0), latent_hw=(12, 8))  # 6x4
    store.add_text(COARSE, context(0), probabilities(4, 1, 6, 2, 1), latent_hw=(12, 8))  # 3x2
    assert store.resolution == (6, 4) and store.maps("text", block="up").values.shape == (6, 4)
    with pytest.raises(RuntimeError, match="not a halving"):
        store.add_text(COARSE, context(0), probabilities(4, 1, 5, 2, 1), latent_hw=(12, 8))


def test_id_stages_images_and_heads_are_kept_as_asked():
    store = AttentionStore(stages=("used",), per_image=True, keep_heads=True)
    raw = probabilities(4, 2, 16, 4, 0)
    used = raw * 2
    store.add_id(FINE.format(0), context(0), raw, used)
    torch.testing.assert_close(
        store.maps("id", rows=3, branch="uncond", image=1, head=0).values, used[1, 0, :, 3].reshape(4, 4)
    )
    torch.testing.assert_close(
        store.maps("id", rows=3, branch="uncond").values, used[:2].mean((0, 1))[:, 3].reshape(4, 4)
    )
    with pytest.raises(NothingRecorded, match="stage 'raw' was not recorded"):
        store.maps("id", stage="raw")
    am_off = AttentionStore()
    am_off.add_id(FINE.format(0), context(0), raw, raw)  # AM off: one tensor, both stages
    assert torch.equal(am_off.maps("id", stage="raw").values, am_off.maps("id", stage="used").values)
    assert am_off.nbytes == memory_bound((4, 4), 1, 1, 2, text_tokens=0, id_tokens=4, stages=2)


def test_malformed_queries_are_value_errors_and_missing_maps_are_nothing_recorded():
    store = AttentionStore()
    with pytest.raises(NothingRecorded, match="no text maps were recorded"):
        store.maps("text")
    store.add_text(FINE.format(0), context(1), probabilities(4, 2, 16, 3, 0))
    for bad, match in [
        (dict(kind="image"), "kind must be"),
        (dict(stage="late"), "stage must be"),
        (dict(rows=[]), "rows must be"),
        (dict(rows=-1), "rows must be"),
        (dict(image=-1), "give an index from 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            store.maps(**{"kind": "text", **bad})
    for missing, match in [
        (dict(kind="id"), "no id maps"),
        (dict(rows=[1, 3]), r"rows \[3\] were not recorded"),
        (dict(branch="id"), "branch 'id' was not recorded"),
        (dict(block="mid"), "block 'mid' was not recorded"),
        (dict(step=0), "nothing recorded for block=None, step=0"),
        (dict(image=0), "per_image=True"),
        (dict(head=0), "keep_heads=True"),
    ]:
        with pytest.raises(NothingRecorded, match=match):
            store.maps(**{"kind": "text", **missing})
    assert not issubclass(NothingRecorded, ValueError)  # callers tell the two apart by class
    with pytest.raises(ValueError, match="group must be"):
        AttentionStore(group="head")
    with pytest.raises(ValueError, match="stages must be"):
        AttentionStore(stages=())
    with pytest.raises(RuntimeError, match="4 text rows, but earlier maps had 3"):
        store.add_text(FINE.format(0), context(1), probabilities(4, 2, 16, 4, 0))


def test_selector_helpers():
    assert as_list(None) == [] and as_list("up") == ["up"] and as_list(range(2)) == [0, 1] and as_list((3,)) == [3]
    layer = FINE.format(1)
    assert matches_block(layer, "down") and matches_block(layer, "down_blocks.1") and matches_block(layer, layer)
    assert not matches_block(layer, "up") and not matches_block("down_blocks.10", "down_blocks.1")
    assert format_indices([3, 1, 2, 0]) == "0-3" and format_indices([0, 2]) == "0,2" and format_indices([1, 2]) == "1,2"


# -- behind a trace -----------------------------------------------------------------------------
def test_images_of_a_branch_are_averaged_or_kept_by_index(tiny_faceid):
    with trace(tiny_faceid, text=False, per_image=True) as each:
        run(tiny_faceid, "baseline", num_images_per_prompt=2)
    with trace(tiny_faceid, text=False) as averaged:
        run(tiny_faceid, "baseline", num_images_per_prompt=2)
    first, second = (each.maps(kind="id", token=0, image=i).values for i in (0, 1))
    assert not torch.allclose(first, second)  # different noise, different maps
    mean = averaged.maps(kind="id", token=0).values
    torch.testing.assert_close((first + second) / 2, mean)
    torch.testing.assert_close(each.maps(kind="id", token=0).values, mean)


def test_memory_bound_holds_on_a_4_step_run(tiny_faceid):
    with trace(tiny_faceid) as tr:
        run(tiny_faceid, "fastface-am2")  # 3 branches at all 4 steps
        first = tr.nbytes
        run(tiny_faceid, "fastface-am2")  # a second run accumulates in place
    assert tr.resolution == (16, 16) and tr.blocks == BLOCKS
    bound = memory_bound(tr.resolution, groups=5, steps=4, branches=3, text_tokens=77, id_tokens=4, stages=2)
    assert first == tr.nbytes == bound  # every (kind, block, step, branch) filled: the bound is reached
    assert bound == 4 * 16 * 16 * 5 * 4 * 3 * (77 + 2 * 4)  # about 5 MB, whatever the layer count
    # asking for less stores less: two words (3 tokens), one stage, two steps, one branch
    with trace(
        tiny_faceid, text_tokens=["person", "photorealistic"], stages=("used",), steps=[1, 2], branches=["text+id"]
    ) as small:
        run(tiny_faceid, "fastface-am2")
    assert small.nbytes == memory_bound((16, 16), 5, 2, 1, text_tokens=3, id_tokens=4, stages=1)
