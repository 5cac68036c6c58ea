"""Interactive explorers for the notebooks: a guidance sweep and an attention inspector.

Both are plain objects that hold ipywidgets controls and show their results in widgets whose
values are ordinary data (HTML text, PNG bytes), so nothing needs a browser to be checked: a test
sets a control's `.value` and reads `summary.value`, `images.value` or `last`.

    explorer = SweepExplorer(pipe, inputs, "a photo of a person", photo=photo)   # then display(explorer)
    inspector = AttentionInspector(trace, image)
"""

from __future__ import annotations

import html
import time
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from fastface_lite.errors import ConfigError, FastFaceError, NothingRecorded
from fastface_lite.inspect.plots import LABEL_SIZE, figure_png, label_grid, map_row
from fastface_lite.method.checks import number
from fastface_lite.method.config import VARIANTS, FastFaceConfig
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.method.schedules import SCHEDULE_SHAPES, WeightSchedule
from fastface_lite.workbook.runtimes import regenerate_on_release, sweep_runtime_brief

NUM_STEPS = 4  # the presets' step count; the sweep keeps it fixed
WEIGHT_RANGE = dict(min=0.0, max=5.0, step=0.1)


def _slider(description: str, value: float, css_class: str, readout: str = ".2f", **limits) -> widgets.FloatSlider:
    # continuous_update=False: one regeneration per release of the handle, not one per pixel
    slider = widgets.FloatSlider(
        value=value,
        description=description,
        continuous_update=False,
        readout_format=readout,
        **{**WEIGHT_RANGE, **limits},
    )
    slider.add_class(css_class)
    return slider


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def _norms(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def _error_html(error: BaseException, prefix: str = "") -> str:
    """A project error as its one-line message (red); anything else as its full traceback."""
    if isinstance(error, FastFaceError):
        return f"<span style='color:#b00'>{html.escape(prefix + str(error))}</span>"
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return f"<pre style='color:#b00;white-space:pre-wrap'>{html.escape(''.join(lines))}</pre>"


# ----------------------------------------------------------------------------------------------
# Guidance sweep
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepResult:
    """What one move of the sweep (one regeneration) produced.

    config: the FastFaceConfig run (norm recording on).
    images: one PIL image per seed, guided by ``config``.
    weights: (a, b) per step: what the pipeline's guidance computed at the timesteps it visited.
    norms: per step, Frobenius norms of the branches and of the two guidance terms (first seed).
    evaluations: UNet evaluations of the first seed's image (norm recording evaluates all branches).
    planned: UNet evaluations per image the same config needs without norm recording.
    latents: the final latents per seed, (1, 4, h, w) each (to decode again with the other decoder).
    preview: whether the images came from the preview decoder (else the full VAE).
    baseline: one PIL image per seed with FastFace off (the ``baseline`` variant), same seeds.
    identity: per guided image, its `IdentityScore` against the identity photo (None: no photo given).
    baseline_identity: the same for the baseline images.
    move_evaluations: UNet evaluations this move ran, every image together (the baseline's only
        when it was computed in this move rather than reused).
    baseline_reused: whether the baseline images came from the explorer's cache.
    seconds: wall-clock seconds of the move (generation, decoding, scoring, drawing).
    """

    config: FastFaceConfig
    images: list
    weights: list
    norms: list
    evaluations: int
    planned: int
    latents: list = ()
    preview: bool = False
    baseline: list = ()
    identity: list = ()
    baseline_identity: list = ()
    move_evaluations: int = 0
    baseline_reused: bool = False
    seconds: float = 0.0


@dataclass
class _Baseline:
    """The baseline images of one (prompt, seeds, ID inputs): computed once, decoded per decoder."""

    prompt: str
    seeds: tuple
    id_inputs: object
    latents: list
    evaluations: int
    decoded: dict = field(default_factory=dict)  # preview flag -> (images, identity scores)

    def matches(self, prompt: str, seeds: tuple, id_inputs) -> bool:
        return self.prompt == prompt and self.seeds == seeds and self.id_inputs is id_inputs


def _check_seeds(seeds) -> tuple[int, ...]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, range)):
        raise ConfigError(f"seeds must be a list of whole numbers such as (0, 1), got {seeds!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of whole numbers >= 0 such as (0, 1), got {list(seeds)!r}")
    return tuple(int(s) for s in seeds)


