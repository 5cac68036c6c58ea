"""Turn whatever a user hands us (a path, a PIL image, a numpy array) into one RGB uint8 array.

Face models and CLIP all want the same thing: an upright (H, W, 3) uint8 RGB picture. Photos
arrive rotated by their EXIF tag, in grayscale, with an alpha channel, as 16-bit PNGs or as float
arrays in [0, 1]; this module normalises all of those in one place, and raises errors that say
which input was bad and what to do about it.

The errors (:mod:`fastface_lite.errors`) all derive from `FaceError`, so an evaluation loop can
catch one class.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fastface_lite.errors import ImageTooSmallError, UnreadableImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray

# A face detector needs a few dozen pixels across a face; below this no face can be found.
MIN_IMAGE_SIDE = 32


def describe(image: object) -> str:
    """A short human-readable name for an input, used in every error message."""
    if isinstance(image, (str, os.PathLike)):
        return f"'{os.fspath(image)}'"
    if isinstance(image, Image.Image):
        filename = getattr(image, "filename", "") or ""
        where = f" from '{filename}'" if filename else ""
        return f"PIL image{where} (mode {image.mode}, {image.width}x{image.height})"
    if isinstance(image, np.ndarray):
        return f"array of shape {tuple(image.shape)} and dtype {image.dtype}"
    return f"object of type {type(image).__name__}"


def load_rgb(image: ImageInput, name: str | None = None) -> np.ndarray:
    """Read `image` as an upright RGB picture.

    Args:
        image: a path (str or Path), a PIL image, or a numpy array of shape (H, W), (H, W, 1),
            (H, W, 3) or (H, W, 4). Arrays are read as RGB(A), not BGR: flip the last axis of a
            cv2.imread result first. dtypes: uint8, uint16 (scaled down by 257), bool, or float
            in [0, 1].
        name: what to call the input in error messages (defaults to a description of it).

    Returns:
        (H, W, 3) uint8 RGB array, a new array the caller may modify. EXIF orientation is
        applied; alpha is composited onto white (a transparent background reads as a plain
        white wall to a face detector, where black would invent hard edges).

    Raises:
        UnreadableImageError: missing or undecodable file, or an array we cannot interpret.
        ImageTooSmallError: a side shorter than MIN_IMAGE_SIDE pixels.
        TypeError: an input of some other type.
    """
    label = name or describe(image)
    if isinstance(image, (str, os.PathLike)):
        rgb = _pil_to_rgb(_open_file(Path(image), label), label)
    elif isinstance(image, Image.Image):
        rgb = _pil_to_rgb(image, label)
    elif isinstance(image, np.ndarray):
        rgb = _array_to_rgb(image, label)
    else:
        raise TypeError(
            f"Cannot read {label} as an image: pass a file path, a PIL image or a numpy array (H, W[, 3|4])."
        )
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ImageTooSmallError(
            f"{label} is {width}x{height} pixels, too small to hold a face. Use a photo at "
            f"least {MIN_IMAGE_SIDE} px on each side, ideally with the face at least ~80 px wide."
        )
    return rgb


def _open_file(path: Path, label: str) -> Image.Image:
    if not path.exists():
        raise UnreadableImageError(
            f"{label}: no such file. Check the path (relative paths are resolved from {Path.cwd()})."
        )
    if path.is_dir():
        raise UnreadableImageError(f"{label} is a folder, not an image file.")
    try:
        pil = Image.open(path)
        pil.load()  # decode now, so a truncated file fails here and not later
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UnreadableImageError(f"{label} is not a readable image ({err}). Use a JPEG or PNG photo.") from err
    return pil


def _pil_to_rgb(pil: Image.Image, label: str) -> np.ndarray:
    try:
        pil = ImageOps.exif_transpose(pil)  # phones store portraits sideways plus a tag
    except Exception:  # a broken EXIF block should not cost us the pixels
        pass
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: PIL's convert("RGB") would clip, not scale.
        return _array_to_rgb(np.asarray(pil), label)
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        pil = pil.convert("RGBA")
        white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(white, pil)
    return np.array(pil.convert("RGB"), dtype=np.uint8)


def _array_to_rgb(array: np.ndarray, label: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UnreadableImageError(
            f"{label}: expected an image array of shape (H, W), (H, W, 3) or (H, W, 4). "
            "A channels-first (3, H, W) array needs .transpose(1, 2, 0)."
        )
    values = _to_unit_range(array, label)
    if values.shape[2] == 4:
        alpha = values[:, :, 3:4]
        values = values[:, :, :3] * alpha + (1.0 - alpha)  # composite onto white
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def _to_unit_range(array: np.ndarray, label: str) -> np.ndarray:
    """Scale an array of any supported dtype to float32 in [0, 1]."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        # e.g. PIL mode "I" from a 16-bit PNG: treat as 16-bit if it exceeds 8-bit range
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise UnreadableImageError(f"{label}: integer values outside 0..65535.")
        return array.astype(np.float32) / peak
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise UnreadableImageError(f"{label} contains NaN or infinite values.")
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        # Allow a little overshoot from resampling; anything more is a different convention.
        if low < -0.01 or high > 1.01:
            raise UnreadableImageError(
                f"{label}: float images must lie in [0, 1], found [{low:.3g}, {high:.3g}]. "
                "Divide 0..255 data by 255, or map [-1, 1] data with (x + 1) / 2."
            )
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise UnreadableImageError(f"{label}: unsupported dtype {array.dtype}; use uint8, uint16 or float in [0, 1].")
