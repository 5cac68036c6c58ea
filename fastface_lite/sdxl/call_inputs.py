"""Checks of what a `FastFacePipeline` call is given, before any work (no text encoding, no UNet).

* ``fastface``: a :class:`~fastface_lite.method.config.FastFaceConfig`, a variant name
  (``"fastface-am2"``: the preset for the call's step count), or None (the baseline). A dict is
  refused with how to turn it into a config.
* ``ip_adapter_image_embeds``: one tensor per loaded adapter, each (2, n_images, D) =
  ``cat([zeros, identity])``, D the adapter's embedding size, finite and of a sane magnitude;
  moved to the UNet's device and dtype. ``[cat([zeros, id, zeros])]`` (3 rows) is refused: the
  pipeline would read the last row as the identity and drop the one given.
* ``id_clip_embeds`` (Plus v2): (2, n_images, S, D_clip), finite; moved likewise.
* ``num_images_per_prompt``: an integer >= 1 (not a bool, not 2.5). The ID embeddings need no
  count of their own: their two rows are one identity, shared by every image of the call.
* ``latents``: when given, (prompts x num_images_per_prompt, C, height / 8, width / 8).
* ``callback_on_step_end``: a callable, with ``callback_on_step_end_tensor_inputs`` a list of
  names the pipeline offers. What it returns each step (`callback_result`) is None or a dict whose
  keys are among those names; only ``latents`` may be replaced, by a float tensor of its shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from fastface_lite.errors import ConfigError, InputError
from fastface_lite.method.checks import integer
from fastface_lite.method.config import FastFaceConfig

# Identity embeddings are unit-norm (ArcFace normed_embedding, dlib descriptors) or a few tens
# at most (raw ArcFace); anything this large is a bug upstream and overflows float16.
MAX_EMBEDDING_ABS = 1e4


def resolve_fastface(fastface, num_inference_steps: int | None) -> FastFaceConfig:
    """The config a call's ``fastface=`` argument means (see the module docstring);
    ``num_inference_steps``, when given, must be an integer >= 1 (4.5 is refused, not truncated)."""
    if num_inference_steps is not None:
        num_inference_steps = integer(num_inference_steps, "num_inference_steps", low=1)
    if fastface is None:
        return FastFaceConfig.preset("baseline")
    if isinstance(fastface, FastFaceConfig):
        return fastface
    if isinstance(fastface, str):
        return FastFaceConfig.preset(fastface, num_steps=num_inference_steps or 4)
    if isinstance(fastface, Mapping):
        raise ConfigError(
            "fastface= got a dict; turn it into a config with FastFaceConfig.from_dict(d), or pass "
            "a variant name such as 'fastface-am2' or FastFaceConfig.preset(...)"
        )
    raise ConfigError(
        f"fastface= must be a FastFaceConfig or a variant name, got {type(fastface).__name__}; "
        "e.g. fastface='fastface-am2' or FastFaceConfig.preset('fastface-am2')"
    )


def _tensor(x, what: str, ndim: int, shape_words: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise InputError(f"{what} must be a torch tensor {shape_words}, got {type(x).__name__}")
    if x.ndim != ndim or x.shape[0] != 2:
        hint = ""
        if x.ndim == ndim and x.shape[0] != 2:
            hint = f" ({x.shape[0]} rows: give exactly cat([zeros, identity]), 2 rows)"
        raise InputError(f"{what} has shape {tuple(x.shape)}; expected {shape_words}{hint}")
    if not x.is_floating_point():
        raise InputError(f"{what} must be a float tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise InputError(f"{what} holds NaN or infinite values; check the face embedding it was built from")
    if x.abs().max() > MAX_EMBEDDING_ABS:
        raise InputError(
            f"{what} holds values up to {float(x.abs().max()):.3g}; identity embeddings are unit-norm "
            f"(at most about {MAX_EMBEDDING_ABS:g} is accepted): was it built from the right array?"
        )
    return x


def check_id_inputs(unet, image_embeds, clip_embeds, device: torch.device | None = None):
    """``(image_embeds, clip_embeds)`` checked against the adapters loaded on ``unet`` and moved to
    `device` (the pipeline's execution device: under model CPU offload the UNet waits on the CPU
    but runs on the GPU; default ``unet.device``) and the adapter's dtype (see the module
    docstring). Raises InputError naming the input."""
    projection = getattr(unet, "encoder_hid_proj", None)
    layers = list(getattr(projection, "image_projection_layers", []) or [])
    if isinstance(image_embeds, torch.Tensor) or not isinstance(image_embeds, Sequence):
        raise InputError(
            "ip_adapter_image_embeds must be a list with one tensor per IP adapter, "
            f"e.g. [torch.cat([zeros, id_embedding])], got {type(image_embeds).__name__}"
        )
    if layers and len(image_embeds) != len(layers):
        raise InputError(
            f"ip_adapter_image_embeds holds {len(image_embeds)} tensors for {len(layers)} loaded IP adapter(s)"
        )
    # the adapter's own dtype: reading ``unet.dtype`` walks every parameter of the UNet
    weights = next(iter(projection.parameters()), None) if projection is not None else None
    dtype = weights.dtype if weights is not None else unet.dtype
    device = unet.device if device is None else torch.device(device)
    checked = []
    for index, x in enumerate(image_embeds):
        what = f"ip_adapter_image_embeds[{index}]"
        x = _tensor(x, what, 3, "(2, n_images, D) = cat([zeros, identity])")
        expected = _embedding_size(layers[index]) if index < len(layers) else None
        if expected is not None and x.shape[-1] != expected:
            raise InputError(
                f"{what} holds {x.shape[-1]}-d embeddings but the loaded adapter takes {expected}-d "
                f"({'dlib 128-d: tiny mode' if expected == 128 else 'insightface 512-d: full mode'}); "
                "use the face analyzer that matches the adapter"
            )
        checked.append(x.to(device=device, dtype=dtype))
    if clip_embeds is not None:
        clip_embeds = _tensor(clip_embeds, "id_clip_embeds", 4, "(2, n_images, S, D) = cat([CLIP(zeros), CLIP(crop)])")
        if clip_embeds.shape[1] != checked[0].shape[1]:
            raise InputError(
                f"id_clip_embeds holds {clip_embeds.shape[1]} images for {checked[0].shape[1]} identity embeddings"
            )
        clip_embeds = clip_embeds.to(device=device, dtype=dtype)
    return checked, clip_embeds


def _embedding_size(layer) -> int | None:
    """The identity-embedding size a FaceID projection layer takes (None: not a FaceID layer)."""
    for path in ("proj.net", "ff.net"):  # Plus v2, plain FaceID
        module = layer
        for name in path.split("."):
            module = getattr(module, name, None)
        if module is not None:
            return module[0].proj.in_features
    return None


def check_count(num_images_per_prompt) -> int:
    """``num_images_per_prompt`` as an int >= 1 (an integral float such as 2.0 is accepted)."""
    try:
        return integer(num_images_per_prompt, "num_images_per_prompt", low=1)
    except ConfigError as err:
        raise InputError(str(err)) from None


def check_latents(latents, images: int, channels: int, height: int, width: int, scale: int) -> None:
    """A caller's starting ``latents`` have the shape the call will denoise (diffusers would only
    fail inside the UNet, as a batch-size mismatch with the prompt embeddings)."""
    if latents is None:
        return
    expected = (images, channels, height // scale, width // scale)
    if not torch.is_tensor(latents) or not latents.is_floating_point():
        raise InputError(f"latents must be a float torch tensor of shape {expected}, got {type(latents).__name__}")
    if tuple(latents.shape) != expected:
        raise InputError(
            f"latents has shape {tuple(latents.shape)}; this call needs {expected} "
            f"(prompts x num_images_per_prompt = {images} images of {height}x{width} px)"
        )


def _callback_name(callback) -> str:
    return getattr(callback, "__qualname__", None) or type(callback).__name__


def check_callback(callback, tensor_inputs, offered: Sequence[str]) -> tuple[str, ...]:
    """``callback_on_step_end`` and its ``callback_on_step_end_tensor_inputs``, before any work:
    the callback is callable (or None), the inputs a list of names among ``offered``."""
    if callback is not None and not callable(callback):
        raise InputError(
            f"callback_on_step_end must be a function (pipe, step, timestep, tensors) -> dict, "
            f"got {type(callback).__name__} {callback!r:.60}"
        )
    if isinstance(tensor_inputs, str) or not isinstance(tensor_inputs, Sequence):
        raise InputError(
            f"callback_on_step_end_tensor_inputs must be a list of names, got {tensor_inputs!r}; "
            f"e.g. ['latents'] (offered: {list(offered)})"
        )
    unknown = [name for name in tensor_inputs if name not in offered]
    if unknown:
        raise InputError(
            f"callback_on_step_end_tensor_inputs names {unknown}, which this pipeline does not offer; "
            f"valid: {list(offered)}"
        )
    return tuple(tensor_inputs)


def callback_result(
    callback: Callable, returned, given: Mapping[str, torch.Tensor], latents: torch.Tensor
) -> torch.Tensor:
    """The latents (B, C, h, w) to go on with after ``callback`` returned ``returned`` for the
    tensors ``given`` (those of callback_on_step_end_tensor_inputs).

    None, or a dict handing the tensors back unchanged (diffusers' idiom), keeps the latents;
    ``{"latents": x}`` replaces them with ``x``, a float tensor of their shape (moved to their
    device and dtype). Anything else raises InputError naming the callback and the key.
    """
    if returned is None:
        return latents
    name = _callback_name(callback)
    if not isinstance(returned, Mapping):
        raise InputError(
            f"callback_on_step_end {name} returned {type(returned).__name__}; it must return a dict "
            f"of the tensors it was given (keys among {list(given)}) or None"
        )
    for key, value in returned.items():
        if key not in given:
            raise InputError(
                f"callback_on_step_end {name} returned key {key!r}, which it was not given; it may "
                f"return only keys of callback_on_step_end_tensor_inputs {list(given)}, and only 'latents' can be "
                "replaced"
            )
        if key != "latents" and value is not given[key]:
            raise InputError(
                f"callback_on_step_end {name} replaced {key!r}; only 'latents' can be replaced "
                "(hand the others back unchanged or leave them out)"
            )
    if "latents" not in returned or returned["latents"] is latents:
        return latents
    new = returned["latents"]
    if not torch.is_tensor(new) or not new.is_floating_point() or new.shape != latents.shape:
        got = f"shape {tuple(new.shape)} {new.dtype}" if torch.is_tensor(new) else type(new).__name__
        raise InputError(
            f"callback_on_step_end {name} returned 'latents' as {got}; it must be a float tensor of "
            f"the latents' shape {tuple(latents.shape)}"
        )
    return new.to(device=latents.device, dtype=latents.dtype)
