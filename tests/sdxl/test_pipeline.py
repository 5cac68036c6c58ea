"""FastFacePipeline: equivalences with diffusers, branch skipping, isolation, recovery, errors."""

import pytest
import torch
from conftest import random_id_inputs
from diffusers import StableDiffusionXLPipeline

import fastface_lite as ff
from fastface_lite.sdxl.processor import FastFaceAttnProcessor, StepContext, install

PROMPT = "a photo of a person reading in a park"


def run(pipe, preset="baseline", seed=0, inputs=None, **kw):
    cfg = preset if isinstance(preset, ff.FastFaceConfig) else ff.FastFaceConfig.preset(preset)
    inputs = inputs or random_id_inputs(pipe)
    return pipe(
        prompt=PROMPT,
        fastface=cfg,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **inputs.call_kwargs(),
        **kw,
    )


@pytest.fixture(params=["faceid", "faceid-plusv2"])
def pipe(request, tiny_faceid, tiny_plus):
    return tiny_faceid if request.param == "faceid" else tiny_plus


def test_baseline_equals_stock_sdxl_without_cfg(pipe):
    inputs = random_id_inputs(pipe)
    ours = run(pipe, "baseline", inputs=inputs).images
    stock = StableDiffusionXLPipeline(**pipe.components)
    stock.set_progress_bar_config(disable=True)
    stock.set_ip_adapter_scale(0.8)
    layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    if inputs.clip_embeds is not None:  # stock without CFG reads the positive half only
        layer.clip_embeds = inputs.clip_embeds.chunk(2)[1]
    try:
        ref = stock(
            prompt=PROMPT,
            ip_adapter_image_embeds=[inputs.image_embeds[0].chunk(2)[1]],
            guidance_scale=1.0,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).images
    finally:
        if inputs.clip_embeds is not None:
            layer.clip_embeds = None
    assert torch.equal(ours, ref)


@pytest.mark.parametrize(
    "preset,evaluations",
    [("baseline", 4), ("dcg", 10), ("am1", 4), ("am2", 12), ("fastface-am1", 10), ("fastface-am2", 12)],
)
def test_unet_evaluations_and_branch_skipping(tiny_plus, preset, evaluations):
    skipped = run(tiny_plus, preset)
    full = run(tiny_plus, preset, evaluate_all_branches=True)
    assert skipped.unet_evaluations == evaluations and full.unet_evaluations == 12
    # batch size changes float32 summation order; the tiny model's latents reach ~40, so compare
    # relative to their magnitude
    assert (skipped.images - full.images).abs().max() <= 1e-6 * full.images.abs().max()


def test_variants_differ_from_baseline_and_each_other(tiny_faceid):
    inputs = random_id_inputs(tiny_faceid)
    latents = {p: run(tiny_faceid, p, inputs=inputs).images for p in ff.VARIANTS}
    for a in ff.VARIANTS:
        for b in ff.VARIANTS:
            if a < b:
                assert not torch.allclose(latents[a], latents[b]), (a, b)


def test_identity_changes_the_output(tiny_faceid):
    one = run(tiny_faceid, "fastface-am1", inputs=random_id_inputs(tiny_faceid, seed=1)).images
    two = run(tiny_faceid, "fastface-am1", inputs=random_id_inputs(tiny_faceid, seed=2)).images
    assert not torch.allclose(one, two)


def test_same_seed_same_output_and_second_call_same(tiny_plus):
    first = run(tiny_plus, "fastface-am2").images
    second = run(tiny_plus, "fastface-am2").images
    assert torch.equal(first, second)
    assert not torch.equal(first, run(tiny_plus, "fastface-am2", seed=1).images)


def test_am_off_processor_is_bit_identical_to_diffusers(tiny_faceid):
    unet = tiny_faceid.unet
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    kwargs = dict(
        encoder_hidden_states=torch.randn(2, 77, unet.config.cross_attention_dim, generator=g),
        added_cond_kwargs={
            "text_embeds": torch.randn(2, 32, generator=g),
            "time_ids": torch.zeros(2, 6),
            "image_embeds": [torch.randn(2, 1, 128, generator=g)],
        },
        return_dict=False,
    )
    # the tiny text_embeds width follows the tiny text encoder; read it from the UNet
    proj_in = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
    kwargs["added_cond_kwargs"]["text_embeds"] = torch.randn(2, proj_in, generator=g)
    stock = unet(sample, 999, **kwargs)[0]
    with install(unet, ff.AttentionConfig(), StepContext(step_index=0)):
        ours = unet(sample, 999, **kwargs)[0]
    assert torch.equal(stock, ours)
    with install(unet, ff.FastFaceConfig.preset("am1").attention, StepContext(step_index=0)):
        manipulated = unet(sample, 999, **kwargs)[0]
    assert not torch.allclose(stock, manipulated)
    assert torch.equal(unet(sample, 999, **kwargs)[0], stock)  # removed exactly


