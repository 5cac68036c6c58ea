"""Device handling under model CPU offload, checked on a CPU-only machine.

Under `pipe.enable_model_cpu_offload()` (notebook 01 on a 16 GB GPU) the weights rest on the CPU
and accelerate's hooks move a whole component to the GPU only while its `forward` runs; diffusers'
`pipe._execution_device` names the GPU while `pipe.unet.device` says CPU. Two things follow:
inputs built for a call must sit on the execution device, and helpers that call UNet submodules
directly (past the hooks) must compute where those submodules' weights are.

A CPU-only machine has one real device, so the "other" device is torch's `meta` device (tensors
with shapes and no data): a pipeline whose execution device is `meta`, and a projection layer or
attention whose weights were moved to `meta` while the inputs sit on the CPU. Either mix raises
torch's device-mismatch error wherever a device is taken from the wrong place.
"""

import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.sdxl.adapter import projection_layer
from fastface_lite.workbook.anatomy import decoupled_attention, id_token_parts

META = torch.device("meta")


def executing_elsewhere(pipe):
    """A pipeline over `pipe`'s components whose hooks would run everything on `meta`, while the
    weights stay where they are (as offload leaves them on the CPU)."""

    class Offloaded(type(pipe)):
        @property
        def _execution_device(self):
            return META

    return Offloaded(**pipe.components)


@pytest.mark.parametrize("adapter", ["faceid", "faceid-plusv2"])
def test_id_inputs_follow_the_execution_device_not_the_unet(adapter, tiny_faceid, tiny_plus):
    pipe = executing_elsewhere(tiny_faceid if adapter == "faceid" else tiny_plus)
    assert pipe.unet.device.type == "cpu" and pipe._execution_device == META
    inputs = random_id_inputs(pipe)
    on_cpu = random_id_inputs(tiny_faceid if adapter == "faceid" else tiny_plus)
    assert [e.device for e in inputs.image_embeds] == [META]
    assert inputs.image_embeds[0].shape == on_cpu.image_embeds[0].shape
    if adapter == "faceid-plusv2":  # the CLIP crop ran on the encoder's own device, then moved
        assert inputs.clip_embeds.device == META and inputs.clip_embeds.shape == on_cpu.clip_embeds.shape
    else:
        assert inputs.clip_embeds is None


@pytest.fixture
def resting_elsewhere():
    """A fresh tiny Plus v2 pipeline (its modules get moved): ID inputs built on the CPU, where
    calls execute, then the projection layer and one attn2 moved to `meta`, as offload leaves
    submodules on another device than the inputs."""
    pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)
    inputs = random_id_inputs(pipe)
    attn = pipe.unet.get_submodule("up_blocks.0.attentions.0.transformer_blocks.0.attn2")
    projection_layer(pipe).to(META)
    attn.to(META)
    return pipe, inputs, attn


def test_id_token_parts_compute_where_the_projection_rests(resting_elsewhere):
    pipe, inputs, _ = resting_elsewhere
    parts = id_token_parts(pipe, inputs)
    assert {parts.mlp.device, parts.resampler.device, parts.tokens.device} == {META}
    assert parts.tokens.shape == (1, 4, 64) and parts.clip_states.shape == (1, 257, 32)
    assert projection_layer(pipe).clip_embeds is None  # left as found


def test_decoupled_attention_computes_where_the_attention_rests(resting_elsewhere):
    _, _, attn = resting_elsewhere
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 16, attn.to_q.in_features, generator=g)  # CPU, the "execution device"
    text = torch.randn(1, 77, attn.to_k.in_features, generator=g)
    ids = torch.randn(1, 4, attn.to_k.in_features, generator=g)
    result = decoupled_attention(attn, hidden, text, ids)
    assert result.output.device == META and result.output.shape == (1, 16, attn.to_q.out_features)
    assert result.id_probs.shape == (1, attn.heads, 16, 4)


def test_a_traced_fastface_run_under_model_cpu_offload_hooks(tiny_plus):
    """accelerate's offload hooks for real (with the CPU as the execution device, the only one
    here): the ID inputs, the FastFace loop, the recorder and the anatomy helpers all run through
    them and give what the same pipeline gives without hooks. Moving weights to a GPU and back is
    what this machine cannot show (a CUDA run does)."""
    pipe = ff.tiny_pipeline(adapter="faceid-plusv2", seed=0)
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook") and pipe._execution_device.type == "cpu"
    cfg = ff.FastFaceConfig.preset("fastface-am2")

    def run(p):
        inputs = random_id_inputs(p)
        with ff.trace(p) as recorded:
            out = p(
                prompt="a photo of a person",
                fastface=cfg,
                height=64,
                width=64,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
                **inputs.call_kwargs(),
            )
        return out, recorded, id_token_parts(p, inputs).tokens

    hooked, plain = run(pipe), run(tiny_plus)
    # same weights, same device, same kernels: only the hooks differ
    torch.testing.assert_close(torch.from_numpy(hooked[0].images), torch.from_numpy(plain[0].images), rtol=0, atol=1e-6)
    assert hooked[0].unet_evaluations == plain[0].unet_evaluations == 12
    recorded, reference = hooked[1].store, plain[1].store
    assert recorded.blocks == reference.blocks and recorded.steps == reference.steps == [0, 1, 2, 3]
    assert recorded.rows("id") == reference.rows("id") > 0 and recorded.nbytes == reference.nbytes
    torch.testing.assert_close(hooked[2], plain[2], rtol=0, atol=1e-6)
