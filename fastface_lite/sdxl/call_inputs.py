"""Checks of what a `FastFacePipeline` call is given, before any work (no text encoding, no UNet).

* ``fastface``: a :class:`~fastface_lite.method.config.FastFaceConfig`, a variant name
  (``"fastface-am2"``: the preset for the call's step count), or None (the baseline). A dict is
  refused with how to turn it into a config.
* ``ip_adapter_image_embeds``: one tensor per loaded adapter, each (2, n_images, D) =
  ``cat([zeros, identity])``, D the adapter's embedding size, finite and of a sane magnitude;
  moved to the UNet's device and dtype. ``[cat([zeros, id, zeros])]`` (3 rows) is refused: the
  pipeline would read the last row as the identity and drop the one given.
* ``id_clip_embeds`` (Plus v2): (2, n_images, S, D_clip), finite; moved likewise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fastface_lite.errors import ConfigError, InputError
from fastface_lite.method.config import FastFaceConfig

# Identity embeddings are unit-norm (ArcFace normed_embedding, dlib descriptors) or a few tens
# at most (raw ArcFace); anything this large is a bug upstream and overflows float16.
MAX_EMBEDDING_ABS = 1e4


def resolve_fastface(fastface, num_inference_steps: int | None) -> FastFaceConfig:
    """The config a call's ``fastface=`` argument means (see the module docstring)."""
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


def check_id_inputs(unet, image_embeds, clip_embeds):
    """``(image_embeds, clip_embeds)`` checked against the adapters loaded on ``unet`` and moved to
    its device and dtype (see the module docstring). Raises InputError naming the input."""
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
    device, dtype = unet.device, unet.dtype
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
