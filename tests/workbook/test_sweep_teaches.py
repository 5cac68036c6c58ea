"""The sweep explorer beside its guided images: identity photo, cached baseline, identity scores,
what a move cost; the Generate button; and its checks (issue 11): slider values are the weights
used, a `model=` that does not fit the pipeline is refused, callback errors stay in the explorer."""

import numpy as np
import pytest
import torch
from conftest import random_id_inputs

import fastface_lite as ff
from fastface_lite.errors import NoFaceError
from fastface_lite.evaluation.metrics import IdentityScore
from fastface_lite.faces.photos import face_path
from fastface_lite.method.dcg import weights_at
from fastface_lite.method.schedules import TIMESTEP_SHAPES
from fastface_lite.sdxl.adapter import IDInputs
from fastface_lite.workbook import runtimes
from fastface_lite.workbook.widgets import SweepExplorer, score_label

PROMPT = "a photo of a person reading in a park"


def _explorer(pipe, **kwargs):
    kwargs = {"seeds": (0,), "preset": "fastface-am1", "auto_update": False, **kwargs}
    return SweepExplorer(pipe, random_id_inputs(pipe), PROMPT, **kwargs)


# ---------------------------------------------------------------------------- Generate or not
@pytest.mark.parametrize(
    "mode, name, gib, on_release",
    [
        ("tiny", None, None, True),  # a second per move on a CPU
        ("tiny", "Tesla T4", 15.0, True),
        ("full", "Tesla T4", 15.0, False),
        ("full", "NVIDIA L4", 22.0, False),
        ("full", "NVIDIA A10G", 22.0, False),  # A10G is not an A100
        ("full", "NVIDIA GeForce RTX 3090", 24.0, False),
        ("full", "NVIDIA A100-SXM4-40GB", 39.4, True),
        ("full", "NVIDIA A100-SXM4-80GB", 79.2, True),
        ("full", "NVIDIA H100 80GB HBM3", 79.1, True),
        ("full", "NVIDIA H200", 139.8, True),
        ("full", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4.8, False),  # a MIG slice: offloaded
        ("full", None, None, False),  # full mode on the CPU
    ],
)
def test_generate_button_on_gpus_slower_than_an_a100(mode, name, gib, on_release):
    assert runtimes.regenerate_on_release(mode, name, gib) is on_release


def test_a_fast_gpu_that_would_need_offload_gets_the_button():
    # an A100 MIG slice of 10 GiB is A100-named, but its plan offloads: seconds of transfers per image
    assert runtimes.gpu_plan(9.8).offload is True
    assert runtimes.regenerate_on_release("full", "NVIDIA A100-SXM4-40GB MIG 2g.10gb", 9.8) is False


def test_generate_button_decision_refuses_an_unknown_mode():
    with pytest.raises(ff.ConfigError, match="mode must be"):
        runtimes.regenerate_on_release("fast", "NVIDIA H200", 139.8)


def test_runtime_estimates_come_from_the_bench_numbers():
    measured = runtimes.H200_SECONDS
    h200, t4 = runtimes.sweep_move_seconds(2)
    assert (
        h200.low
        == h200.high
        == pytest.approx(measured["sweep_move_2_seeds_small_vae"] + 2 * measured["full_size_decode"])
    )
    # a T4 runs without offload (fp16-fix VAE, sdxl/gpu_plan.py): no transfers to add
    assert runtimes.gpu_plan(runtimes.T4_GIB).offload is False and "no offload" in t4.gpu
    transfers = 0.0
    low, high = runtimes.T4_SLOWDOWN
    assert (t4.low, t4.high) == pytest.approx((h200.low * low + transfers, h200.low * high + transfers))
    assert "not measured" in str(t4) and "not measured" not in str(h200)
    first_h200, _ = runtimes.sweep_move_seconds(2, baseline=True)
    assert first_h200.low == pytest.approx(h200.low + 2 * measured["image_baseline"])
    one_seed, _ = runtimes.sweep_move_seconds(1)
    assert one_seed.low == pytest.approx(h200.low / 2)
    note = runtimes.sweep_runtime_note(2)
    assert "bench/results/h200_sweep_sdxl.md" in note and "not measured" in note and f"{h200.low:.1f} s" in note
    with pytest.raises(ff.ConfigError, match="seeds"):
        runtimes.sweep_move_seconds(0)


