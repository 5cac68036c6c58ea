"""Traces compose: any number of `ff.trace(pipe)` on one pipeline, entered and exited in any order,
each records what it was asked while it is active, and the pipeline is exactly as found once the
last one exits."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.errors import InputError
from fastface_lite.inspect.trace import trace

PROMPT = "a photo of a person reading"


def state(pipe):
    """Everything a trace may change on a pipeline: processors, hooks, attributes of the UNet."""
    unet = pipe.unet
    return (
        dict(unet.attn_processors),
        dict(unet._forward_pre_hooks),
        dict(pipe.text_encoder._forward_pre_hooks),
        set(vars(unet)),
    )


def run(pipe):
    return pipe(
        prompt=PROMPT,
        fastface=ff.FastFaceConfig.preset("fastface-am2"),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        **random_id_inputs(pipe).call_kwargs(),
    )


def test_nested_traces_both_record_the_same_maps(tiny_faceid):
    before = state(tiny_faceid)
    with trace(tiny_faceid) as outer, trace(tiny_faceid, text=False) as inner:
        run(tiny_faceid)
    assert state(tiny_faceid) == before
    assert outer.steps == inner.steps == [0, 1, 2, 3]
    torch.testing.assert_close(outer.maps("id").values, inner.maps("id").values, rtol=0, atol=0)
    assert outer.maps("text", token="reading").values.isfinite().all()


def test_an_exited_trace_stops_recording_and_the_last_exit_restores_the_pipeline(tiny_faceid):
    before = state(tiny_faceid)
    first, second = trace(tiny_faceid), trace(tiny_faceid, steps=[1])
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # exited in the order they were entered
    run(tiny_faceid)
    assert first.steps == [] and second.steps == [1]
    second.__exit__(None, None, None)
    assert state(tiny_faceid) == before
    run(tiny_faceid)  # a plain call works and nobody records it
    assert second.steps == [1] and first.steps == []


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_three_traces_exited_in_any_order(tiny_faceid, order):
    before = state(tiny_faceid)
    traces = [trace(tiny_faceid, steps=[i]) for i in range(3)]
    for t in traces:
        t.__enter__()
    for i in order:
        traces[i].__exit__(None, None, None)
        assert (state(tiny_faceid) == before) == (i == order[-1])
    assert state(tiny_faceid) == before


def test_a_trace_of_a_stock_pipeline_sharing_the_unet_is_refused_while_another_records(tiny_faceid):
    from diffusers import StableDiffusionXLPipeline

    stock = StableDiffusionXLPipeline(**tiny_faceid.components)  # the same UNet object
    before = state(tiny_faceid)
    with trace(tiny_faceid), pytest.raises(InputError, match="shares this UNet"), trace(stock):
        pass
    assert state(tiny_faceid) == before
