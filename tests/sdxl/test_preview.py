"""The preview decoder: the tiny autoencoder decodes the same latents to images of the same size,
and the full VAE stays one call away."""

import numpy as np
import pytest
import torch
from conftest import random_id_inputs
from diffusers import AutoencoderTiny

import fastface_lite as ff
from fastface_lite.errors import ConfigError


@pytest.fixture(scope="module")
def latents():
    pipe = ff.tiny_pipeline(adapter="faceid", seed=0)
    out = pipe(
        prompt="a photo of a person",
        fastface=ff.FastFaceConfig.preset("baseline"),
        height=64,
        width=64,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **random_id_inputs(pipe).call_kwargs(),
    )
    return out.images  # (1, 4, 8, 8)


def test_preview_decodes_to_the_full_size_and_differs_from_the_vae(latents):
    pipe = ff.tiny_pipeline(adapter="faceid", seed=0, preview_decoder=True)
    assert type(pipe.preview_decoder) is AutoencoderTiny
    preview = pipe.latents_to_images(latents, "np", preview=True)
    full = pipe.latents_to_images(latents, "np")
    assert preview.shape == full.shape == (1, 64, 64, 3)
    assert np.isfinite(preview).all() and preview.min() >= 0 and preview.max() <= 1
    assert np.abs(preview - full).max() > 1e-3  # another network: another image
    # deterministic: the same latents, the same preview, also from a fresh pipeline
    again = ff.tiny_pipeline(adapter="faceid", seed=0, preview_decoder=True).latents_to_images(
        latents, "np", preview=True
    )
    np.testing.assert_allclose(again, preview, rtol=0, atol=1e-6)


def test_preview_without_a_decoder_says_how_to_load_one(latents):
    pipe = ff.tiny_pipeline(adapter="faceid", seed=0)
    assert pipe.preview_decoder is None
    with pytest.raises(ConfigError, match="preview_decoder=True"):
        pipe.latents_to_images(latents, "np", preview=True)