def pipeline_timesteps(pipe, steps: int = NUM_STEPS) -> list[int]:
    """The timesteps `pipe`'s scheduler visits in `steps` steps (on a copy: the pipeline is untouched)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def check_model_matches(pipe, model: str, steps: int = NUM_STEPS) -> list[int]:
    """The pipeline's timesteps, after checking that `model` samples with the pipeline's scheduler.

    Raises ConfigError naming ``model=`` when `model` is unknown or its scheduler class or
    timesteps differ from the pipeline's (the weights and per-step presets would then describe
    steps the pipeline does not take).
    """
    from fastface_lite.method.checkpoints import CHECKPOINTS, MODELS
    from fastface_lite.sdxl.loading import model_timesteps

    if model not in CHECKPOINTS:
        raise ConfigError(f"SweepExplorer(model={model!r}) is not a known model; use one of {', '.join(MODELS)}")
    actual_class, actual = type(pipe.scheduler).__name__, pipeline_timesteps(pipe, steps)

    def matches(name: str) -> bool:
        return CHECKPOINTS[name].scheduler == actual_class and model_timesteps(name, steps) == actual

    if not matches(model):
        fits = [name for name in MODELS if matches(name)]
        fix = (
            f"pass model={fits[0]!r}, the model this pipeline samples like"
            if fits
            else f"load the pipeline with model={model!r} (tiny_pipeline(model=...) or load_pipeline({model!r}))"
        )
        raise ConfigError(
            f"SweepExplorer(model={model!r}) does not match the pipeline: {model!r} samples with "
            f"{CHECKPOINTS[model].scheduler} at timesteps {model_timesteps(model, steps)} in {steps} steps, the "
            f"pipeline's scheduler is {actual_class} at {actual}; {fix}"
        )
    return actual


def _device_facts(pipe) -> tuple[str | None, float | None]:
    """(CUDA device name, memory in GiB) of the device the pipeline runs on; (None, None) on the CPU."""
    device = torch.device(getattr(pipe, "_execution_device", None) or getattr(pipe, "device", "cpu"))
    if device.type != "cuda":
        return None, None
    return torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory / 2**30


class SweepExplorer:
    """Per-step guidance weights, schedule shape, rescale phi and DCG type, with preset buttons.

    Each move shows, one column per seed, the baseline (FastFace off, computed once per prompt,
    seeds and ID inputs, then reused) above the guided image, the identity photo beside them and
    each image's identity score ("no face" when the face analyzer finds none); the plot of the
    schedule and the guidance-term norms per step; and what the move cost (UNet evaluations,
    seconds). Errors of the controls or the pipeline show in the explorer's message area.

    Args:
        pipe: a FastFacePipeline (tiny or real).
        id_inputs: `fastface_lite.sdxl.adapter.IDInputs` for the identity.
        prompt: the prompt.
        model: the model preset (default weights); must sample like the pipeline's scheduler.
        seeds: one image per seed.
        preset: the variant the controls start from; its attention settings are kept throughout.
        auto_update: regenerate on every release of a control; False: press "Generate". None
            (default) decides by mode and GPU (`runtimes.regenerate_on_release`): yes in tiny mode
            and on GPUs as fast as an A100, a Generate button on slower ones (a T4).
        preview: decode with the pipeline's preview decoder (``pipe.preview_decoder``, the tiny
            autoencoder) while sweeping; "full VAE" decodes the last images again with the VAE.
        photo: the identity photo (path, PIL image or RGB array) to show and score against; None:
            no photo column and no scores.
        analyzer: the `FaceAnalyzer` for the scores; None: dlib in tiny mode, "auto" in full mode.
        mode: "tiny" or "full"; None: the run mode (FASTFACE_MODE, else full with a GPU).
    """

    def __init__(
        self,
        pipe,
        id_inputs,
        prompt: str,
        *,
        model: str = "hyper",
        seeds: Sequence[int] = (0, 1),
        preset: str = "fastface-am1",
        auto_update: bool | None = None,
        preview: bool = False,
        photo=None,
        analyzer=None,
        mode: str | None = None,
    ):
        from fastface_lite.sdxl.mode import run_mode

        has_decoder = getattr(pipe, "preview_decoder", None) is not None
        if preview and not has_decoder:
            raise ConfigError(
                "SweepExplorer(preview=True) needs a pipeline with a preview decoder: "
                "load_pipeline(..., preview_decoder=True) or tiny_pipeline(..., preview_decoder=True)"
            )
        if preset not in VARIANTS:
            raise ConfigError(f"SweepExplorer(preset={preset!r}) is not a variant; use one of {', '.join(VARIANTS)}")
        self.prompt, self.seeds = prompt, seeds  # checked by their setters, before any work
        self.timesteps = check_model_matches(pipe, model)
        self.pipe, self.id_inputs, self.model = pipe, id_inputs, model
        self.mode = mode or run_mode()
        if auto_update is None:
            auto_update = regenerate_on_release(self.mode, *_device_facts(pipe))
        self.photo, self.analyzer, self._reference = None, None, None
        if photo is not None:
            self._set_photo(photo, analyzer)
        self.last: SweepResult | None = None
        self._stale = True  # True while the controls differ from what `last` ran
        self.runs = 0
        self._baseline: _Baseline | None = None
        self._holding = False  # True while controls are set in bulk: one regeneration at the end
        self._base = FastFaceConfig.preset(preset, model=model)

        self.preset = widgets.ToggleButtons(options=VARIANTS, value=preset, description="preset")
        self.dcg_type = widgets.ToggleButtons(
            options=[1, 2, 3], value=3, description="DCG type", style={"button_width": "48px"}
        )
        self.shape = widgets.Dropdown(options=SCHEDULE_SHAPES, value="custom", description="schedule")
        self.a_weight = _slider("a (shape w)", 1.0, "ff-a-weight")
        self.b_weight = _slider("b (shape w)", 1.0, "ff-b-weight")
        self.floor = _slider("floor c", 0.5, "ff-c", max=3.0)
        self.power = _slider("power s", 1.0, "ff-s", min=0.1, max=4.0)
        # 3 significant digits: a timestep shape can give 0.0096, which ".2f" would show as 0.01
        self.a_steps = [_slider(f"a, step {i}", 1.0, f"ff-a-{i}", ".3g") for i in range(NUM_STEPS)]
        self.b_steps = [_slider(f"b, step {i}", 1.0, f"ff-b-{i}", ".3g") for i in range(NUM_STEPS)]
        self.rescale_on = widgets.Checkbox(value=False, description="rescale")
        self.phi = _slider("phi", 0.7, "ff-phi", max=1.0, step=0.05)
        self.renorm = widgets.Checkbox(value=False, description="renorm term 2")
        self.generate = widgets.Button(description="Generate", button_style="primary")
        self.generate.add_class("ff-sweep-generate")
        self.preview = widgets.Checkbox(value=preview, description="preview decoder", disabled=not has_decoder)
        self.full_vae = widgets.Button(description="full VAE", disabled=not has_decoder)
        self.runtime = widgets.HTML()
        self.runtime.add_class("ff-sweep-runtime")
        self.message = widgets.HTML()  # the explorer's output area: errors, "press Generate"
        self.message.add_class("ff-sweep-message")
        self.summary = widgets.HTML()
        self.summary.add_class("ff-sweep-summary")
        self.images = widgets.Image(format="png")
        self.images.add_class("ff-sweep-images")
        self.plot = widgets.Image(format="png")
        self.plot.add_class("ff-sweep-norms")

        # every callback goes through _guarded: an error shows in `message`, never in the widget log
        self.preset.observe(self._guarded(lambda change: self.apply_preset(change["new"])), names="value")
        for control in self._guidance_controls():
            control.observe(self._guarded(self._changed), names="value")
        self.generate.on_click(self._guarded(lambda _: self.regenerate()))
        self.full_vae.on_click(self._guarded(lambda _: self.decode_full()))
        self.auto_update = auto_update
        self.apply_preset(preset)

    @property
    def seeds(self) -> tuple[int, ...]:
        """One image per seed; setting new seeds makes the next move compute the baseline again."""
        return self._seeds

    @seeds.setter
    def seeds(self, value) -> None:
        self._seeds = _check_seeds(value)
        if hasattr(self, "_auto_update"):
            self._describe_runtime()  # the seconds per move scale with the seeds

    @property
    def prompt(self) -> str:
        """The prompt; setting a new one makes the next move compute the baseline again."""
        return self._prompt

    @prompt.setter
    def prompt(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"SweepExplorer prompt must be a non-empty string, got {value!r}")
        self._prompt = value

    @property
    def auto_update(self) -> bool:
        """Regenerate on every release of a control (else on "Generate")."""
        return self._auto_update

    @auto_update.setter
    def auto_update(self, value: bool) -> None:
        self._auto_update = bool(value)
        self._describe_runtime()

    def _describe_runtime(self) -> None:
        how = (
            "regenerates on every release of a control"
            if self._auto_update
            else "regenerates when you press <b>Generate</b>"
        )
        self.runtime.value = f"This explorer {how}. {html.escape(sweep_runtime_brief(len(self.seeds)))}"

    def _set_photo(self, photo, analyzer) -> None:
        from fastface_lite.faces.analyzer import FaceAnalyzer
        from fastface_lite.faces.images import load_rgb

        self.analyzer = analyzer or FaceAnalyzer("dlib" if self.mode == "tiny" else "auto")
        self.photo = load_rgb(photo, name="SweepExplorer(photo=...)")
        # NoFaceError here: the photo must show the face the ID inputs were made from
        self._reference = self.analyzer.largest(self.photo, name="SweepExplorer(photo=...)")

    def _guarded(self, callback):
        """`callback` as a widget callback: a project error shows as its message in the explorer's
        message area, any other exception as its traceback there; neither reaches the widget log."""

        def run(*args):
            try:
                callback(*args)
            except Exception as error:  # noqa: BLE001 - shown to the user below, with its traceback if not ours
                self.message.value = _error_html(error, "not run: ")

        return run

    # -- controls -> config ----------------------------------------------------------------------
    def _guidance_controls(self) -> list:
        return [
            self.dcg_type,
            self.shape,
            self.a_weight,
            self.b_weight,
            self.floor,
            self.power,
            *self.a_steps,
            *self.b_steps,
            self.rescale_on,
            self.phi,
            self.renorm,
        ]

    def _schedule(self, which: str) -> WeightSchedule:
        if self.shape.value == "custom":
            sliders = self.a_steps if which == "a" else self.b_steps
            return WeightSchedule.per_step([s.value for s in sliders])
        weight = (self.a_weight if which == "a" else self.b_weight).value
        return WeightSchedule(self.shape.value, weight=weight, c=self.floor.value, s=self.power.value)

    def config(self) -> FastFaceConfig:
        """The FastFaceConfig the controls describe (AM from the chosen preset, norms recorded).

        Raises ConfigError naming the slider when a slider holds a value that is not a finite
        number (code can set NaN; the handle cannot).
        """
        for control in self._guidance_controls():
            if isinstance(control, widgets.FloatSlider):
                number(
                    control.value,
                    f"slider {control.description!r} (set it to a number in [{control.min}, {control.max}])",
                )
        guidance = GuidanceConfig(
            dcg_type=self.dcg_type.value,
            a=self._schedule("a"),
            b=self._schedule("b"),
            renorm=self.renorm.value,
            rescale=self.phi.value if self.rescale_on.value else None,
            record_norms=True,
        )
        guidance.check_steps(NUM_STEPS)
        return self._base.replace(guidance=guidance)

    def weights(self, cfg: FastFaceConfig | None = None, timesteps: Sequence[float] | None = None) -> list:
        """(a, b) at each step: the guidance's own weights (`dcg.weights_at`, what the pipeline
        combines with) at `timesteps` (default: the pipeline's)."""
        from fastface_lite.method.dcg import weights_at

        g = (cfg or self.config()).guidance
        return [weights_at(i, t, g) for i, t in enumerate(self.timesteps if timesteps is None else timesteps)]

    def apply_preset(self, name: str) -> SweepResult | None:
        """Set every control from preset `name` (weights per step, DCG type, rescale), then regenerate once."""
        self._base = FastFaceConfig.preset(name, model=self.model)
        g = self._base.guidance
        with self._hold():
            if self.preset.value != name:
                self.preset.value = name
            self.dcg_type.value = g.dcg_type
            self.shape.value = "custom"
            self.renorm.value = g.renorm
            self.rescale_on.value = g.rescale is not None
            if g.rescale is not None:
                self.phi.value = g.rescale
            for i, t in enumerate(self.timesteps):
                self._show_value(self.a_steps[i], g.a.at(i, t))
                self._show_value(self.b_steps[i], g.b.at(i, t))
            self._sync_step_sliders()
        return self._after_change()

    @staticmethod
    def _show_value(slider: widgets.FloatSlider, value: float) -> None:
        """Set `slider` to exactly `value`, widening its range when the value lies outside it (a
        `cos` shape reaches 2w): a clamped slider would show a weight the run does not use."""
        slider.min = min(WEIGHT_RANGE["min"], value)
        slider.max = max(WEIGHT_RANGE["max"], value)
        slider.value = value

    def _sync_step_sliders(self) -> None:
        """With a timestep shape the per-step sliders show what the shape gives and are read-only;
        with `custom` they are the controls, on their usual range."""
        custom = self.shape.value == "custom"
        for slider in (*self.a_steps, *self.b_steps):
            slider.disabled = not custom
        for slider in (self.a_weight, self.b_weight, self.floor, self.power):
            slider.disabled = custom
        with self._hold():
            if custom:
                for slider in (*self.a_steps, *self.b_steps):
                    slider.min, slider.max = WEIGHT_RANGE["min"], WEIGHT_RANGE["max"]
                return
            try:
                values = self.weights()
            except FastFaceError:  # the regeneration that follows says what is wrong
                return
            for i, (a, b) in enumerate(values):
                self._show_value(self.a_steps[i], a)
                self._show_value(self.b_steps[i], b)

    @contextmanager
    def _hold(self):
        """Set controls in bulk without regenerating on each (nests)."""
        outer, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = outer

    def _changed(self, change) -> None:
        if self._holding:
            return
        if change["owner"] in (self.shape, self.a_weight, self.b_weight, self.floor, self.power):
            self._sync_step_sliders()
        self._after_change()

    def _after_change(self) -> SweepResult | None:
        self._stale = True  # the controls differ from what `last` ran until a run succeeds
        if self.auto_update:
            return self.regenerate()
        self.message.value = "Controls changed: press <b>Generate</b> to run them."
        return None

    # -- generation -------------------------------------------------------------------------------
    def current(self) -> SweepResult | None:
        """The result for the controls as they are now: the last move's when it ran them, else a
        run now (what pressing Generate does). Code that sets controls and then reads the images
        works the same whether the explorer regenerates on release or waits for Generate."""
        if self.last is not None and not self._stale:
            return self.last
        return self.regenerate()

    def regenerate(self) -> SweepResult | None:
        """Run the pipeline for every seed with the current controls and refresh the outputs.

        A config the method rejects, or an input the pipeline refuses (a project error), shows
        its message in the message area and returns None; the previous images stay.
        """
        start = time.perf_counter()
        try:
            result = self._run()
        except FastFaceError as error:
            self.message.value = _error_html(error, "not run: ")
            return None
        self.runs += 1
        self._stale = False
        self.message.value = ""
        self.images.value = figure_png(self._grid(result), dpi=80)
        self.plot.value = figure_png(schedule_and_norms(result.weights, result.norms), dpi=80)
        self.last = replace(result, seconds=time.perf_counter() - start)
        self._summarize(self.last)
        return self.last

    def _run(self) -> SweepResult:
        from fastface_lite.method.branches import planned_evaluations

        cfg = self.config()
        latents, norms, evaluations, weights, moved = [], [], 0, [], 0
        for index, seed in enumerate(self.seeds):
            # only the first seed records norms (every branch); the others run what the config reads
            seed_cfg = cfg if index == 0 else cfg.replace(guidance=replace(cfg.guidance, record_norms=False))
            out = self._call(seed_cfg, seed)
            latents.append(out.images)
            moved += out.unet_evaluations
            if index == 0:
                norms, evaluations = out.guidance_norms, out.unet_evaluations
                weights = self.weights(cfg, out.timesteps)  # at the timesteps the run visited
        preview = self.preview.value
        reused = self._baseline is not None and self._baseline.matches(self.prompt, self.seeds, self.id_inputs)
        if not reused:
            self._baseline = self._run_baseline()
            moved += self._baseline.evaluations
        images = self._decode(latents, preview)
        baseline, baseline_identity = self._decoded_baseline(preview)
        return SweepResult(
            cfg,
            images,
            weights,
            norms,
            evaluations,
            planned_evaluations(cfg, self.timesteps),
            latents,
            preview,
            baseline,
            self._scores(images),
            baseline_identity,
            moved,
            reused,
        )

    def _call(self, cfg: FastFaceConfig, seed: int):
        return self.pipe(
            prompt=self.prompt,
            fastface=cfg,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
            **self.id_inputs.call_kwargs(),
        )

    def _run_baseline(self) -> _Baseline:
        """The `baseline` variant (FastFace off) on every seed, as latents."""
        cfg = FastFaceConfig.preset("baseline", model=self.model)
        outs = [self._call(cfg, seed) for seed in self.seeds]
        return _Baseline(
            self.prompt, self.seeds, self.id_inputs, [o.images for o in outs], sum(o.unet_evaluations for o in outs)
        )

    def _decoded_baseline(self, preview: bool) -> tuple[list, list]:
        if preview not in self._baseline.decoded:
            images = self._decode(self._baseline.latents, preview)
            self._baseline.decoded[preview] = (images, self._scores(images))
        return self._baseline.decoded[preview]

    def _scores(self, images: list) -> list:
        """Identity score of each image against the photo (None each when no photo was given)."""
        from fastface_lite.evaluation.metrics import identity_similarity

        if self._reference is None:
            return [None] * len(images)
        return [identity_similarity(self._reference, image, self.analyzer) for image in images]

    def decode_full(self) -> SweepResult | None:
        """Decode the last images (and the baseline) again with the full VAE and show them."""
        if self.last is None or not self.last.preview:
            return self.last
        images = self._decode(self.last.latents, False)
        baseline, baseline_identity = self._decoded_baseline(False)
        self.last = replace(
            self.last,
            images=images,
            preview=False,
            baseline=baseline,
            identity=self._scores(images),
            baseline_identity=baseline_identity,
        )
        self.images.value = figure_png(self._grid(self.last), dpi=80)
        self._summarize(self.last)
        return self.last

    def _decode(self, latents: list, preview: bool) -> list:
        return [self.pipe.latents_to_images(x, "pil", preview=preview)[0] for x in latents]

    def _grid(self, result: SweepResult) -> Figure:
        return sweep_grid(
            result.baseline,
            result.images,
            [f"seed {s}" for s in self.seeds],
            [score_label(s) for s in result.baseline_identity],
            [score_label(s) for s in result.identity],
            photo=self.photo,
        )

    def _summarize(self, result: SweepResult) -> None:
        a, b = zip(*result.weights, strict=True)
        g = result.config.guidance
        rescale = f"phi {g.rescale:.2f}" if g.rescale is not None else "off"
        term1 = [n["term1"] for n in result.norms]
        term2 = [n["term2"] for n in result.norms]
        baseline = (
            "baseline reused"
            if result.baseline_reused
            else f"baseline computed: {self._baseline.evaluations} of them; reused until the prompt, seeds or ID change"
        )
        identity = ""
        if self._reference is not None:
            identity = (
                f"<br>identity to the photo (cosine, {html.escape(self.analyzer.backend)}, 1 = same face): "
                f"guided {_labels(result.identity)} · baseline {_labels(result.baseline_identity)}"
            )
        self.summary.value = (
            f"<b>run {self.runs}</b> · DCG type {g.dcg_type} · schedule {self.shape.value} · "
            f"a {_fmt(a)} · b {_fmt(b)} · rescale {rescale} · renorm {'on' if g.renorm else 'off'}<br>"
            f"UNet evaluations per image: <b>{result.planned}</b> (first seed {result.evaluations}: "
            f"its norms need every branch) · AM from preset {self.preset.value} · "
            f"decoded with {'the preview decoder' if result.preview else 'the full VAE'}<br>"
            f"‖term 1‖ per step {_norms(term1)} · ‖term 2‖ per step {_norms(term2)}{identity}<br>"
            f"last move: <b>{result.move_evaluations}</b> UNet evaluations ({baseline}), "
            f"<b>{result.seconds:.2f} s</b> measured"
        )

    @property
    def widget(self) -> widgets.Widget:
        """The whole explorer as one widget (root DOM class `ff-sweep`)."""
        if not hasattr(self, "_widget"):
            shape_row = widgets.HBox([self.shape, self.a_weight, self.b_weight, self.floor, self.power])
            steps = widgets.HBox([widgets.VBox(self.a_steps), widgets.VBox(self.b_steps)])
            guidance_row = widgets.HBox([self.rescale_on, self.phi, self.renorm])
            self._widget = widgets.VBox(
                [
                    self.preset,
                    self.dcg_type,
                    guidance_row,
                    shape_row,
                    steps,
                    widgets.HBox([self.generate, self.preview, self.full_vae]),
                    self.runtime,
                    self.message,
                    self.summary,
                    self.images,  # photo, baseline and guided grid; the plots under it, not beside
                    self.plot,
                ]
            )
            self._widget.add_class("ff-sweep")
        return self._widget

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def score_label(score) -> str:
    """How an image's identity score reads under it: "ID 0.62", "no face", or "" without a photo."""
    if score is None:
        return ""
    return "no face" if score.similarity is None else f"ID {score.similarity:.2f}"


def _labels(scores: Sequence) -> str:
    return "[" + ", ".join(score_label(s) for s in scores) + "]"


def sweep_grid(
    baseline: Sequence,
    guided: Sequence,
    titles: Sequence[str],
    baseline_labels: Sequence[str],
    guided_labels: Sequence[str],
    *,
    photo=None,
    cell: float = 2.2,
) -> Figure:
    """Rows: baseline (FastFace off) and guided; one column per seed, the identity photo first.

    Each image carries its label underneath (its identity score or "no face").
    """
    cols = len(guided) + (photo is not None)
    fig = Figure(figsize=(cell * cols, 2 * cell + 0.6), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    if photo is not None:
        axes[0, 0].imshow(photo)
        axes[0, 0].set_title("identity photo", fontsize=LABEL_SIZE)
        axes[1, 0].axis("off")
        for ax in axes[:, 0]:
            ax.set_xticks([])
            ax.set_yticks([])
    grid = axes[:, 1:] if photo is not None else axes
    for row, (images, labels) in enumerate(((baseline, baseline_labels), (guided, guided_labels))):
        for ax, image, label in zip(grid[row], images, labels, strict=True):
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label, fontsize=LABEL_SIZE)
    label_grid(grid, ["baseline (FastFace off)", "guided (these settings)"], titles)
    return fig


def schedule_and_norms(weights: Sequence[tuple[float, float]], norms: Sequence[dict]) -> Figure:
    """Left: a and b per step. Right: norms of the two guidance terms per step."""
    fig = Figure(figsize=(6.4, 2.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    steps = np.arange(len(weights))
    a, b = zip(*weights, strict=True)
    left.plot(steps, a, "o-", label="a (term 1)")
    left.plot(steps, b, "s-", label="b (term 2)")
    left.set(xlabel="step", ylabel="weight", xticks=steps, title="guidance schedule")
    left.legend(fontsize=7)
    if norms:
        right.plot(steps[: len(norms)], [n["term1"] for n in norms], "o-", label="‖term 1‖")
        right.plot(steps[: len(norms)], [n["term2"] for n in norms], "s-", label="‖term 2‖")
        right.legend(fontsize=7)
    right.set(xlabel="step", ylabel="Frobenius norm", xticks=steps, title="guidance terms")
    return fig


# ----------------------------------------------------------------------------------------------
# Attention inspector
# ----------------------------------------------------------------------------------------------
ALL = "all"


class AttentionInspector:
    """Browse a recorded run (`fastface_lite.trace`): token, block, step and branch. Text tokens
    show their heat map over the image; ID tokens show raw (before AM), used (after AM) and their
    difference side by side (the "ID stage" control picks which one `last` and the numbers describe).

    Args:
        trace: a finished `Trace`.
        image: the generated image to draw the maps over (None: the maps alone).
    """

    def __init__(self, trace, image=None):
        self.trace, self.image = trace, image
        kinds = ["text"] + (["id"] if trace.id_tokens else [])
        self.kind = widgets.ToggleButtons(options=kinds, value="text", description="tokens")
        self.token = widgets.Dropdown(description="token")
        self.block = widgets.Dropdown(options=[ALL, *trace.blocks], value=ALL, description="block")
        self.step = widgets.Dropdown(options=[ALL, *trace.steps], value=ALL, description="step")
        self.branch = widgets.Dropdown(options=trace.branches, value=trace.branches[-1], description="branch")
        self.stage = widgets.ToggleButtons(options=list(trace.stages), value=trace.stages[-1], description="ID stage")
        self.overlay = widgets.Checkbox(value=image is not None, description="over the image", disabled=image is None)
        self.view = widgets.Image(format="png")
        self.view.add_class("ff-inspector-map")
        self.summary = widgets.HTML()
        self.summary.add_class("ff-inspector-summary")
        self.last = None
        self._set_token_options()
        self.kind.observe(self._kind_changed, names="value")
        for control in (self.token, self.block, self.step, self.branch, self.stage, self.overlay):
            control.observe(lambda _: self.refresh(), names="value")
        self.refresh()

    def _set_token_options(self) -> None:
        if self.kind.value == "text":
            options = list(dict.fromkeys(self.trace.words)) or list(range(77))
        else:
            options = [*self.trace.id_tokens, ALL]  # not ALL first: the mean of all raw ID maps is 1/T everywhere
        self._quiet = True
        self.token.options = options
        self.token.value = options[0]
        self._quiet = False
        self.stage.disabled = self.kind.value == "text"
        # the raw / used / difference row shows the maps alone: an image under them hides the signs
        self.overlay.disabled = self.image is None or self._compares_stages()

    def _kind_changed(self, _) -> None:
        self._set_token_options()
        self.refresh()

    def query(self) -> dict:
        """The `Trace.maps` arguments the controls select."""
        return dict(
            kind=self.kind.value,
            token=None if self.token.value == ALL else self.token.value,
            block=None if self.block.value == ALL else self.block.value,
            step=None if self.step.value == ALL else self.step.value,
            branch=self.branch.value,
            stage=self.stage.value if self.kind.value == "id" else "used",
        )

    def _compares_stages(self) -> bool:
        """ID maps with both stages recorded: show raw, used and their difference together."""
        return self.kind.value == "id" and {"raw", "used"} <= set(self.trace.stages)

    def refresh(self):
        """Recompute the map for the current selection; a selection with no data says why.

        Text tokens: one map (over the image when asked). ID tokens: raw (before AM), used (after
        AM) and used − raw side by side, raw and used on one shared scale, the difference on a
        diverging scale centred at 0; `last` is the map of the chosen ID stage.
        """
        if getattr(self, "_quiet", False):
            return None
        query = self.query()
        try:
            if self._compares_stages():
                raw = self.trace.maps(**{**query, "stage": "raw"})
                used = self.trace.maps(**{**query, "stage": "used"})
                heatmap = raw if query["stage"] == "raw" else used
            else:
                heatmap = self.trace.maps(**query)
        except (ValueError, NothingRecorded) as error:  # a selection with no maps, or a bad one: say why
            self.summary.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return None
        values = heatmap.to_numpy()
        row, col = np.unravel_index(int(values.argmax()), values.shape)
        self.summary.value = (
            f"<b>{html.escape(heatmap.title)}</b><br>grid {values.shape[0]}×{values.shape[1]} · "
            f"mean {values.mean():.4f} · max {values.max():.4f} at row {row}, col {col}"
        )
        if self._compares_stages():
            difference = used.to_numpy() - raw.to_numpy()
            self.summary.value += (
                f"<br>used − raw: largest change {np.abs(difference).max():.4f} "
                "(red: AM added attention there, blue: removed)"
            )
            fig = map_row(
                {"raw (before AM)": raw.to_numpy(), "used (after AM)": used.to_numpy()},
                difference=("used − raw", difference),
                label="ID attention weight",
                title=f"{used.token} · {used.block} · {used.step} · {used.branch}",
            )
        else:
            fig = Figure(figsize=(3.2, 3.4), layout="constrained")
            heatmap.plot_overlay(self.image if self.overlay.value else None, ax=fig.subplots(), colorbar=True)
        self.view.value = figure_png(fig, dpi=80)
        self.last = heatmap
        return heatmap

    @property
    def widget(self) -> widgets.Widget:
        """The whole inspector as one widget (root DOM class `ff-inspector`)."""
        if not hasattr(self, "_widget"):
            controls = widgets.VBox(
                [self.kind, self.token, self.block, self.step, self.branch, self.stage, self.overlay]
            )
            self._widget = widgets.VBox([widgets.HBox([controls, self.view]), self.summary])
            self._widget.add_class("ff-inspector")
        return self._widget

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
