"""The workbook's shipped data: prompt sets and public-domain face photos.

>>> load_prompts("stylistic")[0]
'watercolor painting; a person reading in a park'
>>> face_path("grace_hopper").name
'grace_hopper.jpg'
"""

from __future__ import annotations

import os
from pathlib import Path

from fastface_lite.errors import ConfigError, MissingFileError

__all__ = [
    "DATA_DIR",
    "load_prompts",
    "split_style",
    "prompt_sets",
    "face_path",
    "face_names",
    "insightface_group_photo",
]

# Shipped inside the package (package data), so a plain `pip install` has it too.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def prompt_sets() -> list[str]:
    """Names of the shipped prompt sets (files in fastface_lite/data/prompts)."""
    return sorted(p.stem for p in (DATA_DIR / "prompts").glob("*.txt"))


def load_prompts(name_or_path: str | os.PathLike) -> list[str]:
    """Prompts of a set, as the protocol uses them: stripped, lower-cased, in file order.

    Args:
        name_or_path: a shipped set ("realistic", "stylistic") or a path to a text file with
            one prompt per line. Blank lines and lines starting with "#" are skipped.

    Returns:
        list of prompts. A stylistic prompt keeps its "style; scene" form (see `split_style`).
    """
    text = os.fspath(name_or_path)
    is_name = os.sep not in text and "/" not in text and not text.endswith(".txt")
    path = DATA_DIR / "prompts" / f"{text}.txt" if is_name else Path(text)
    if not path.is_file():
        known = ", ".join(prompt_sets()) or "none"
        raise MissingFileError(
            f"No prompt file at '{path}'. Shipped sets: {known}; or pass "
            "the path of a .txt file with one prompt per line."
        )
    prompts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"prompt file '{path}' is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8"
        ) from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(line.lower())
    if not prompts:
        raise ConfigError(f"'{path}' holds no prompts (only blank lines or # comments).")
    return prompts


def split_style(prompt: str) -> tuple[str | None, str]:
    """("watercolor painting", "a person reading in a park") from "watercolor painting; a
    person reading in a park"; (None, prompt) for a prompt without a style part."""
    style, sep, scene = prompt.partition(";")
    if not sep:
        return None, prompt.strip()
    return style.strip(), scene.strip()


def face_names() -> list[str]:
    """Names of the shipped face photos (files in fastface_lite/data/faces)."""
    return sorted(p.stem for p in (DATA_DIR / "faces").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def face_path(name: str) -> Path:
    """Path of a shipped face photo by name, e.g. "astronaut" or "grace_hopper"."""
    for suffix in (".jpg", ".jpeg", ".png"):
        path = DATA_DIR / "faces" / f"{name}{suffix}"
        if path.is_file():
            return path
    raise MissingFileError(f"No face photo named {name!r} in {DATA_DIR / 'faces'}; shipped: {', '.join(face_names())}.")


def insightface_group_photo() -> Path:
    """insightface's sample `t1.jpg` (six people), read from the installed package.

    It is not copied into this repository: the wheel states no licence for its images (its
    code is MIT; its model weights are non-commercial research only).
    """
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("insightface is not installed; its sample t1.jpg comes with it.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / "t1.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the insightface install.")
    return path
