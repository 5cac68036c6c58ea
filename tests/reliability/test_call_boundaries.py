"""Pipeline calls, ID inputs and trace queries at their boundaries, on the tiny pipelines.

Table-driven: each case is the bad argument(s), the error class, and words the message must
contain. A pipeline call must refuse before any work: a forward hook counts UNet evaluations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.errors import ConfigError, InputError, NothingRecorded
from fastface_lite.inspect.trace import trace
from fastface_lite.sdxl.adapter import id_inputs
from fastface_lite.sdxl.call_inputs import check_id_inputs

from .refusals import refused_before_any_unet_work

PROMPT = "a photo of a person reading"


def ids(pipe):
    return random_id_inputs(pipe).image_embeds[0]  # (2, 1, 128) = cat([zeros, identity])


PIPELINE_CALLS = [
    (lambda e: {"fastface": {"model": "hyper"}}, ConfigError, ["fastface=", "dict", "from_dict"]),
    (lambda e: {"fastface": 3}, ConfigError, ["fastface=", "variant name"]),
    (lambda e: {"fastface": "fastface-am3"}, ConfigError, ["'fastface-am3'", "fastface-am2"]),
    (lambda e: {"ip_adapter_image_embeds": [torch.zeros(2, 1, 512)]}, InputError, ["512-d", "128-d"]),
    (
        lambda e: {"ip_adapter_image_embeds": [torch.cat([e[:1], e[1:], torch.zeros_like(e[:1])])]},
        InputError,
        ["ip_adapter_image_embeds[0]", "3 rows", "cat([zeros, identity])"],
    ),
    (lambda e: {"ip_adapter_image_embeds": [e[1:]]}, InputError, ["(1, 1, 128)", "2 rows"]),
    (lambda e: {"ip_adapter_image_embeds": [e * float("nan")]}, InputError, ["ip_adapter_image_embeds[0]", "NaN"]),
    (lambda e: {"ip_adapter_image_embeds": [e * float("inf")]}, InputError, ["infinite"]),
    (lambda e: {"ip_adapter_image_embeds": [e * 1e30]}, InputError, ["values up to", "unit-norm"]),
    (lambda e: {"ip_adapter_image_embeds": e}, InputError, ["must be a list", "one tensor per IP adapter"]),
    (lambda e: {"ip_adapter_image_embeds": [e, e]}, InputError, ["2 tensors for 1"]),
    (lambda e: {"ip_adapter_image_embeds": [e.numpy()]}, InputError, ["torch tensor", "ndarray"]),
    (lambda e: {"ip_adapter_image_embeds": [(e * 10).long()]}, InputError, ["float tensor"]),
    (lambda e: {"fastface": ff.FastFaceConfig.preset("dcg"), "num_inference_steps": 2}, ConfigError, ["4 steps"]),
    (
        lambda e: {"fastface": ff.FastFaceConfig.preset("dcg"), "num_inference_steps": 4.5},
        ConfigError,
        ["num_inference_steps", "4.5", "not rounded"],
    ),
    (lambda e: {"fastface": None, "num_inference_steps": "4"}, ConfigError, ["num_inference_steps", "'4'"]),
    (
        lambda e: {"fastface": ff.FastFaceConfig.preset("dcg"), "num_inference_steps": True},
        ConfigError,
        ["num_inference_steps", "True"],
    ),
]


@pytest.mark.parametrize(("change", "error", "words"), PIPELINE_CALLS, ids=[c[2][0] for c in PIPELINE_CALLS])
def test_pipeline_call_refuses_before_any_work(tiny_faceid, change, error, words):
    kwargs = {"prompt": PROMPT, "output_type": "latent", **random_id_inputs(tiny_faceid).call_kwargs()}
    kwargs.update(change(ids(tiny_faceid)))
    refused_before_any_unet_work(tiny_faceid, error, lambda: tiny_faceid(**kwargs), words)


def test_a_variant_name_and_float64_embeddings_are_accepted(tiny_faceid):
    """fastface= takes a variant name; embeddings of another dtype are moved to the pipeline's."""
    inputs = random_id_inputs(tiny_faceid)

    def call(fastface, embeds):
        generator = torch.Generator().manual_seed(0)
        return tiny_faceid(
            prompt=PROMPT, fastface=fastface, generator=generator, output_type="latent", ip_adapter_image_embeds=embeds
        ).images

    by_name = call("fastface-am2", [inputs.image_embeds[0].double()])
    by_config = call(ff.FastFaceConfig.preset("fastface-am2"), inputs.image_embeds)
    torch.testing.assert_close(by_name, by_config, rtol=0, atol=1e-6)  # same float32 inputs after the cast


