"""The notebook widgets, driven the way a browser would: set a control's value, read what shows."""

import numpy as np
import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.method.branches import planned_evaluations
from fastface_lite.sdxl.loading import model_timesteps
from fastface_lite.workbook.widgets import AttentionInspector, SweepExplorer

PROMPT = "a photo of a person reading in a park"


@pytest.fixture(scope="module")
def explorer(tiny_plus):
    return SweepExplorer(tiny_plus, random_id_inputs(tiny_plus), PROMPT, seeds=(0,), preset="fastface-am1")


def test_sweep_starts_from_the_preset(explorer):
    cfg = ff.FastFaceConfig.preset("fastface-am1")
    assert [s.value for s in explorer.a_steps] == [1.0, 1.5, 1.5, 1.0]
    assert [s.value for s in explorer.b_steps] == [1.0, 3.0, 3.0, 1.0]
    assert explorer.config().attention == cfg.attention
    assert explorer.last is not None and len(explorer.last.images) == 1
    assert explorer.last.planned == 10 and explorer.last.evaluations == 12  # norms recorded: every branch
    assert "UNet evaluations per image: <b>10</b>" in explorer.summary.value
    assert bytes(explorer.images.value).startswith(b"\x89PNG") and bytes(explorer.plot.value).startswith(b"\x89PNG")


def test_moving_a_slider_regenerates_with_that_weight(explorer, tiny_plus):
    before_summary, before_image = explorer.summary.value, explorer.images.value
    runs = explorer.runs
    explorer.a_steps[2].value = 0.5
    assert explorer.runs == runs + 1
    assert explorer.last.weights[2] == (0.5, 3.0)
    assert "a [1.00, 1.50, 0.50, 1.00]" in explorer.summary.value and explorer.summary.value != before_summary
    assert explorer.images.value != before_image
    # what the explorer shows is what the pipeline gives for that config
    out = tiny_plus(
        prompt=PROMPT,
        fastface=explorer.last.config,
        generator=torch.Generator().manual_seed(0),
        **random_id_inputs(tiny_plus).call_kwargs(),
    )
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(explorer.last.images[0]))
    explorer.apply_preset("fastface-am1")


def test_norm_plot_data_are_the_pipelines_norms(explorer):
    norms = explorer.last.norms
    assert len(norms) == 4 and all({"term1", "term2"} <= set(n) for n in norms)
    assert all(n["term1"] > 0 for n in norms)


def test_preset_buttons_set_every_control(explorer):
    explorer.preset.value = "baseline"
    assert [s.value for s in explorer.a_steps] == [1.0] * 4
    assert explorer.rescale_on.value is False
    assert explorer.last.planned == 4
    assert explorer.config().attention == ff.FastFaceConfig.preset("baseline").attention
    explorer.preset.value = "fastface-am1"
    assert explorer.last.planned == 10


def test_timestep_shape_drives_the_step_sliders(explorer):
    runs = explorer.runs
    explorer.shape.value = "linear"
    assert explorer.runs == runs + 1  # one regeneration, not one per slider it fills in
    assert all(s.disabled for s in explorer.a_steps) and not explorer.a_weight.disabled
    timesteps = model_timesteps("hyper", 4)
    expected = [explorer.config().guidance.a.at(i, t) for i, t in enumerate(timesteps)]
    assert [a for a, _ in explorer.last.weights] == pytest.approx(expected)
    assert [s.value for s in explorer.a_steps] == pytest.approx(expected)
    explorer.a_weight.value = 2.0
    assert [a for a, _ in explorer.last.weights] == pytest.approx([2 * e for e in expected])
    explorer.apply_preset("fastface-am1")
    assert explorer.shape.value == "custom" and not explorer.a_steps[0].disabled


def test_rescale_and_dcg_type_reach_the_config(explorer):
    explorer.rescale_on.value = False
    assert explorer.last.config.guidance.rescale is None
    explorer.rescale_on.value = True
    explorer.phi.value = 0.3
    assert explorer.last.config.guidance.rescale == pytest.approx(0.3)
    explorer.dcg_type.value = 2
    assert explorer.last.config.guidance.dcg_type == 2 and "DCG type 2" in explorer.summary.value
    explorer.apply_preset("fastface-am1")


def test_rejected_config_keeps_the_last_images(tiny_plus):
    explorer = SweepExplorer(
        tiny_plus, random_id_inputs(tiny_plus), PROMPT, seeds=(0,), preset="baseline", auto_update=False
    )
    assert explorer.last is None and bytes(explorer.images.value) == b""  # nothing runs until asked
    explorer.regenerate()
    explorer.auto_update = True
    explorer.rescale_on.value = True  # a valid change: regenerated at once
    kept, image = explorer.last, bytes(explorer.images.value)
    assert kept.config.guidance.rescale == pytest.approx(0.7)
    explorer.phi.max = 2.0  # code (not the slider's range) can ask for a phi the method rejects
    explorer.phi.value = 1.5
    assert explorer.regenerate() is None
    assert "not run" in explorer.message.value and "phi" in explorer.message.value
    assert explorer.last is kept and bytes(explorer.images.value) == image


def test_planned_evaluations_match_a_run(tiny_plus):
    timesteps = model_timesteps("hyper", 4)
    inputs = random_id_inputs(tiny_plus)
    for name in ff.VARIANTS:
        cfg = ff.FastFaceConfig.preset(name)
        out = tiny_plus(prompt=PROMPT, fastface=cfg, output_type="latent", **inputs.call_kwargs())
        assert planned_evaluations(cfg, timesteps) == out.unet_evaluations, name


