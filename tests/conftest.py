"""Shared fixtures: tiny offline pipelines (built once per session) and ID inputs for them."""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FASTFACE_MODE", "tiny")

# The real-browser check needs chromium and a JupyterLab server: `make browser-test` runs it
# (pytest tests/browser); a plain `pytest tests` leaves it out.
collect_ignore = ["browser"]


def _quiet():
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


def _tiny(adapter):
    import fastface_lite as ff

    _quiet()
    pipe = ff.tiny_pipeline(adapter=adapter, seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_faceid():
    return _tiny("faceid")


@pytest.fixture(scope="session")
def tiny_plus():
    return _tiny("faceid-plusv2")


def random_id_inputs(pipe, seed=1):
    """ID inputs from a random unit embedding and a random face-sized crop."""
    from fastface_lite.sdxl.adapter import adapter_id_dim, id_inputs

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal(adapter_id_dim(pipe)).astype(np.float32)
    emb /= np.linalg.norm(emb)
    crop = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    return id_inputs(pipe, emb, crop)