def test_without_auto_update_a_move_waits_for_generate(tiny_plus):
    explorer = _explorer(tiny_plus)
    assert explorer.last is None and "press <b>Generate</b>" in explorer.runtime.value
    explorer.a_steps[1].value = 2.0
    assert explorer.runs == 0 and "press <b>Generate</b>" in explorer.message.value
    explorer.generate.click()
    assert explorer.runs == 1 and explorer.last.weights[1][0] == 2.0 and explorer.message.value == ""


def test_current_runs_only_when_the_controls_changed_since_the_last_run(tiny_plus):
    # code (a notebook cell) reads the result the same way whether the explorer waits for Generate
    explorer = _explorer(tiny_plus)
    first = explorer.current()
    assert explorer.runs == 1 and first is explorer.last
    assert explorer.current() is first and explorer.runs == 1  # nothing changed: no run
    explorer.a_steps[1].value = 2.0
    second = explorer.current()
    assert explorer.runs == 2 and second is not first and second.weights[1][0] == 2.0


# ------------------------------------------------------------------- what the explorer shows
@pytest.fixture(scope="module")
def shown(tiny_plus):
    """An explorer with the identity photo after two moves (the first computes the baseline)."""
    explorer = _explorer(tiny_plus, photo=face_path("astronaut"))
    first = explorer.regenerate()
    explorer.b_steps[1].value = 4.0
    second = explorer.regenerate()
    return explorer, first, second


def test_baseline_is_computed_once_and_is_the_baseline_variant(shown, tiny_plus):
    explorer, first, second = shown
    assert not first.baseline_reused and second.baseline_reused
    baseline_evaluations = 4  # the baseline variant: one branch at each of 4 steps, one seed
    assert first.move_evaluations == first.evaluations + baseline_evaluations
    assert second.move_evaluations == second.evaluations
    assert f"<b>{second.move_evaluations}</b> UNet evaluations (baseline reused)" in explorer.summary.value
    out = tiny_plus(
        prompt=PROMPT,
        fastface=ff.FastFaceConfig.preset("baseline"),
        generator=torch.Generator().manual_seed(0),
        **explorer.id_inputs.call_kwargs(),
    )
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(second.baseline[0]))


def test_a_move_states_its_measured_seconds(shown):
    explorer, _, second = shown
    assert 0 < second.seconds < 600
    assert f"<b>{second.seconds:.2f} s</b> measured" in explorer.summary.value


def test_identity_scores_say_no_face_on_tiny_images_and_score_a_face(shown):
    explorer, _, second = shown
    # tiny mode's random-weight images hold no face: a detection failure, not a number
    assert [s.detection_failure for s in second.identity + second.baseline_identity] == [True, True]
    assert all(s.failed == ("generated",) for s in second.identity)
    assert "guided [no face] · baseline [no face]" in explorer.summary.value
    # the same scoring path gives a number when the image has a face: the photo against itself
    itself = explorer._scores([explorer.photo])[0]
    assert itself.similarity == pytest.approx(1.0, abs=1e-6)
    assert score_label(IdentityScore(0.6234, False)) == "ID 0.62" and score_label(None) == ""


def test_new_seeds_or_prompt_recompute_the_baseline(tiny_plus):
    explorer = _explorer(tiny_plus)
    first = explorer.regenerate()
    explorer.seeds = (1,)
    moved = explorer.regenerate()
    assert not moved.baseline_reused and not np.array_equal(
        np.asarray(first.baseline[0]), np.asarray(moved.baseline[0])
    )
    assert explorer.regenerate().baseline_reused
    explorer.prompt = "a photo of a person at the beach"
    assert not explorer.regenerate().baseline_reused
    with pytest.raises(ff.ConfigError, match="seeds"):
        explorer.seeds = "01"
    with pytest.raises(ff.ConfigError, match="prompt"):
        explorer.prompt = ""