@pytest.fixture(scope="module")
def recorded(tiny_plus):
    inputs = random_id_inputs(tiny_plus)
    with ff.trace(tiny_plus) as tr:
        image = tiny_plus(
            prompt=PROMPT,
            fastface=ff.FastFaceConfig.preset("fastface-am2"),
            generator=torch.Generator().manual_seed(0),
            **inputs.call_kwargs(),
        ).images[0]
    return tr, image


def test_inspector_shows_the_selected_map(recorded):
    tr, image = recorded
    inspector = AttentionInspector(tr, image)
    assert inspector.token.options == tuple(dict.fromkeys(tr.words))
    inspector.token.value = "person"
    inspector.block.value = "up_blocks.0"
    inspector.step.value = 1
    expected = tr.maps("text", token="person", block="up_blocks.0", step=1)
    assert np.array_equal(inspector.last.to_numpy(), expected.to_numpy())
    assert "&#x27;person&#x27; · up_blocks.0 · step 1" in inspector.summary.value
    assert bytes(inspector.view.value).startswith(b"\x89PNG")


def test_inspector_id_tokens_raw_vs_used(recorded):
    tr, image = recorded
    inspector = AttentionInspector(tr, image)
    inspector.kind.value = "id"
    assert inspector.token.value == 0 and not inspector.stage.disabled
    used = inspector.last.to_numpy()
    inspector.stage.value = "raw"
    raw = inspector.last.to_numpy()
    assert np.array_equal(raw, tr.maps("id", token=0, stage="raw").to_numpy())
    assert not np.allclose(raw, used)  # AM2 changes the ID maps
    inspector.token.value = "all"  # four ID tokens' raw softmax averages to exactly 1/4
    assert np.allclose(inspector.last.to_numpy(), 0.25, atol=1e-5)
    inspector.kind.value = "text"
    assert inspector.stage.disabled and inspector.last.kind == "text"


def test_inspector_says_why_a_selection_is_empty(tiny_plus):
    inputs = random_id_inputs(tiny_plus)
    with ff.trace(tiny_plus) as tr:  # FastFace-AM1 evaluates the uncond branch at steps 1-2 only
        out = tiny_plus(prompt=PROMPT, fastface=ff.FastFaceConfig.preset("fastface-am1"), **inputs.call_kwargs())
    assert out.branches_per_step[0] == (1, 2)
    inspector = AttentionInspector(tr, out.images[0])
    inspector.token.value = "person"
    shown = inspector.last
    inspector.branch.value = "uncond"
    inspector.step.value = 1
    assert inspector.last is not shown and inspector.last.branch == "uncond"
    kept = inspector.last
    inspector.step.value = 0
    assert inspector.last is kept  # nothing lost ...
    assert "uncond" in inspector.summary.value and "color:#b00" in inspector.summary.value  # ... and it says why


def test_sweep_previews_with_the_tiny_decoder_and_the_full_vae_is_one_click_away():
    pipe = ff.tiny_pipeline(adapter="faceid", seed=0, preview_decoder=True)
    inputs = random_id_inputs(pipe)
    explorer = SweepExplorer(pipe, inputs, PROMPT, seeds=(0,), preset="baseline", auto_update=False, preview=True)
    result = explorer.regenerate()
    assert result.preview and "preview decoder" in explorer.summary.value
    assert np.array_equal(np.asarray(result.images[0]), pipe.latents_to_images(result.latents[0], preview=True)[0])
    shown = bytes(explorer.images.value)
    explorer.full_vae.click()  # what the "full VAE" button does
    full = explorer.last
    assert not full.preview and "full VAE" in explorer.summary.value and bytes(explorer.images.value) != shown
    # the full decode is what the pipeline itself returns for that config and seed
    out = pipe(prompt=PROMPT, fastface=full.config, generator=torch.Generator().manual_seed(0), **inputs.call_kwargs())
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(full.images[0]))
    assert full.images[0].size == result.images[0].size


def test_sweep_preview_needs_a_preview_decoder(tiny_plus):
    with pytest.raises(ff.ConfigError, match="preview_decoder=True"):
        SweepExplorer(tiny_plus, random_id_inputs(tiny_plus), PROMPT, seeds=(0,), auto_update=False, preview=True)


def test_inspector_shows_raw_used_and_their_difference_together(recorded):
    import io

    from PIL import Image

    tr, image = recorded
    inspector = AttentionInspector(tr, image)
    text_width = Image.open(io.BytesIO(bytes(inspector.view.value))).size[0]
    inspector.kind.value = "id"
    inspector.token.value = 1
    raw = tr.maps("id", token=1, stage="raw").to_numpy()
    used = tr.maps("id", token=1, stage="used").to_numpy()
    assert np.array_equal(inspector.last.to_numpy(), used)  # the stage toggle picks what `last` holds
    assert f"largest change {np.abs(used - raw).max():.4f}" in inspector.summary.value
    assert inspector.overlay.disabled  # the three maps are drawn alone: the signs must read
    # raw | used | used - raw side by side: three panels, far wider than the one text map
    assert Image.open(io.BytesIO(bytes(inspector.view.value))).size[0] > 2 * text_width
    inspector.stage.value = "raw"
    assert np.array_equal(inspector.last.to_numpy(), raw)
