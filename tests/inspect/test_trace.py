"""The tracer: what it records from a pipeline run, token lookup, query errors, restoring the
pipeline, stock pipelines. The store's aggregation is in test_store.py, the figures in test_plots.py."""

import pytest
import torch
from conftest import random_id_inputs
from diffusers import StableDiffusionXLPipeline
from traced_runs import BLOCKS, PROMPT, run

import fastface_lite as ff
from fastface_lite.errors import NothingRecorded
from fastface_lite.inspect.trace import trace
from fastface_lite.method.am import adain, manipulate


def processors_and_hooks(pipe):
    return (
        dict(pipe.unet.attn_processors),
        dict(pipe.unet._forward_pre_hooks),
        dict(pipe.text_encoder._forward_pre_hooks),
    )


def assert_unchanged(pipe, before):
    procs, unet_hooks, text_hooks = processors_and_hooks(pipe)
    assert procs.keys() == before[0].keys() and all(procs[k] is before[0][k] for k in procs)
    assert unet_hooks == before[1] and text_hooks == before[2]


def recorded(tr, layer, step, branch, stage) -> bool:
    """Whether the trace holds ID maps of ``layer`` at ``step`` for ``branch``."""
    try:
        tr.maps(kind="id", block=layer, step=step, branch=branch, stage=stage)
    except NothingRecorded:
        return False
    return True


