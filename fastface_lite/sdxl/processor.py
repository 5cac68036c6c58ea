"""The attention processor that runs AM inside diffusers' UNet, installed per pipeline instance.

diffusers routes every ``attn2`` of an IP-Adapter UNet through an ``IPAdapterAttnProcessor2_0``
object. :func:`install` swaps those objects, on one UNet only, for
:class:`FastFaceAttnProcessor` objects that share the original ``to_k_ip``/``to_v_ip`` weights,
and hands back an :class:`Installation` whose ``remove()`` puts the very same original objects
back. No class is patched, so other pipelines in the process are unaffected.

Each processor reads the denoising step from a :class:`StepContext` that the caller owns and
updates before each UNet evaluation: nothing is counted inside the processor, so a second call
or a call after an exception starts from a clean state.

Nothing here waits for the device inside a UNet forward: whether AM is on in a layer depends only
on Python values (the part, the step index), never on tensor contents. Under ``torch.compile`` the
step index and the step's AM constants (k, q, s of the schedule) are Python numbers, so a compiled
UNet specialises on them: one graph per distinct (step index, branch count) of a run, at most one
per step (4 for the 4-step presets, within dynamo's recompile limit of 8). Passing the constants
as 0-d tensors would not save those graphs, since the branch count (the batch) and whether AM is
on also change from step to step, and the quantile's interpolation index must be a Python int.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from diffusers.image_processor import IPAdapterMaskProcessor
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from fastface_lite.method.am import ip_attention_maps, merge_heads, split_heads, unet_part
from fastface_lite.method.am_config import AttentionConfig


@dataclass
class StepContext:
    """Where the current UNet evaluation sits in the run; owned and updated by the caller.

    Attributes:
        step_index: index of the denoising step being evaluated.
        timestep: its scheduler timestep.
        branches: guidance branches in the batch, in batch order (e.g. (0, 1, 2) or (2,)).
        branch_names: their names, e.g. ("uncond", "id", "text+id") for FastFace's dcg_type 3.
        batch_per_branch: images per branch.
    """

    step_index: int | None = None
    timestep: float | None = None
    branches: tuple[int, ...] = ()
    branch_names: tuple[str, ...] = ()
    batch_per_branch: int = 1


class AttentionObserver(Protocol):
    """Receives attention maps as they are computed (the recorder implements this)."""

    wants_text: bool  # also call on_text_attention (costs an extra attention-probability pass)

    def on_text_attention(self, layer: str, context: StepContext, query, key) -> None:
        """query (B, heads, N, d), key (B, heads, L, d) of the text cross-attention."""

    def on_id_attention(self, layer: str, context: StepContext, raw, used) -> None:
        """raw, used: (B, heads, N, T) ID-token probabilities before and after AM."""


class FastFaceAttnProcessor(IPAdapterAttnProcessor2_0):
    """IP-Adapter attention with AM in target layers and steps (docs/method.md §6).

    Outside AM (non-target part or step) and without an observer it runs diffusers' own code,
    so results there are bit-identical to the stock processor.
    """

    def __init__(
        self,
        original: IPAdapterAttnProcessor2_0,
        layer_name: str,
        attention: AttentionConfig,
        context: StepContext,
        ip_scale: float | None = None,
        observer: AttentionObserver | None = None,
    ):
        # Module init only: the parent's __init__ would allocate fresh projection weights.
        torch.nn.Module.__init__(self)
        self.original = original
        self.hidden_size = original.hidden_size
        self.cross_attention_dim = original.cross_attention_dim
        self.num_tokens = list(original.num_tokens)
        self.scale = list(original.scale) if ip_scale is None else [ip_scale] * len(self.num_tokens)
        self.to_k_ip = original.to_k_ip  # shared, not copied
        self.to_v_ip = original.to_v_ip
        self.layer_name = layer_name
        self.part = unet_part(layer_name)
        self.attention = attention
        self.context = context
        self.observer = observer

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks=None,
    ) -> torch.Tensor:
        step = self.context.step_index
        if step is None:
            raise RuntimeError(
                f"{self.layer_name}: FastFace attention ran outside a step; evaluate the UNet "
                "through FastFacePipeline or inside an Installation that tracks steps"
            )
        if self.observer is None and not self.attention.active(self.part, step):
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale, ip_adapter_masks
            )
        return self._explicit_call(attn, hidden_states, encoder_hidden_states, attention_mask, temb, ip_adapter_masks)

    # The same computation as the stock processor, but with the ID-token attention made explicit
    # so its probabilities can be transformed and observed.
    def _explicit_call(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, ip_adapter_masks):
        if not isinstance(encoder_hidden_states, tuple):
            raise TypeError(f"{self.layer_name}: expected (text_states, ip_states) from an IP-Adapter UNet")
        text_states, ip_states = encoder_hidden_states
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial_shape = None
        if hidden_states.ndim == 4:
            spatial_shape = hidden_states.shape
            b, c, h, w = spatial_shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        heads = attn.heads
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, text_states.shape[1], batch)
            attention_mask = attention_mask.view(batch, heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            text_states = attn.norm_encoder_hidden_states(text_states)

        query = split_heads(attn.to_q(hidden_states), heads)
        text_key = split_heads(attn.to_k(text_states), heads)
        text_value = split_heads(attn.to_v(text_states), heads)
        if self.observer is not None and self.observer.wants_text:
            self.observer.on_text_attention(self.layer_name, self.context, query, text_key)
        out = F.scaled_dot_product_attention(query, text_key, text_value, attn_mask=attention_mask)
        out = merge_heads(out).to(query.dtype)

        masks = _checked_masks(ip_adapter_masks, self.scale, ip_states)
        for states, ip_scale, to_k, to_v, mask in zip(
            ip_states, self.scale, self.to_k_ip, self.to_v_ip, masks, strict=True
        ):
            if all(s == 0 for s in (ip_scale if isinstance(ip_scale, list) else [ip_scale])):
                continue
            if mask is None:
                ip_out = self._id_attention(query, split_heads(to_k(states), heads), split_heads(to_v(states), heads))
                out = out + ip_scale * merge_heads(ip_out).to(query.dtype)
                continue
            scales = ip_scale if isinstance(ip_scale, list) else [ip_scale] * mask.shape[1]
            for i in range(mask.shape[1]):  # one masked region per reference image
                ip_out = self._id_attention(
                    query, split_heads(to_k(states[:, i]), heads), split_heads(to_v(states[:, i]), heads)
                )
                ip_out = merge_heads(ip_out).to(query.dtype)
                region = IPAdapterMaskProcessor.downsample(mask[:, i], batch, ip_out.shape[1], ip_out.shape[2])
                out = out + scales[i] * ip_out * region.to(dtype=query.dtype, device=query.device)

        out = attn.to_out[1](attn.to_out[0](out))
        if spatial_shape is not None:
            out = out.transpose(-1, -2).reshape(spatial_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _id_attention(self, query, key, value):
        branches = max(len(self.context.branches), 1)
        result = ip_attention_maps(query, key, value, self.part, self.context.step_index, self.attention, branches)
        if self.observer is not None:
            self.observer.on_id_attention(self.layer_name, self.context, result.raw, result.used)
        return result.output


def _checked_masks(masks, scales, ip_states):
    """IP masks as a list with one entry (or None) per adapter, validated like diffusers does."""
    if masks is None:
        return [None] * len(scales)
    if not isinstance(masks, list):  # legacy form: a tensor (num_adapters, 1, H, W)
        masks = list(masks.unsqueeze(1))
    if not len(masks) == len(scales) == len(ip_states):
        raise ValueError(f"ip_adapter_masks has {len(masks)} entries but {len(scales)} IP adapters are loaded")
    for index, (mask, state) in enumerate(zip(masks, ip_states, strict=True)):
        if mask is None:
            continue
        if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
            raise ValueError(
                f"ip_adapter_masks[{index}] must be a tensor (1, num_images, H, W); "
                "prepare it with diffusers' IPAdapterMaskProcessor"
            )
        if mask.shape[1] != state.shape[1]:
            raise ValueError(f"ip_adapter_masks[{index}] has {mask.shape[1]} masks for {state.shape[1]} ID images")
    return masks


# ----------------------------------------------------------------------------------------------
# installing on one UNet
# ----------------------------------------------------------------------------------------------
@dataclass
class Installation:
    """FastFace processors installed on one UNet; ``remove()`` restores the originals exactly.

    Attributes:
        originals, processors: layer name ("...attn2.processor") -> the processor before and after.
        slots: (attention module, original processor) per installed layer: ``remove()`` puts each
            original back on its module directly, without walking the UNet again.
    """

    unet: torch.nn.Module
    originals: dict
    processors: dict
    context: StepContext
    slots: list = field(default_factory=list)
    _hooks: list = field(default_factory=list)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for module, original in self.slots:
            module.set_processor(original)
        self.slots = []
        self.originals = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def ip_attention_layers(unet) -> dict:
    """The IP-Adapter cross-attention processors of a UNet, by layer name ("...attn2.processor")."""
    return {name: proc for name, proc in unet.attn_processors.items() if isinstance(proc, IPAdapterAttnProcessor2_0)}


def _ip_attention_modules(unet) -> dict:
    """Layer name ("...attn2") -> the attention module whose processor is an IP-Adapter one.

    One walk over the UNet's modules; diffusers' ``attn_processors``/``set_attn_processor`` walk it
    once each (three walks per install and remove), which on a small UNet costs as much as a step.
    """
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(getattr(module, "processor", None), IPAdapterAttnProcessor2_0)
    }


def install(
    unet,
    attention: AttentionConfig,
    context: StepContext | None = None,
    ip_scale: float | None = None,
    observer: AttentionObserver | None = None,
    scheduler=None,
    branch_names: Callable[[], Sequence[str]] | None = None,
) -> Installation:
    """Install FastFace processors on the IP-Adapter layers of ``unet`` (this UNet only).

    Args:
        attention: the AM config the processors apply.
        context: step context the caller updates; if None, one is made and, with ``scheduler``
            given, kept up to date by a UNet pre-forward hook that looks the timestep up in
            ``scheduler.timesteps`` (how a stock diffusers pipeline can be driven).
        ip_scale: ID attention scale for these processors (None keeps each original's scale).
        observer: receives attention maps (see :class:`AttentionObserver`); when None the
            observer of processors already installed is kept, so nested installs keep recording.
        branch_names: with ``scheduler``, called before each UNet evaluation to name the guidance
            branches its batch holds, in batch order (a stock SDXL pipeline with CFG batches
            ``("uncond", "cond")``); the batch is split evenly among them. None leaves the
            branches unnamed (``context.branches == ()``, the whole batch counted as one).
    """
    modules = _ip_attention_modules(unet)
    if not modules:
        raise ValueError(
            "this UNet has no IP-Adapter attention layers: load the adapter first "
            "(pipe.load_ip_adapter(...)) before using FastFace attention"
        )
    attention.check_tokens(min(min(m.processor.num_tokens) for m in modules.values()))
    context = context if context is not None else StepContext()
    originals, processors, slots = {}, {}, []
    for layer, module in modules.items():
        proc = module.processor
        base, inherited = proc, None
        if isinstance(proc, FastFaceAttnProcessor):  # nested: wrap the stock one, keep its observer
            base, inherited = proc.original, proc.observer
        new = FastFaceAttnProcessor(
            base, layer, attention, context, ip_scale, observer if observer is not None else inherited
        )
        originals[f"{layer}.processor"], processors[f"{layer}.processor"] = proc, new
        slots.append((module, proc))
        module.set_processor(new)
    installation = Installation(unet, originals, processors, context, slots)
    if scheduler is not None:
        installation._hooks.append(_track_steps(unet, scheduler, context, branch_names))
    return installation


def _track_steps(unet, scheduler, context: StepContext, branch_names=None):
    """Keep ``context`` at the step of each UNet call by finding its timestep in the schedule
    (and, with ``branch_names``, name the branches of its batch)."""

    def before_forward(module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t = float(t.flatten()[0]) if torch.is_tensor(t) else float(t)
        schedule = [float(x) for x in scheduler.timesteps]
        matches = [i for i, s in enumerate(schedule) if abs(s - t) < 1e-4]
        if not matches:
            raise RuntimeError(f"timestep {t} is not in the scheduler's timesteps {schedule}")
        context.step_index, context.timestep = matches[0], t
        sample = args[0] if args else kwargs["sample"]
        context.branches = ()
        context.batch_per_branch = sample.shape[0]
        if branch_names is not None:
            names = tuple(branch_names())
            if not names or sample.shape[0] % len(names):
                raise RuntimeError(f"a UNet batch of {sample.shape[0]} cannot hold the branches {names}")
            context.branches = tuple(range(len(names)))
            context.branch_names = names
            context.batch_per_branch = sample.shape[0] // len(names)

    return unet.register_forward_pre_hook(before_forward, with_kwargs=True)
