"""The IP-Adapter FaceID adapters: loading them, what they expect, and their ID inputs in
diffusers' (negative, positive) convention.

FaceID takes an identity embedding; Plus v2 also takes CLIP hidden states of an aligned face crop.
"No ID" is the all-zero embedding and the CLIP hidden states of an all-zero image (what diffusers'
``encode_image`` returns as the unconditional input). :class:`FastFacePipeline` lays these pairs out
over its three guidance branches itself.

Which embedding drives which adapter:
* full mode: insightface buffalo_l ArcFace, 512-d (``faces[0].normed_embedding``);
* tiny mode: dlib's face descriptor, 128-d, L2-normalised: a real identity for the tiny generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection
from transformers import CLIPImageProcessorPil

from fastface_lite.errors import InputError
from fastface_lite.method.checkpoints import ADAPTERS


@dataclass(frozen=True)
class IDInputs:
    """What a FaceID call needs.

    Attributes:
        image_embeds: one tensor per adapter, (2, n_images, D) = cat([zeros, identity]).
        clip_embeds: Plus v2 only: (2, n_images, S, D_clip) = cat([CLIP(zero image), CLIP(crop)]).
    """

    image_embeds: list
    clip_embeds: torch.Tensor | None = None

    def call_kwargs(self) -> dict:
        """Keyword arguments for ``FastFacePipeline.__call__``."""
        return {"ip_adapter_image_embeds": self.image_embeds, "id_clip_embeds": self.clip_embeds}


def projection_layer(pipe):
    """The FaceID projection layer of `pipe` (``unet.encoder_hid_proj.image_projection_layers[0]``):
    the module that turns an identity embedding (and for Plus, CLIP hidden states) into ID tokens.
    Accepts a pipeline or a UNet."""
    unet = getattr(pipe, "unet", pipe)
    projection = getattr(unet, "encoder_hid_proj", None)
    layers = getattr(projection, "image_projection_layers", None)
    if not layers:
        raise ValueError("the pipeline has no IP adapter loaded; load one with adapter='faceid' or 'faceid-plusv2'")
    return layers[0]


def clip_image_processor(size: int) -> CLIPImageProcessorPil:
    """The CLIP image processor FaceID Plus crops go through: what diffusers' ``load_ip_adapter``
    builds for a CLIP tower of this input size (CLIP mean/std, bicubic resize, centre crop).

    PIL resizing is named explicitly: ``CLIPImageProcessor`` means the torchvision backend when
    torchvision is installed (Colab) and PIL otherwise, and the two resize differently.
    """
    return CLIPImageProcessorPil(size=size, crop_size=size)


def load_faceid(pipe, adapter: str, source: str, **hub) -> None:
    """Load the FaceID `adapter` ("faceid" or "faceid-plusv2") from `source` (a hub repo id or a
    folder in h94's layout) with diffusers' `load_ip_adapter`, as docs/method.md §3 does it; for Plus v2 turn
    on the v2 shortcut."""
    pipe.load_ip_adapter(source, subfolder=None, weight_name=ADAPTERS[adapter], image_encoder_folder=None, **hub)
    if adapter == "faceid-plusv2":
        projection = projection_layer(pipe)
        projection.shortcut = True  # v2: ID tokens = MLP(id) + shortcut_scale * resampler(...)
        projection.shortcut_scale = 1.0


def adapter_info(pipe) -> tuple[int, int]:
    """(number of ID tokens, ID embedding size) of the FaceID adapter loaded in `pipe`.

    Real checkpoints give (4, 512); the tiny ones (4, TINY_ID_DIM).
    """
    layer = projection_layer(pipe)
    if isinstance(layer, IPAdapterFaceIDPlusImageProjection):
        return layer.num_tokens, layer.proj.net[0].proj.in_features
    if isinstance(layer, IPAdapterFaceIDImageProjection):
        return layer.num_tokens, layer.ff.net[0].proj.in_features
    raise ValueError(f"pipe's IP adapter is a {type(layer).__name__}, not FaceID; load a FaceID adapter.")


def adapter_id_dim(pipe) -> int:
    """Size of the identity embedding the loaded adapter expects (128 tiny, 512 real)."""
    return adapter_info(pipe)[1]


def needs_clip(pipe) -> bool:
    return hasattr(projection_layer(pipe), "clip_embeds")


def id_inputs(pipe, embedding, crop=None) -> IDInputs:
    """Build the adapter inputs from an identity embedding (and a face crop for Plus v2).

    Args:
        embedding: (D,) or (n_images, D) identity embedding(s), D = :func:`adapter_id_dim`.
        crop: Plus v2 only: the aligned face crop (PIL image or HxWx3 uint8 array, 0..255), or a
            list of them, one per identity image. A float array is refused, not guessed at (CLIP's
            preprocessing reads a float crop in [0, 1] as nearly black): convert it with
            ``(crop * 255).round().astype(np.uint8)``. The reference passes insightface's BGR crop
            to CLIP unchanged; pass what you want CLIP to see.
    """
    emb = torch.tensor(np.array(embedding, dtype=np.float32))  # a copy: Face arrays are read-only
    if not torch.isfinite(emb).all():
        raise InputError("the identity embedding holds NaN or infinite values; check the face analysis it came from")
    if emb.ndim == 1:
        emb = emb[None]
    expected = adapter_id_dim(pipe)
    if emb.ndim != 2 or emb.shape[-1] != expected:
        raise InputError(
            f"identity embedding has shape {tuple(emb.shape)} but the adapter takes {expected}-d "
            f"embeddings ({'dlib 128-d in tiny mode' if expected == 128 else 'insightface 512-d'})"
        )
    # Where the UNet runs, not where its weights rest: under model CPU offload `unet.device` is the
    # CPU while every call runs on the GPU (`_execution_device` is the device the hooks move to).
    device, dtype = execution_device(pipe), pipe.unet.dtype
    emb = emb[None].to(device=device, dtype=dtype)  # (1, n_images, D)
    image_embeds = [torch.cat([torch.zeros_like(emb), emb])]
    clip = None
    if needs_clip(pipe):
        if crop is None:
            raise InputError("FaceID Plus v2 needs the aligned face crop as well (crop=...)")
        if getattr(pipe, "image_encoder", None) is None:
            raise InputError("FaceID Plus v2 needs a CLIP image encoder on the pipeline (pipe.image_encoder)")
        crops = crop if isinstance(crop, (list, tuple)) else [crop]
        if len(crops) != emb.shape[1]:
            raise InputError(f"{len(crops)} face crops for {emb.shape[1]} identity embeddings")
        for index, c in enumerate(crops):
            _check_crop(c, index)
        # The crop goes where the encoder's weights are now; under offload its hook moves it on.
        encoder_device = pipe.image_encoder.device
        positive, negative = [], []
        for c in crops:
            pos, neg = pipe.encode_image(c, encoder_device, 1, output_hidden_states=True)
            positive.append(pos)
            negative.append(neg)
        # (n_images, S, D) -> (1, n_images, S, D), then the (negative, positive) pair
        clip = torch.cat([torch.stack(negative, 1), torch.stack(positive, 1)]).to(device=device, dtype=dtype)
    return IDInputs(image_embeds, clip)


def _check_crop(crop, index: int) -> None:
    """A face crop CLIP can take: a PIL image, or an HxWx3 uint8 array (0..255)."""
    from PIL import Image

    if isinstance(crop, Image.Image):
        return
    if not isinstance(crop, np.ndarray):
        raise InputError(f"face crop {index} is a {type(crop).__name__}; give a PIL image or an HxWx3 uint8 array")
    if crop.ndim != 3 or crop.shape[-1] != 3:
        raise InputError(f"face crop {index} has shape {crop.shape}; expected HxWx3 (channels last)")
    if crop.dtype != np.uint8:
        raise InputError(
            f"face crop {index} is a {crop.dtype} array; give uint8 values 0..255 (a float crop in [0, 1]: "
            "(crop * 255).round().astype(np.uint8)), so that CLIP sees the face as it is"
        )


def execution_device(pipe) -> torch.device:
    """The device `pipe`'s modules run on: diffusers' ``_execution_device`` (the GPU under model CPU
    offload, where ``pipe.unet.device`` says CPU), else the UNet's device (a bare UNet)."""
    device = getattr(pipe, "_execution_device", None)
    return torch.device(device) if device is not None else pipe.unet.device


def face_id_inputs(pipe, face, image, bgr: bool = True) -> IDInputs:
    """The adapter inputs for one detected face: its identity embedding, and for Plus v2 its
    224 px aligned crop (the crop CLIP ViT-H sees).

    Args:
        face: a detected face (:class:`fastface_lite.faces.analyzer.Face`, or anything with an
            ``embedding`` (D,) and an ``aligned_crop(image, size, bgr)`` method).
        image: the photo the face was found in.
        bgr: give CLIP the crop in BGR channel order, as the reference implementation and the
            IP-Adapter FaceID demo do (kept for fidelity; see docs/method.md).
    """
    crop = face.aligned_crop(image, size=224, bgr=bgr) if needs_clip(pipe) else None
    return id_inputs(pipe, face.embedding, crop)