# -- probabilities as recorded ------------------------------------------------------------------
def test_text_maps_are_probabilities_per_layer_and_after_aggregation(tiny_faceid):
    sums = []

    def check(layer, kind, stage, context, probs):
        if kind == "text":
            assert probs.shape[-1] == 77
            sums.append(probs.sum(-1))  # (B, heads, N): one per position and head

    with trace(tiny_faceid, on_layer=check) as tr:
        run(tiny_faceid)
    assert len(sums) == 17 * 4  # every attn2 layer at every step
    for s in sums:
        torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)
    # heads/images/layers averaged and resized with convex weights: still 1 per pixel
    total = tr.maps(kind="text", token=list(range(77)), block="down_blocks.2", step=2).values * 77
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["am1", "fastface-am2"])
def test_raw_and_used_follow_ip_attention_maps(tiny_faceid, preset):
    cfg = ff.FastFaceConfig.preset(preset).attention
    # per layer, heads and images kept, at the native grid of down_blocks.1: the store holds the
    # layer's probabilities exactly, so AM can be recomputed from the recorded raw maps
    with trace(tiny_faceid, text=False, group="layer", keep_heads=True, per_image=True) as tr:
        run(tiny_faceid, preset)
    target = next(b for b in tr.blocks if b.startswith("down_blocks.1"))
    untouched = [b for b in tr.blocks if b.startswith("mid_block")]
    heads = tiny_faceid.unet.get_submodule(target).heads

    def layer_probs(layer, step, stage):
        """(B, heads, N, 4) rebuilt from the store, branch-major as the UNet batch."""
        branches = [b for b in tr.branches if recorded(tr, layer, step, b, stage)]
        per_branch = [
            torch.stack(
                [
                    torch.stack(
                        [
                            tr.maps(
                                kind="id", token=t, block=layer, step=step, branch=b, stage=stage, image=0, head=h
                            ).values.flatten()
                            for t in range(4)
                        ],
                        -1,
                    )
                    for h in range(heads)
                ]
            )
            for b in branches
        ]
        return torch.stack(per_branch)

    for step in tr.steps:
        raw, used = layer_probs(target, step, "raw"), layer_probs(target, step, "used")
        expected = manipulate(raw, cfg.target_tokens, cfg.transforms, cfg.constants_at("down", step), cfg.invert_token0)
        if cfg.adain_weight is not None:
            expected = cfg.adain_weight * expected + (1 - cfg.adain_weight) * adain(expected, raw)
        torch.testing.assert_close(used, expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(used, raw)
        for layer in untouched:  # mid is not a target part: AM leaves it alone
            assert torch.equal(layer_probs(layer, step, "raw"), layer_probs(layer, step, "used"))


def test_am_off_records_equal_raw_and_used(tiny_faceid):
    with trace(tiny_faceid, text=False) as tr:
        run(tiny_faceid, "dcg")  # DCG only: no attention manipulation anywhere
    for block in tr.blocks:
        assert torch.equal(
            tr.maps(kind="id", block=block, stage="raw").values, tr.maps(kind="id", block=block, stage="used").values
        )


# -- token lookup -------------------------------------------------------------------------------
def test_word_lookup_matches_the_tokenizer(tiny_faceid):
    with trace(tiny_faceid, id=False) as tr:
        run(tiny_faceid, "baseline")
    tok = tiny_faceid.tokenizer
    ids = tok(PROMPT).input_ids
    word_ids = tok.convert_tokens_to_ids(tok.tokenize("photorealistic"))
    assert len(word_ids) == 2
    start = next(i for i in range(len(ids)) if ids[i : i + 2] == word_ids)
    assert tr.token_positions("photorealistic") == [start, start + 1]
    assert tr.token_positions("person") == [ids.index(tok.convert_tokens_to_ids("person</w>"))]
    assert tr.token_positions("a") == [1, 4, 8]  # every occurrence
    # the second encoder's tokenizer puts the word at the same positions
    assert tiny_faceid.tokenizer_2(PROMPT).input_ids[start : start + 2] == word_ids
    assert tr.words == PROMPT.split()
    assert tr.prompt_tokens[0] == (0, "<|startoftext|>") and tr.prompt_tokens[-1] == (len(ids) - 1, "<|endoftext|>")
    word = tr.maps(kind="text", token="photorealistic", block="up_blocks.0", step=1).values
    parts = [tr.maps(kind="text", token=p, block="up_blocks.0", step=1).values for p in (start, start + 1)]
    torch.testing.assert_close(word, (parts[0] + parts[1]) / 2)
    with pytest.raises(ValueError, match=r"'dog' is not in the prompt; its words are \['a', 'photo'"):
        tr.maps(kind="text", token="dog")


def test_queries_explain_mistakes(tiny_faceid):
    with trace(tiny_faceid, stages=("used",), text_tokens=["person", 2], id_tokens=[0, 1]) as tr:
        run(tiny_faceid, "baseline")  # baseline evaluates only the text+id branch
    assert tr.branches == ["text+id"] and tr.id_tokens == [0, 1]
    # asked wrongly, whatever was recorded: ValueError
    with pytest.raises(ValueError, match="needs a token"):
        tr.maps(kind="text")
    with pytest.raises(ValueError, match="selects no token"):
        tr.maps(kind="id", token=[])
    with pytest.raises(ValueError, match="kind must be"):
        tr.maps(kind="face")
    with pytest.raises(ValueError, match="'dog' is not in the prompt"):
        tr.maps(kind="text", token="dog")
    # asked for what this trace did not record: NothingRecorded, saying what it did record
    with pytest.raises(NothingRecorded, match="branch 'uncond' was not recorded"):
        tr.maps(kind="id", branch="uncond")
    with pytest.raises(NothingRecorded, match="stage 'raw' was not recorded"):
        tr.maps(kind="id", stage="raw")
    with pytest.raises(NothingRecorded, match="recorded: \\['down_blocks.1'"):
        tr.maps(kind="id", block="down_blocks.0")
    with pytest.raises(NothingRecorded, match="per_image=True"):
        tr.maps(kind="id", image=0)
    with pytest.raises(NothingRecorded, match=r"ID tokens \[3\] were not recorded; recorded: \[0, 1\]"):
        tr.maps(kind="id", token=[0, 3])
    with pytest.raises(NothingRecorded, match=r"text positions \[6\] were not recorded"):
        tr.maps(kind="text", token="reading")
    assert tr.maps(kind="text", token=["person", 2]).token == "'person' + #2 'photo'"
    with trace(tiny_faceid, text=False) as ids_only:
        run(tiny_faceid, "baseline")
    with pytest.raises(NothingRecorded, match="no text maps were recorded"):
        ids_only.maps(kind="text", token="person")


# -- restore, stock pipelines ------------------------------------------------------------------
def test_pipeline_unchanged_after_exit_and_after_an_exception(tiny_faceid):
    before = processors_and_hooks(tiny_faceid)
    expected = run(tiny_faceid, "fastface-am1").images
    with trace(tiny_faceid) as tr:
        traced = run(tiny_faceid, "fastface-am1").images
    assert_unchanged(tiny_faceid, before)
    torch.testing.assert_close(traced, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)

    def explode(pipe, i, t, kwargs):
        if i == 1:
            raise KeyboardInterrupt("user stopped the run")
        return kwargs

    with pytest.raises(KeyboardInterrupt):
        with trace(tiny_faceid) as tr:
            run(tiny_faceid, "fastface-am1", callback_on_step_end=explode)
    assert_unchanged(tiny_faceid, before)
    assert tr.steps == [0, 1]  # what ran before the interruption stays queryable
    assert torch.equal(run(tiny_faceid, "fastface-am1").images, expected)


@pytest.mark.parametrize("guidance_scale,branches", [(5.0, ["uncond", "cond"]), (1.0, ["cond"])])
def test_stock_pipeline_with_and_without_cfg(tiny_faceid, guidance_scale, branches):
    stock = StableDiffusionXLPipeline(**tiny_faceid.components)
    stock.set_progress_bar_config(disable=True)
    embeds = random_id_inputs(tiny_faceid).image_embeds[0]  # cat([zeros, identity])
    if guidance_scale == 1.0:
        embeds = embeds.chunk(2)[1]  # without CFG diffusers reads the positive half only
    before = processors_and_hooks(stock)

    def call():
        return stock(
            prompt=PROMPT,
            ip_adapter_image_embeds=[embeds],
            guidance_scale=guidance_scale,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).images

    expected = call()
    with trace(stock) as tr:
        traced = call()
    assert_unchanged(stock, before)
    torch.testing.assert_close(traced, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)
    assert tr.branches == branches and tr.steps == [0, 1, 2, 3] and tr.blocks == BLOCKS
    assert [round(tr.timesteps[s]) for s in tr.steps] == [999, 749, 499, 249]
    total = tr.maps(kind="text", token=list(range(77)), branch=branches[0]).values * 77
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)
    if len(branches) == 2:  # zero vs real identity: the branches attend differently
        uncond, cond = (tr.maps(kind="id", token=0, branch=b).values for b in branches)
        assert not torch.allclose(uncond, cond)
    assert tr.maps(kind="text", token="reading").values.shape == (16, 16)