def test_photo_without_a_face_is_refused(tiny_plus):
    blank = np.full((256, 256, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="photo"):
        _explorer(tiny_plus, photo=blank)


# ----------------------------------------------------------------- slider values = weights used
@pytest.mark.parametrize("shape", list(TIMESTEP_SHAPES))
def test_step_sliders_show_the_weights_the_pipeline_uses(tiny_plus, shape, pipeline_timesteps):
    explorer = _explorer(tiny_plus)
    explorer.shape.value = shape
    explorer.a_weight.value = 5.0  # cos reaches 2w = 10: beyond the sliders' usual range
    explorer.b_weight.value = 0.3
    explorer.floor.value = 0.5
    explorer.power.value = 2.0
    guidance = explorer.config().guidance
    used = [w for i, t in enumerate(pipeline_timesteps) for w in weights_at(i, t, guidance)]
    shown = [w for a, b in zip(explorer.a_steps, explorer.b_steps, strict=True) for w in (a.value, b.value)]
    # the same float computation on both sides; the tolerance only absorbs float rounding
    assert shown == pytest.approx(used, rel=1e-12, abs=1e-12)


@pytest.fixture(scope="module")
def pipeline_timesteps(tiny_plus):
    """The timesteps the pipeline's own loop visits (its output says), where it evaluates the weights."""
    out = tiny_plus(
        prompt=PROMPT,
        fastface=ff.FastFaceConfig.preset("baseline"),
        output_type="latent",
        **random_id_inputs(tiny_plus).call_kwargs(),
    )
    return out.timesteps


def test_a_run_reports_the_weights_it_used_beyond_the_slider_range(tiny_plus):
    explorer = _explorer(tiny_plus)
    explorer.shape.value = "cos"
    explorer.a_weight.value = 5.0
    result = explorer.regenerate()
    assert max(a for a, _ in result.weights) > 5.0  # cos at t near 0 approaches 2w
    assert [s.value for s in explorer.a_steps] == pytest.approx([a for a, _ in result.weights])
    assert all(s.max >= s.value for s in explorer.a_steps)
    explorer.shape.value = "custom"  # the sliders are controls again, on their usual range
    assert all(s.max == 5.0 and s.value <= 5.0 for s in explorer.a_steps)


# ------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("model", ["lcm", "lightning", "turbo", "base"])
def test_a_model_that_does_not_fit_the_pipeline_is_refused(tiny_plus, model):
    with pytest.raises(ff.ConfigError) as error:
        _explorer(tiny_plus, model=model)
    message = str(error.value)
    assert f"model={model!r}" in message and "model='hyper'" in message  # the argument and the fix


def test_an_unknown_model_is_refused(tiny_plus):
    with pytest.raises(ff.ConfigError, match=r"model='sdxl-fast'\) is not a known model"):
        _explorer(tiny_plus, model="sdxl-fast")


def test_a_slider_that_is_not_a_number_is_refused(tiny_plus):
    explorer = _explorer(tiny_plus, auto_update=True)
    kept = explorer.last
    explorer.a_steps[2].value = float("nan")  # code can set what the handle cannot
    assert explorer.last is kept
    assert "slider &#x27;a, step 2&#x27;" in explorer.message.value and "finite" in explorer.message.value
    explorer.a_steps[2].value = 1.5
    assert explorer.last is not kept and explorer.message.value == ""


def test_a_project_error_in_a_callback_shows_as_its_message(tiny_plus):
    wrong = IDInputs([torch.zeros(2, 1, 512)], random_id_inputs(tiny_plus).clip_embeds)  # 512-d into 128-d
    explorer = SweepExplorer(tiny_plus, wrong, PROMPT, seeds=(0,), auto_update=True)  # no exception escapes
    assert explorer.last is None
    explorer.a_steps[1].value = 2.0  # the slider callback: nothing escapes to the widget log either
    message = explorer.message.value
    assert "512" in message and "128" in message and "Traceback" not in message


class _Broken:
    """ID inputs whose call arguments fail with an error that is not the project's (a bug)."""

    def call_kwargs(self):
        raise RuntimeError("broken ID inputs")


def test_a_foreign_error_in_a_callback_shows_its_traceback_there(tiny_plus):
    explorer = SweepExplorer(tiny_plus, _Broken(), PROMPT, seeds=(0,), auto_update=False)
    explorer.generate.click()
    message = explorer.message.value
    assert "Traceback" in message and "RuntimeError: broken ID inputs" in message
    with pytest.raises(RuntimeError):  # from code, a bug still raises
        explorer.regenerate()


def test_the_explorer_checks_its_seeds_and_prompt_before_any_work(tiny_plus):
    with pytest.raises(ff.ConfigError, match="seeds"):
        _explorer(tiny_plus, seeds=())
    with pytest.raises(ff.ConfigError, match="seeds"):
        _explorer(tiny_plus, seeds=(0.5,))
    with pytest.raises(ff.ConfigError, match="prompt"):
        SweepExplorer(tiny_plus, random_id_inputs(tiny_plus), "  ", auto_update=False)


def test_the_explorer_states_the_full_mode_seconds_per_move(tiny_plus):
    explorer = _explorer(tiny_plus, seeds=(0, 1))
    assert runtimes.sweep_runtime_brief(2) in explorer.runtime.value and "not measured" in explorer.runtime.value
    explorer.seeds = (0,)
    assert runtimes.sweep_runtime_brief(1) in explorer.runtime.value