def test_id_embeddings_on_another_device_are_moved_not_only_cast(tiny_plus):
    """What the call hands the UNet sits on the execution device (default: the UNet's) in the
    adapter's dtype, whatever the caller's tensors were on. A CPU-only machine has one real device,
    so torch's `meta` device (shapes without data) stands in for the other one."""
    inputs = random_id_inputs(tiny_plus)
    adapter_dtype = next(tiny_plus.unet.encoder_hid_proj.parameters()).dtype
    unet = SimpleNamespace(device=torch.device("meta"), encoder_hid_proj=tiny_plus.unet.encoder_hid_proj)
    given = [inputs.image_embeds[0].double()], inputs.clip_embeds.double()
    for device, expected in ((None, unet.device), ("meta", torch.device("meta"))):
        (image_embeds,), clip_embeds = check_id_inputs(unet, *given, device=device)
        assert (
            (image_embeds.device, image_embeds.dtype)
            == (clip_embeds.device, clip_embeds.dtype)
            == (expected, adapter_dtype)
        )
        assert image_embeds.shape == inputs.image_embeds[0].shape and clip_embeds.shape == inputs.clip_embeds.shape


CROP = np.random.default_rng(0).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
ID_INPUTS = [
    ({"crop": CROP.astype(np.float32) / 255}, InputError, ["face crop 0", "float32", "uint8", "* 255"]),
    ({"crop": CROP[..., 0]}, InputError, ["face crop 0", "HxWx3"]),
    ({"crop": torch.from_numpy(CROP)}, InputError, ["face crop 0", "Tensor", "PIL image"]),
    ({"crop": [CROP, CROP]}, InputError, ["2 face crops for 1"]),
    ({"embedding": np.full(128, np.nan, np.float32)}, InputError, ["identity embedding", "NaN"]),
    ({"embedding": np.zeros(512, np.float32)}, InputError, ["(1, 512)", "128-d"]),
]


@pytest.mark.parametrize(("change", "error", "words"), ID_INPUTS, ids=[" ".join(c[2][:2]) for c in ID_INPUTS])
def test_id_inputs(tiny_plus, change, error, words):
    args = {"embedding": np.ones(128, np.float32) / np.sqrt(128), "crop": CROP, **change}
    with pytest.raises(error) as info:
        id_inputs(tiny_plus, args["embedding"], args["crop"])
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.fixture(scope="module")
def traced(tiny_faceid):
    with trace(tiny_faceid, steps=[1, 2]) as tr:
        tiny_faceid(
            prompt=PROMPT,
            fastface="fastface-am2",
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            **random_id_inputs(tiny_faceid).call_kwargs(),
        )
    return tr


TRACE_QUERIES = [
    ({"kind": "id", "step": [1, 9]}, NothingRecorded, ["[9]", "recorded steps: [1, 2]"]),
    ({"kind": "id", "step": [0, 1]}, NothingRecorded, ["[0]"]),
    ({"kind": "id", "step": "1"}, InputError, ["step", "'1'"]),
    ({"kind": "id", "step": 1.0}, InputError, ["step"]),
    ({"kind": "id", "block": ["up", "nowhere"]}, NothingRecorded, ["'nowhere'", "recorded"]),
    ({"kind": "text", "token": 80}, InputError, ["80", "0..76"]),
    ({"kind": "text", "token": -1}, InputError, ["-1", "0..76"]),
    ({"kind": "text", "token": [2, 77]}, InputError, ["77"]),
    ({"kind": "text", "token": "zebra"}, ValueError, ["'zebra' is not in the prompt"]),
    ({"kind": "id", "token": 7}, NothingRecorded, ["[7]"]),
]


@pytest.mark.parametrize(("query", "error", "words"), TRACE_QUERIES, ids=[str(q[0]) for q in TRACE_QUERIES])
def test_trace_queries_never_drop_what_was_asked(traced, query, error, words):
    with pytest.raises(error) as info:
        traced.maps(**query)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_a_query_of_recorded_steps_still_answers(traced):
    both = traced.maps("id", step=[1, 2]).values
    torch.testing.assert_close(both, (traced.maps("id", step=1).values + traced.maps("id", step=2).values) / 2)