def test_install_remove_restores_the_same_objects(tiny_faceid):
    before = dict(tiny_faceid.unet.attn_processors)
    inst = install(tiny_faceid.unet, ff.FastFaceConfig.preset("am2").attention, StepContext())
    installed = tiny_faceid.unet.attn_processors
    assert sum(isinstance(p, FastFaceAttnProcessor) for p in installed.values()) > 0
    inst.remove()
    after = tiny_faceid.unet.attn_processors
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    assert (
        type(before[next(k for k in before if k.endswith("attn2.processor"))]).__call__
        is not FastFaceAttnProcessor.__call__
    )


def test_apply_remove_apply_gives_identical_outputs(tiny_faceid):
    first = run(tiny_faceid, "am2").images
    inst = install(tiny_faceid.unet, ff.AttentionConfig(), StepContext(step_index=0))
    inst.remove()
    assert torch.equal(run(tiny_faceid, "am2").images, first)


def test_two_pipelines_do_not_affect_each_other(tiny_faceid):
    other = ff.tiny_pipeline(adapter="faceid", seed=7)
    other.set_progress_bar_config(disable=True)
    alone = run(other, "am1").images
    run(tiny_faceid, "fastface-am2")  # AM2 with its schedule on the first pipeline
    assert torch.equal(run(other, "am1").images, alone)
    assert not any(isinstance(p, FastFaceAttnProcessor) for p in other.unet.attn_processors.values())
    assert not any(isinstance(p, FastFaceAttnProcessor) for p in tiny_faceid.unet.attn_processors.values())


def test_exception_mid_call_leaves_next_call_correct(tiny_plus):
    expected = run(tiny_plus, "fastface-am2").images
    layer = tiny_plus.unet.encoder_hid_proj.image_projection_layers[0]
    clip_before = layer.clip_embeds

    def explode(pipe, i, t, kwargs):
        if i == 1:
            raise KeyboardInterrupt("user stopped the run")
        return kwargs

    with pytest.raises(KeyboardInterrupt):
        run(tiny_plus, "fastface-am2", callback_on_step_end=explode)
    assert not any(isinstance(p, FastFaceAttnProcessor) for p in tiny_plus.unet.attn_processors.values())
    assert layer.clip_embeds is clip_before
    assert torch.equal(run(tiny_plus, "fastface-am2").images, expected)


def test_ip_masks_keep_working_with_am(tiny_faceid):
    from diffusers.image_processor import IPAdapterMaskProcessor

    ones = IPAdapterMaskProcessor().preprocess(torch.ones(1, 1, 64, 64), height=64, width=64)
    zeros = IPAdapterMaskProcessor().preprocess(torch.zeros(1, 1, 64, 64), height=64, width=64)
    unmasked = run(tiny_faceid, "fastface-am1").images
    full = run(
        tiny_faceid, "fastface-am1", cross_attention_kwargs={"ip_adapter_masks": [ones.reshape(1, 1, 64, 64)]}
    ).images
    assert (full - unmasked).abs().max() < 1e-5
    none = run(
        tiny_faceid, "fastface-am1", cross_attention_kwargs={"ip_adapter_masks": [zeros.reshape(1, 1, 64, 64)]}
    ).images
    no_id = run(tiny_faceid, ff.FastFaceConfig.preset("fastface-am1", ip_adapter_scale=0.0)).images
    assert (none - no_id).abs().max() < 1e-5


def test_guidance_norms_recorded(tiny_faceid):
    g = ff.FastFaceConfig.preset("dcg").guidance
    cfg = ff.FastFaceConfig.preset("dcg").replace(guidance=type(g)(**{**g.__dict__, "record_norms": True}))
    out = run(tiny_faceid, cfg)
    assert len(out.guidance_norms) == 4 and out.unet_evaluations == 12
    assert set(out.guidance_norms[0]) == {"uncond", "id", "text+id", "term1", "term2"}


