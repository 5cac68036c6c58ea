"""Pipeline callbacks and counts at their boundaries, on the tiny FaceID pipeline.

* what ``callback_on_step_end`` may return (None, or a dict of the tensors it was given, with
  only ``latents`` replaced by a float tensor of their shape): anything else is an InputError
  naming the callback and the key, and the pipeline is left as it was found;
* the callback itself and its tensor inputs, ``num_images_per_prompt`` and ``latents``: refused
  before any UNet evaluation.

Table-driven: each case is the argument(s), and words the message must contain."""

from __future__ import annotations

import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.errors import InputError

from .refusals import refused_before_any_unet_work

PROMPT = "a photo of a person reading"


def call(pipe, **kwargs):
    """A 4-step dcg call at 64 px with random ID inputs, latents out; ``kwargs`` override."""
    base = {
        "prompt": PROMPT,
        "height": 64,
        "width": 64,
        "fastface": ff.FastFaceConfig.preset("dcg"),
        "generator": torch.Generator().manual_seed(0),
        "output_type": "latent",
        **random_id_inputs(pipe).call_kwargs(),
    }
    return pipe(**{**base, **kwargs})


def halve_latents(pipe, i, t, tensors):
    return {"latents": tensors["latents"][:, :2]}


def latents_as_numpy(pipe, i, t, tensors):
    return {"latents": tensors["latents"].numpy()}


# (callback, tensor inputs, words the message must contain)
RETURNS = [
    (lambda p, i, t, k: k["latents"], ["latents"], ["returned Tensor", "must return a dict"]),
    (lambda p, i, t, k: (k,), ["latents"], ["returned tuple", "must return a dict"]),
    (lambda p, i, t, k: {"latents": None}, ["latents"], ["'latents' as NoneType", "float tensor"]),
    (halve_latents, ["latents"], ["halve_latents", "'latents' as shape (1, 2, 8, 8)", "(1, 4, 8, 8)"]),
    (latents_as_numpy, ["latents"], ["latents_as_numpy", "'latents' as ndarray"]),
    (lambda p, i, t, k: {"latents": k["latents"].long()}, ["latents"], ["torch.int64", "float tensor"]),
    (lambda p, i, t, k: {"prompt_embeds": 0}, ["latents"], ["key 'prompt_embeds'", "not given", "['latents']"]),
    (
        lambda p, i, t, k: {**k, "noise_pred": k["noise_pred"] * 2},
        ["latents", "noise_pred"],
        ["replaced 'noise_pred'", "only 'latents' can be replaced"],
    ),
    (lambda p, i, t, k: {"noise_pred": k["latents"]}, ["latents"], ["key 'noise_pred'", "not given"]),
]


@pytest.mark.parametrize(("callback", "inputs", "words"), RETURNS, ids=[c[2][0] for c in RETURNS])
def test_a_callback_returning_what_it_may_not_is_named(tiny_faceid, callback, inputs, words):
    before = dict(tiny_faceid.unet.attn_processors)
    with pytest.raises(InputError) as info:
        call(tiny_faceid, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=inputs)
    message = str(info.value)
    assert message.startswith("callback_on_step_end "), message
    for word in words:
        assert word in message, (word, message)
    assert dict(tiny_faceid.unet.attn_processors) == before  # the call's processors were removed


def test_what_a_callback_may_return(tiny_faceid):
    """None and the tensors handed back keep the result; new latents are used from that step on,
    moved to the latents' dtype; a callback given only noise_pred keeps the latents."""
    plain = call(tiny_faceid).images
    for callback, inputs in [
        (lambda p, i, t, k: None, ["latents"]),
        (lambda p, i, t, k: k, ["latents", "noise_pred"]),
        (lambda p, i, t, k: {}, ["latents"]),
        (lambda p, i, t, k: k, ["noise_pred"]),
    ]:
        out = call(tiny_faceid, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=inputs).images
        torch.testing.assert_close(out, plain, rtol=0, atol=0)  # the same computation, nothing replaced
    as_double = call(tiny_faceid, callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"].double()})
    assert as_double.images.dtype == plain.dtype
    torch.testing.assert_close(as_double.images, plain, rtol=0, atol=0)  # float32 -> float64 -> float32 is exact
    zeroed = call(tiny_faceid, callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0})
    assert not torch.equal(zeroed.images, plain)


# (call arguments, words the message must contain): refused before any UNet evaluation
BEFORE_WORK = [
    ({"callback_on_step_end": "print"}, ["callback_on_step_end must be a function", "str"]),
    ({"callback_on_step_end_tensor_inputs": "latents"}, ["must be a list of names", "'latents'"]),
    ({"callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"]}, ["['prompt_embeds']", "valid"]),
    ({"num_images_per_prompt": 0}, ["num_images_per_prompt", ">= 1", "got 0"]),
    ({"num_images_per_prompt": -1}, ["num_images_per_prompt", ">= 1"]),
    ({"num_images_per_prompt": 2.5}, ["num_images_per_prompt", "integer", "not rounded"]),
    ({"num_images_per_prompt": "2"}, ["num_images_per_prompt", "integer", "'2'"]),
    ({"num_images_per_prompt": True}, ["num_images_per_prompt", "integer", "True"]),
    ({"latents": torch.zeros(3, 4, 8, 8)}, ["latents", "(3, 4, 8, 8)", "(1, 4, 8, 8)"]),
    ({"latents": torch.zeros(2, 4, 8, 8), "num_images_per_prompt": 3}, ["(2, 4, 8, 8)", "(3, 4, 8, 8)", "3 images"]),
    ({"latents": torch.zeros(1, 4, 16, 16)}, ["(1, 4, 16, 16)", "64x64 px"]),
    ({"latents": torch.zeros(1, 4, 8, 8).numpy()}, ["latents must be a float torch tensor", "ndarray"]),
]


@pytest.mark.parametrize(("kwargs", "words"), BEFORE_WORK, ids=[w[0] for _, w in BEFORE_WORK])
def test_callbacks_counts_and_latents_are_refused_before_any_work(tiny_faceid, kwargs, words):
    refused_before_any_unet_work(tiny_faceid, InputError, lambda: call(tiny_faceid, **kwargs), words)


def test_images_per_prompt_share_the_one_identity(tiny_faceid):
    """num_images_per_prompt=2 (also given as 2.0) makes two images of one call, each with the
    same identity embedding: image k is what a one-image call gives with image k's starting noise."""
    two = call(tiny_faceid, num_images_per_prompt=2).images
    assert two.shape[0] == 2
    torch.testing.assert_close(call(tiny_faceid, num_images_per_prompt=2.0).images, two, rtol=0, atol=0)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    both = call(tiny_faceid, num_images_per_prompt=2, latents=noise).images
    one = call(tiny_faceid, latents=noise[1:]).images
    # one call of batch 2 against one of batch 1: other batch shapes, so a stated tolerance
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-5)
