"""What the tests of fastface_lite.inspect trace: one prompt, one seeded FastFace run on a tiny pipeline."""

import torch
from conftest import random_id_inputs

import fastface_lite as ff

PROMPT = "a photo of a person reading in a photorealistic park"  # "photorealistic" is 2 BPE tokens
BLOCKS = ["down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0", "up_blocks.1"]  # the tiny UNet's attn2 blocks


def run(pipe, preset="fastface-am2", output_type="latent", **kw):
    """One 4-step run of ``preset`` (a variant name or a FastFaceConfig) with seed 0 and random ID inputs."""
    cfg = preset if isinstance(preset, ff.FastFaceConfig) else ff.FastFaceConfig.preset(preset)
    return pipe(
        prompt=PROMPT,
        fastface=cfg,
        generator=torch.Generator().manual_seed(0),
        output_type=output_type,
        **random_id_inputs(pipe).call_kwargs(),
        **kw,
    )