def test_callback_can_replace_latents(tiny_faceid):
    plain = run(tiny_faceid, "dcg").images
    zeroed = run(tiny_faceid, "dcg", callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0}).images
    assert not torch.equal(plain, zeroed)


def test_images_decode_and_callbacks_see_steps(tiny_faceid):
    seen = []

    def record(pipe, i, t, kwargs):
        seen.append((i, int(t), tuple(kwargs)))
        return kwargs  # diffusers' idiom: hand the kwargs back

    run(tiny_faceid, "dcg", callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents", "noise_pred"])
    assert [s[0] for s in seen] == [0, 1, 2, 3] and [s[1] for s in seen] == [999, 749, 499, 249]
    assert seen[0][2] == ("latents", "noise_pred")
    image = tiny_faceid(
        prompt=PROMPT,
        fastface=ff.FastFaceConfig.preset("dcg"),
        generator=torch.Generator().manual_seed(0),
        **random_id_inputs(tiny_faceid).call_kwargs(),
    ).images[0]
    side = tiny_faceid.default_sample_size * tiny_faceid.vae_scale_factor
    assert image.size == (side, side)


def test_errors_are_clear(tiny_faceid, tiny_plus):
    inputs = random_id_inputs(tiny_faceid)
    with pytest.raises(ff.ConfigError, match="num_inference_steps=8"):
        tiny_faceid(
            prompt=PROMPT, fastface=ff.FastFaceConfig.preset("am1"), num_inference_steps=8, **inputs.call_kwargs()
        )
    with pytest.raises(ValueError, match="ip_adapter_image_embeds"):
        tiny_faceid(prompt=PROMPT, fastface=ff.FastFaceConfig.preset("am1"))
    bad_tokens = ff.FastFaceConfig(attention=ff.AttentionConfig(transforms=("pow",), target_tokens=(0, 5)))
    with pytest.raises(ff.ConfigError, match="4 ID tokens"):
        run(tiny_faceid, bad_tokens)
    with pytest.raises(ValueError, match="clip_embeds"):
        tiny_plus(prompt=PROMPT, ip_adapter_image_embeds=random_id_inputs(tiny_plus).image_embeds)
    with pytest.raises(ValueError, match="128-d"):
        from fastface_lite.sdxl.adapter import id_inputs

        id_inputs(tiny_faceid, torch.zeros(512))
    with pytest.raises(ValueError, match="only 'latents'"):
        run(tiny_faceid, "am1", callback_on_step_end=lambda p, i, t, k: {"prompt_embeds": 0})
    with pytest.raises(ValueError, match="only 'latents'"):
        run(
            tiny_faceid,
            "am1",
            callback_on_step_end=lambda p, i, t, k: {**k, "noise_pred": k["noise_pred"] * 2},
            callback_on_step_end_tensor_inputs=["latents", "noise_pred"],
        )
    # the failed calls left nothing installed
    assert not any(isinstance(p, FastFaceAttnProcessor) for p in tiny_faceid.unet.attn_processors.values())


def test_faceid_lora_weight_applies_to_the_call_only(tiny_faceid):
    to_q = tiny_faceid.unet.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2.to_q")
    full = run(tiny_faceid, "am1").images
    weaker = run(tiny_faceid, ff.FastFaceConfig.preset("am1", faceid_lora_scale=0.6)).images
    assert not torch.allclose(full, weaker)
    assert to_q.scaling["faceid_0"] == pytest.approx(to_q.lora_alpha["faceid_0"] / to_q.r["faceid_0"])
    assert torch.equal(run(tiny_faceid, "am1").images, full)
    with pytest.raises(ValueError, match="faceid_lora_scale"):
        run(tiny_faceid, "am1", cross_attention_kwargs={"scale": 0.5})


def test_per_branch_normalisation_lets_am2_skip_branches(tiny_faceid):
    am2 = ff.FastFaceConfig.preset("am2")
    fast = am2.replace(attention=ff.AttentionConfig(**{**am2.attention.__dict__, "normalize_per_branch": True}))
    skipped = run(tiny_faceid, fast)
    full = run(tiny_faceid, fast, evaluate_all_branches=True)
    assert skipped.unet_evaluations == 4 and full.unet_evaluations == 12
    assert (skipped.images - full.images).abs().max() <= 1e-6 * full.images.abs().max()
    assert not torch.allclose(skipped.images, run(tiny_faceid, am2).images)  # not the reference's numbers
