"""Interactive explorers for the notebooks: a guidance sweep and an attention inspector.

Both are plain objects that hold ipywidgets controls and show their results in widgets whose
values are ordinary data (HTML text, PNG bytes), so nothing needs a browser to be checked: a test
sets a control's `.value` and reads `summary.value`, `images.value` or `last`.

    explorer = SweepExplorer(pipe, inputs, "a photo of a person")   # then display(explorer)
    inspector = AttentionInspector(trace, image)
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from fastface_lite.errors import ConfigError, NothingRecorded
from fastface_lite.inspect.plots import figure_png
from fastface_lite.method.config import VARIANTS, FastFaceConfig
from fastface_lite.method.dcg_config import GuidanceConfig
from fastface_lite.method.schedules import SCHEDULE_SHAPES, WeightSchedule

NUM_STEPS = 4  # the presets' step count; the sweep keeps it fixed
WEIGHT_RANGE = dict(min=0.0, max=5.0, step=0.1)


def _slider(description: str, value: float, css_class: str, **limits) -> widgets.FloatSlider:
    # continuous_update=False: one regeneration per release of the handle, not one per pixel
    slider = widgets.FloatSlider(
        value=value,
        description=description,
        continuous_update=False,
        readout_format=".2f",
        **{**WEIGHT_RANGE, **limits},
    )
    slider.add_class(css_class)
    return slider


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def _norms(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


# ----------------------------------------------------------------------------------------------
# Guidance sweep
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepResult:
    """What one regeneration of the sweep produced.

    config: the FastFaceConfig run (norm recording on).
    images: one PIL image per seed.
    weights: (a, b) per step, as the schedules gave them.
    norms: per step, Frobenius norms of the branches and of the two guidance terms (first seed).
    evaluations: UNet evaluations of the first seed's image (norm recording evaluates all branches).
    planned: UNet evaluations the same config needs without norm recording.
    latents: the final latents per seed, (1, 4, h, w) each (to decode again with the other decoder).
    preview: whether ``images`` came from the preview decoder (else the full VAE).
    """

    config: FastFaceConfig
    images: list
    weights: list
    norms: list
    evaluations: int
    planned: int
    latents: list = ()
    preview: bool = False


class SweepExplorer:
    """Per-step guidance weights, schedule shape, rescale phi and DCG type, with preset buttons;
    every change regenerates a small grid (one image per seed) and the plot of the schedule and
    the guidance-term norms per step.

    Args:
        pipe: a FastFacePipeline (tiny or real).
        id_inputs: `fastface_lite.sdxl.adapter.IDInputs` for the identity.
        prompt: the prompt.
        model: the model preset (scheduler timesteps, default weights).
        seeds: one image per seed.
        preset: the variant the controls start from; its attention settings are kept throughout.
        auto_update: regenerate on every change (else press "Generate").
        preview: decode with the pipeline's preview decoder (``pipe.preview_decoder``, the tiny
            autoencoder) while sweeping; "full VAE" decodes the last images again with the VAE.
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
        auto_update: bool = True,
        preview: bool = False,
    ):
        from fastface_lite.sdxl.loading import model_timesteps

        has_decoder = getattr(pipe, "preview_decoder", None) is not None
        if preview and not has_decoder:
            raise ConfigError(
                "SweepExplorer(preview=True) needs a pipeline with a preview decoder: "
                "load_pipeline(..., preview_decoder=True) or tiny_pipeline(..., preview_decoder=True)"
            )

        self.pipe, self.id_inputs, self.prompt, self.model = pipe, id_inputs, prompt, model
        self.seeds = tuple(int(s) for s in seeds)
        self.timesteps = model_timesteps(model, NUM_STEPS)
        self.last: SweepResult | None = None
        self.runs = 0
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
        self.a_steps = [_slider(f"a, step {i}", 1.0, f"ff-a-{i}") for i in range(NUM_STEPS)]
        self.b_steps = [_slider(f"b, step {i}", 1.0, f"ff-b-{i}") for i in range(NUM_STEPS)]
        self.rescale_on = widgets.Checkbox(value=False, description="rescale")
        self.phi = _slider("phi", 0.7, "ff-phi", max=1.0, step=0.05)
        self.renorm = widgets.Checkbox(value=False, description="renorm term 2")
        self.generate = widgets.Button(description="Generate", button_style="primary")
        self.preview = widgets.Checkbox(value=preview, description="preview decoder", disabled=not has_decoder)
        self.full_vae = widgets.Button(description="full VAE", disabled=not has_decoder)
        self.summary = widgets.HTML()
        self.summary.add_class("ff-sweep-summary")
        self.images = widgets.Image(format="png")
        self.images.add_class("ff-sweep-images")
        self.plot = widgets.Image(format="png")
        self.plot.add_class("ff-sweep-norms")

        self.preset.observe(lambda change: self.apply_preset(change["new"]), names="value")
        for control in self._guidance_controls():
            control.observe(self._changed, names="value")
        self.generate.on_click(lambda _: self.regenerate())
        self.full_vae.on_click(lambda _: self.decode_full())
        self.auto_update = auto_update
        self.apply_preset(preset)

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
        """The FastFaceConfig the controls describe (AM from the chosen preset, norms recorded)."""
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

    def weights(self, cfg: FastFaceConfig | None = None) -> list[tuple[float, float]]:
        """(a, b) at each step of the sweep's timesteps."""
        g = (cfg or self.config()).guidance
        return [(g.a.at(i, t), g.b.at(i, t)) for i, t in enumerate(self.timesteps)]

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
                self.a_steps[i].value = g.a.at(i, t)
                self.b_steps[i].value = g.b.at(i, t)
            self._sync_step_sliders()
        return self.regenerate() if self.auto_update else None

    def _sync_step_sliders(self) -> None:
        """With a timestep shape the per-step sliders show what the shape gives and are read-only."""
        custom = self.shape.value == "custom"
        for slider in (*self.a_steps, *self.b_steps):
            slider.disabled = not custom
        for slider in (self.a_weight, self.b_weight, self.floor, self.power):
            slider.disabled = custom
        if not custom:
            try:
                values = self.weights()
            except ConfigError:
                return
            with self._hold():
                for i, (a, b) in enumerate(values):
                    self.a_steps[i].value = min(max(a, WEIGHT_RANGE["min"]), WEIGHT_RANGE["max"])
                    self.b_steps[i].value = min(max(b, WEIGHT_RANGE["min"]), WEIGHT_RANGE["max"])

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
        if self.auto_update:
            self.regenerate()

    # -- generation -------------------------------------------------------------------------------
    def regenerate(self) -> SweepResult | None:
        """Run the pipeline for every seed with the current controls and refresh the outputs.

        A config the method rejects shows its error in the summary; the previous images stay.
        """
        from fastface_lite.method.branches import planned_evaluations

        try:
            cfg = self.config()
        except (ConfigError, ValueError) as error:
            self.summary.value = f"<span style='color:#b00'>not run: {html.escape(str(error))}</span>"
            return None
        latents, norms, evaluations = [], [], 0
        for index, seed in enumerate(self.seeds):
            # only the first seed records norms (every branch); the others run what the config reads
            seed_cfg = cfg if index == 0 else cfg.replace(guidance=replace(cfg.guidance, record_norms=False))
            out = self.pipe(
                prompt=self.prompt,
                fastface=seed_cfg,
                generator=torch.Generator().manual_seed(seed),
                output_type="latent",
                **self.id_inputs.call_kwargs(),
            )
            latents.append(out.images)
            if index == 0:
                norms, evaluations = out.guidance_norms, out.unet_evaluations
        self.runs += 1
        preview = self.preview.value
        self.last = SweepResult(
            cfg,
            self._decode(latents, preview),
            self.weights(cfg),
            norms,
            evaluations,
            planned_evaluations(cfg, self.timesteps),
            latents,
            preview,
        )
        self._show(self.last)
        return self.last

    def decode_full(self) -> SweepResult | None:
        """Decode the last images again with the full VAE (after a preview) and show them."""
        if self.last is None or not self.last.preview:
            return self.last
        self.last = replace(self.last, images=self._decode(self.last.latents, False), preview=False)
        self._show(self.last)
        return self.last

    def _decode(self, latents: list, preview: bool) -> list:
        return [self.pipe.latents_to_images(x, "pil", preview=preview)[0] for x in latents]

    def _show(self, result: SweepResult) -> None:
        a, b = zip(*result.weights, strict=True)
        g = result.config.guidance
        rescale = f"phi {g.rescale:.2f}" if g.rescale is not None else "off"
        term1 = [n["term1"] for n in result.norms]
        term2 = [n["term2"] for n in result.norms]
        self.summary.value = (
            f"<b>run {self.runs}</b> · DCG type {g.dcg_type} · schedule {self.shape.value} · "
            f"a {_fmt(a)} · b {_fmt(b)} · rescale {rescale} · renorm {'on' if g.renorm else 'off'}<br>"
            f"UNet evaluations per image: <b>{result.planned}</b> (first seed {result.evaluations}: "
            f"its norms need every branch) · AM from preset {self.preset.value} · "
            f"decoded with {'the preview decoder' if result.preview else 'the full VAE'}<br>"
            f"‖term 1‖ per step {_norms(term1)} · ‖term 2‖ per step {_norms(term2)}"
        )
        self.images.value = figure_png(image_grid(result.images, [f"seed {s}" for s in self.seeds]), dpi=80)
        self.plot.value = figure_png(schedule_and_norms(result.weights, result.norms), dpi=80)

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
                    self.summary,
                    widgets.HBox([self.images, self.plot]),
                ]
            )
            self._widget.add_class("ff-sweep")
        return self._widget

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def image_grid(images: Sequence, titles: Sequence[str], cell: float = 2.2) -> Figure:
    """One row of images with titles."""
    fig = Figure(figsize=(cell * len(images), cell + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(images)))
    for ax, image, title in zip(axes, images, titles, strict=True):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
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
    """Browse a recorded run (`fastface_lite.trace`): token, block, step, branch and, for ID
    tokens, raw (before AM) or used (after AM). Shows the heat map over the image and its numbers.

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

    def refresh(self):
        """Recompute the map for the current selection; a selection with no data says why."""
        if getattr(self, "_quiet", False):
            return None
        try:
            heatmap = self.trace.maps(**self.query())
        except (ValueError, NothingRecorded) as error:  # a selection with no maps, or a bad one: say why
            self.summary.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return None
        values = heatmap.to_numpy()
        row, col = np.unravel_index(int(values.argmax()), values.shape)
        self.summary.value = (
            f"<b>{html.escape(heatmap.title)}</b><br>grid {values.shape[0]}×{values.shape[1]} · "
            f"mean {values.mean():.4f} · max {values.max():.4f} at row {row}, col {col}"
        )
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
