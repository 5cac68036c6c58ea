"""The compiled fast path: ``pipe.compile(...)`` / ``pipe.uncompile()`` (docs/method.md §6).

An eager call installs the FastFace attention processors, runs, and removes them, and passes the
FaceID LoRA weight to every UNet forward (peft then scales the unfused LoRA). That keeps calls
independent but leaves nothing for ``torch.compile`` to hold on to. ``compile`` makes the state
explicit and persistent until ``uncompile``:

* the FastFace processors stay installed on the UNet, with one step context the pipeline owns
  (the call still sets the step before every UNet evaluation);
* the FaceID LoRA is fused into the UNet weights at the config's ``faceid_lora_scale`` (no LoRA
  matmuls per layer); a call with another weight is refused (:class:`~fastface_lite.errors.ConfigError`),
  since honouring it would mean unfusing and refusing everything compiled so far;
* the UNet's forward is wrapped by ``torch.compile`` (``nn.Module.compile``: the module and its
  ``config`` stay as they are, so the pipeline's code does not change).

``uncompile`` undoes all three: the very same original processor objects go back, the LoRA is
unfused (floating-point: the weights come back within rounding, see the tests) and its scaling
restored, and the UNet runs eagerly again. While compiled, the UNet is FastFace's: another
pipeline sharing it (``StableDiffusionXLPipeline(**pipe.components)``) would run the FastFace
processors too, so uncompile before using it.

Graphs: the processors read the step index and the step's AM constants as Python numbers, so the
compiled UNet specialises on them, one graph per distinct (step, branch count) of a run (see
:mod:`fastface_lite.sdxl.processor`); the first call of each compiles, later calls reuse them.
A call with another attention config re-points the installed processors at it (more graphs).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastface_lite.errors import ConfigError
from fastface_lite.method.config import FastFaceConfig
from fastface_lite.sdxl.processor import Installation, StepContext, install

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # inductor modes that capture CUDA graphs


@dataclass
class CompiledState:
    """What ``pipe.compile`` changed, so that ``uncompile`` can undo it and calls can check it.

    Attributes:
        installation: the persistent FastFace processors and their step context.
        lora_scale: the FaceID LoRA weight fused into the UNet (None: the UNet has no LoRA).
        scalings: (peft LoRA layer, its ``scaling`` dict before fusing) per LoRA layer.
        attention, ip_scale: what the installed processors apply now.
        mode, backend: the ``torch.compile`` settings used.
    """

    installation: Installation
    lora_scale: float | None
    scalings: list
    attention: object
    ip_scale: float | None
    mode: str | None
    backend: str

    @property
    def context(self) -> StepContext:
        return self.installation.context


def compile_unet(pipe, cfg: FastFaceConfig, mode: str | None, backend: str, dynamic: bool | None) -> CompiledState:
    """Install, fuse and compile (see the module docstring); returns the state to keep on ``pipe``."""
    device_type = pipe.unet.device.type
    if mode is None:
        mode = "reduce-overhead" if device_type == "cuda" and backend == "inductor" else None
    elif mode in CUDA_GRAPH_MODES and device_type != "cuda":
        raise ConfigError(
            f"compile(mode={mode!r}) captures CUDA graphs, but the UNet is on {device_type}; "
            "use mode='default' (or leave mode unset) off CUDA"
        )
    if mode is not None and backend != "inductor":
        raise ConfigError(f"compile(mode={mode!r}) is an inductor setting; leave mode unset with backend={backend!r}")
    installation = install(pipe.unet, cfg.attention, StepContext(), ip_scale=cfg.ip_adapter_scale)
    try:
        lora_scale, scalings = _fuse_lora(pipe.unet, cfg.faceid_lora_scale)
    except Exception:
        installation.remove()
        raise
    options = {"backend": backend, "dynamic": dynamic}
    if mode is not None:
        options["mode"] = mode
    pipe.unet.compile(**options)
    return CompiledState(installation, lora_scale, scalings, cfg.attention, cfg.ip_adapter_scale, mode, backend)


def uncompile_unet(pipe, state: CompiledState) -> None:
    """Undo :func:`compile_unet`: eager forward, LoRA unfused at its old scaling, processors back."""
    # nn.Module.compile keeps the compiled callable here; None is what an uncompiled module holds
    pipe.unet._compiled_call_impl = None
    if state.lora_scale is not None:
        pipe.unet.unfuse_lora()
        for layer, scaling in state.scalings:
            layer.scaling.clear()
            layer.scaling.update(scaling)
    state.installation.remove()


def prepare_call(state: CompiledState, cfg: FastFaceConfig) -> StepContext:
    """Check a call's config against the compiled pipeline and point the processors at it.

    Returns the step context the call must update. Raises ConfigError when the call asks for a
    FaceID LoRA weight other than the fused one.
    """
    fused = 1.0 if state.lora_scale is None else state.lora_scale
    if cfg.faceid_lora_scale != fused:
        raise ConfigError(
            f"faceid_lora_scale={cfg.faceid_lora_scale} but the pipeline was compiled with the FaceID LoRA "
            f"fused at {fused}; call pipe.uncompile() and pipe.compile() with the new config, or keep "
            f"faceid_lora_scale={fused}"
        )
    if cfg.attention != state.attention or cfg.ip_adapter_scale != state.ip_scale:
        processors = state.installation.processors.values()
        cfg.attention.check_tokens(min(min(p.num_tokens) for p in processors))
        for proc in processors:
            proc.attention = cfg.attention
            proc.scale = (
                list(proc.original.scale)
                if cfg.ip_adapter_scale is None
                else [cfg.ip_adapter_scale] * len(proc.num_tokens)
            )
        state.attention, state.ip_scale = cfg.attention, cfg.ip_adapter_scale
    return state.context


def _fuse_lora(unet, weight: float):
    """Fuse the UNet's LoRA (the FaceID one: loading fuses distillation LoRAs and drops them) at
    ``weight``. Returns (weight or None without a LoRA, saved scalings)."""
    if not getattr(unet, "peft_config", None):
        if weight != 1.0:
            raise ConfigError(
                f"faceid_lora_scale={weight} but the UNet carries no LoRA; load a FaceID adapter "
                "with its LoRA or leave faceid_lora_scale at 1.0"
            )
        return None, []
    from peft.tuners.tuners_utils import BaseTunerLayer

    # diffusers' fuse_lora multiplies each layer's scaling by the weight and leaves it so after
    # unfusing; keep the originals to put back
    scalings = [(m, dict(m.scaling)) for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    unet.fuse_lora(lora_scale=weight)
    return weight, scalings


def check_compilable(pipe) -> None:
    """Refuse to compile twice (the second would fuse the LoRA again)."""
    if getattr(pipe, "_compiled_state", None) is not None:
        raise ConfigError("the pipeline is already compiled; call pipe.uncompile() first")
