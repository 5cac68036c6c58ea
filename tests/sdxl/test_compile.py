"""pipe.compile(): persistent processors, fused FaceID LoRA, compiled UNet; uncompile undoes it.

The tests compile with backend="eager": dynamo captures the UNet's graphs exactly as for inductor
(graph breaks, guards on the step), but runs them with eager kernels, so a tiny UNet compiles in
seconds on a loaded CPU. Inductor itself (C++ code generation, minutes here) is timed by
``bench/run.py``, not tested. Tolerances: the fused LoRA computes x (W + s B A)^T instead of
x W^T + s (x A^T) B^T, the same math rounded differently, hence 1e-4 (float32 latents of unit scale).
"""

import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.sdxl.processor import FastFaceAttnProcessor

PROMPT = "a photo of a person reading in a park"
TOL = dict(rtol=1e-4, atol=1e-4)


def run(pipe, cfg, inputs):
    return pipe(
        prompt=PROMPT,
        fastface=cfg,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        **inputs.call_kwargs(),
    ).images


@pytest.fixture(scope="module")
def fresh():
    """A pipeline of its own: compiling changes it until uncompile."""
    pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_compiled_call_matches_eager_and_uncompile_restores_everything(fresh):
    torch._dynamo.reset()
    inputs = random_id_inputs(fresh)
    cfg = ff.FastFaceConfig.preset("am1", num_steps=2, faceid_lora_scale=0.7)  # AM on in both steps
    processors = dict(fresh.unet.attn_processors)
    weights = {k: v.clone() for k, v in fresh.unet.state_dict().items()}
    eager = run(fresh, cfg, inputs)

    fresh.compile(cfg, backend="eager")
    try:
        installed = fresh.unet.attn_processors
        assert sum(isinstance(p, FastFaceAttnProcessor) for p in installed.values()) > 0  # persistent
        assert fresh.unet._compiled_call_impl is not None
        compiled_out = run(fresh, cfg, inputs)
        again = run(fresh, cfg, inputs)  # the graphs are reused; no state carried between calls
        with pytest.raises(ff.ConfigError, match="faceid_lora_scale=1.0.*fused at 0.7"):
            run(fresh, cfg.replace(faceid_lora_scale=1.0), inputs)
    finally:
        fresh.uncompile()
    torch.testing.assert_close(compiled_out, eager, **TOL)
    torch.testing.assert_close(again, compiled_out, **TOL)

    after = fresh.unet.attn_processors
    assert after.keys() == processors.keys() and all(after[k] is processors[k] for k in after)
    assert fresh.unet._compiled_call_impl is None
    for name, value in fresh.unet.state_dict().items():  # unfused: the weights are back within rounding
        torch.testing.assert_close(value, weights[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(run(fresh, cfg, inputs), eager, rtol=1e-5, atol=1e-5)  # the LoRA weight too


def test_compile_is_refused_twice_and_with_cuda_graphs_off_cuda(fresh):
    with pytest.raises(ff.ConfigError, match="CUDA graphs"):
        fresh.compile("am1", mode="reduce-overhead")
    assert fresh._compiled_state is None and fresh.unet._compiled_call_impl is None
    with fresh.compiled("am1", backend="eager"):
        with pytest.raises(ff.ConfigError, match="already compiled"):
            fresh.compile("am1", backend="eager")
    assert fresh._compiled_state is None
    with pytest.raises(ff.ConfigError, match="not compiled"):
        fresh.uncompile()
