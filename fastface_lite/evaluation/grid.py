"""What an evaluation run is (see :mod:`fastface_lite.evaluation.runner`): the user's `EvalSpec`,
the `RunSettings` it resolves to (photos by checksum, prompts by text, every variant's config), and
the grid of items with their seeds and their split over processes.

**An image does not depend on its neighbours.** Every item draws its starting noise from its own
generator, seeded by :func:`item_seed` from (seed, identity, prompt) through SHA-256. The
reference implementation shared one generator over the whole dataset and walked ``os.listdir``
order (docs/method.md §15, bug 7), so an image changed when the dataset or its order did. Here identities and
prompts are sorted, and an item's result is the same alone, in any order, in any shard, on any
number of processes. The seed does not depend on the variant or model: every variant starts from
the same noise, so variants are compared pair by pair.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastface_lite.errors import ConfigError, MissingFileError
from fastface_lite.evaluation.run_folder import IMAGES, SETTINGS_FILE, Identity, RunFolder, RunFolderError, sha256_file
from fastface_lite.faces.photos import face_names, face_path, load_prompts
from fastface_lite.method.checkpoints import ADAPTERS, MODELS
from fastface_lite.method.config import VARIANTS, FastFaceConfig
from fastface_lite.sdxl.mode import MODES, run_mode

TINY_WEIGHTS_SEED = 0  # the tiny pipeline's (random) weights: one fixed "checkpoint"
FULL_CLIP_MODELS = {"clip_score": "openai/clip-vit-large-patch14", "clip_score_b32": "openai/clip-vit-base-patch32"}
SETTINGS_FORMAT = 1  # the version of the settings' JSON layout (RunSettings.to_json)


# ----------------------------------------------------------------------------------------------
# what to evaluate
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSpec:
    """The grid of an evaluation run, as a user states it (validated on creation).

    Args:
        identities: shipped photos by name (fastface_lite/data/faces) or paths; empty = all shipped.
            An identity is called by the file's stem.
        prompt_sets: shipped sets ("realistic", "stylistic") or paths to prompt files (set name =
            file stem). Prompts are stripped, lower-cased (`faces.photos.load_prompts`), de-duplicated, sorted.
        prompts_per_set: keep the first N prompts of each set after sorting (None = all).
        variants: FastFace variants (``VARIANTS``: baseline, dcg, am1, am2, fastface-am1, fastface-am2).
        models: distilled SDXL models (``MODELS``: hyper, lightning, lcm, turbo, base).
        adapter: "faceid-plusv2" or "faceid".
        seed: base seed; each image's seed is ``item_seed(seed, identity, prompt)``.
        num_steps: sampling steps (the variants with per-step lists need 4).
        size: image side in pixels (None = the model's default: 1024, turbo 512; tiny: a quarter).
        mode: "tiny" or "full" (None = ``run_mode()``).
        clip_crop_bgr: Plus v2 only: give CLIP the BGR face crop, as the reference implementation
            and the IP-Adapter FaceID demo do (docs/method.md §3). True by default for fidelity.
    """

    identities: tuple[str, ...] = ()
    prompt_sets: tuple[str, ...] = ("realistic", "stylistic")
    prompts_per_set: int | None = None
    variants: tuple[str, ...] = VARIANTS
    models: tuple[str, ...] = ("hyper",)
    adapter: str = "faceid-plusv2"
    seed: int = 0
    num_steps: int = 4
    size: int | None = None
    mode: str | None = None
    clip_crop_bgr: bool = True

    def __post_init__(self):
        for name in ("identities", "prompt_sets", "variants", "models"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, (str, os.PathLike)) else value
            # de-duplicate, keep the order given (variants and models are the columns of the summary)
            object.__setattr__(self, name, tuple(dict.fromkeys(os.fspath(v) for v in value)))
        for name, valid in (("variants", VARIANTS), ("models", MODELS)):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{name} is empty; give at least one of {', '.join(valid)}")
            bad = [v for v in values if v not in valid]
            if bad:
                raise ConfigError(f"unknown {name} {bad}; valid: {', '.join(valid)}")
        if not self.prompt_sets:
            raise ConfigError("prompt_sets is empty; give 'realistic', 'stylistic' or prompt files")
        if self.adapter not in ADAPTERS:
            raise ConfigError(f"unknown adapter {self.adapter!r}; valid: {', '.join(ADAPTERS)}")
        if self.mode is not None and self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.prompts_per_set is not None and (not isinstance(self.prompts_per_set, int) or self.prompts_per_set < 1):
            raise ConfigError(f"prompts_per_set must be a positive integer, got {self.prompts_per_set!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 32 or self.size % 8):
            raise ConfigError(f"size must be a multiple of 8 and at least 32 pixels, got {self.size!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        for model in self.models:  # fail now, not after hours, if a variant cannot run
            for variant in self.variants:
                FastFaceConfig.preset(variant, model=model, num_steps=self.num_steps)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "face"


def resolve_identities(identities: Sequence[str]) -> list[Identity]:
    """Identity photos by name (fastface_lite/data/faces) or path, sorted by name; names must be unique."""
    found = {}
    for entry in identities or face_names():
        path = Path(entry).expanduser()
        if not path.is_file():
            if os.sep in entry or "/" in entry or path.suffix:
                raise MissingFileError(
                    f"identity photo {entry!r} does not exist; pass a shipped face "
                    f"({', '.join(face_names())}) or a path to a photo"
                )
            path = face_path(entry)  # raises FileNotFoundError naming the shipped faces
        name = _safe_name(path.stem)
        if name in found and found[name].resolve() != path.resolve():
            raise ConfigError(
                f"two identity photos are both called {name!r} ({found[name]} and {path}); "
                "rename one: an identity is known by its file name"
            )
        found[name] = path
    return [Identity(name, found[name], sha256_file(found[name])) for name in sorted(found)]


def resolve_prompt_sets(prompt_sets: Sequence[str], per_set: int | None = None) -> dict[str, list[str]]:
    """{set name: sorted unique prompts (first ``per_set`` of them)} from set names or files."""
    sets = {}
    for entry in prompt_sets:
        text = os.fspath(entry)
        is_file = os.sep in text or "/" in text or text.endswith(".txt")
        name = _safe_name(Path(text).stem) if is_file else text
        if name in sets:
            raise ConfigError(f"two prompt sets are both called {name!r}; prompt files are known by their stem")
        sets[name] = sorted(set(load_prompts(text)))[:per_set]
    return sets


# ----------------------------------------------------------------------------------------------
# what defines the results
# ----------------------------------------------------------------------------------------------
def _frozen(value):
    """JSON data made read-only: objects -> read-only mappings, arrays -> tuples (recursively)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value):
    """The inverse of `_frozen`: plain dicts and lists, as json.dump writes them."""
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(v) for v in value]
    return value


# settings.json's "settings" keys, in the order they are written
_JSON_KEYS = (
    "format",
    "mode",
    "models",
    "variants",
    "adapter",
    "seed",
    "num_steps",
    "size",
    "clip_crop_bgr",
    "identities",
    "prompts",
    "weights",
    "variant_configs",
)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# what each stored setting must be (as RunSettings.to_json writes it) and that in words
_JSON_TYPES = {
    "mode": (lambda v: v in MODES, f"one of {list(MODES)}"),
    "models": (lambda v: _strings(v) and bool(v), "a non-empty list of model names"),
    "variants": (lambda v: _strings(v) and bool(v), "a non-empty list of variant names"),
    "adapter": (lambda v: isinstance(v, str), "an adapter name (a string)"),
    "seed": (_integer, "an integer"),
    "num_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "size": (lambda v: v is None or (_integer(v) and v > 0), "null or a positive integer"),
    "clip_crop_bgr": (lambda v: isinstance(v, bool), "true or false"),
    "identities": (
        lambda v: (
            isinstance(v, list)
            and all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("sha256"), str) for e in v
            )
        ),
        'a list of {"name", "sha256"} objects',
    ),
    "prompts": (
        lambda v: isinstance(v, dict) and all(_strings(p) for p in v.values()),
        "an object of prompt set name -> list of prompts",
    ),
    "weights": (lambda v: isinstance(v, dict), "an object"),
    "variant_configs": (
        lambda v: isinstance(v, dict) and all(isinstance(c, dict) for c in v.values()),
        'an object of "model/variant" -> config object',
    ),
}


@dataclass(frozen=True)
class RunSettings:
    """What defines a run's results: stored in settings.json and compared on resume.

    The prompts and the photos' SHA-256 are stored (not just file names), and so is every variant's
    full config: an edited prompt file, photo or variant makes a resume refuse instead of mixing
    old and new results. ``--limit`` is not a setting: it only says how much of the grid to do now.
    Build it with `from_spec`; `to_json` / `from_json` give and read settings.json's "settings".

    Attributes:
        mode: "tiny" or "full" (resolved: never None).
        models, variants: in the user's order (the summary's columns).
        adapter, seed, num_steps, clip_crop_bgr: as in `EvalSpec`.
        size: image side in pixels, or None for the model's default.
        identities: identity name -> SHA-256 of its photo, sorted by name.
        prompts: prompt set name -> its prompts, sorted.
        weights: which weights generate and score the images (a record, compared on resume).
        variant_configs: "model/variant" -> ``FastFaceConfig.to_dict()`` of that variant.
        format: the version of this JSON layout (`SETTINGS_FORMAT`).
    """

    mode: str
    models: tuple[str, ...]
    variants: tuple[str, ...]
    adapter: str
    seed: int
    num_steps: int
    size: int | None
    clip_crop_bgr: bool
    identities: Mapping[str, str]
    prompts: Mapping[str, tuple[str, ...]]
    weights: Mapping[str, Any]
    variant_configs: Mapping[str, Mapping[str, Any]]
    format: int = SETTINGS_FORMAT

    def __post_init__(self):
        for name in ("models", "variants", "identities", "prompts", "weights", "variant_configs"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))  # immutable all the way down

    @classmethod
    def from_spec(cls, spec: EvalSpec, identities: Sequence[Identity] | None = None) -> RunSettings:
        """Resolve ``spec``: read the prompt sets, hash the photos, build every variant's config.

        Args:
            spec: the user's grid.
            identities: ``resolve_identities(spec.identities)`` when the caller has it already
                (the photos are then not read a second time); resolved here otherwise.
        """
        mode = spec.mode or run_mode()
        if identities is None:
            identities = resolve_identities(spec.identities)
        configs = {
            f"{m}/{v}": FastFaceConfig.preset(v, model=m, num_steps=spec.num_steps).to_dict()
            for m in spec.models
            for v in spec.variants
        }
        weights = (
            {"tiny_pipeline_seed": TINY_WEIGHTS_SEED, "clip": "ClipScorer.tiny(seed=0)", "face_analyzer": "dlib"}
            if mode == "tiny"
            else {
                "clip": FULL_CLIP_MODELS,
                "face_analyzer": "insightface buffalo_l",
                "second_opinion": "dlib",
                "dtype": "float16 on CUDA, else float32",
            }
        )
        return cls(
            mode=mode,
            models=spec.models,
            variants=spec.variants,
            adapter=spec.adapter,
            seed=spec.seed,
            num_steps=spec.num_steps,
            size=spec.size,
            clip_crop_bgr=spec.clip_crop_bgr,
            identities={i.name: i.sha256 for i in identities},
            prompts=resolve_prompt_sets(spec.prompt_sets, spec.prompts_per_set),
            weights=weights,
            variant_configs=configs,
        )

    def to_json(self) -> dict:
        """settings.json's "settings" object: plain dicts and lists, keys in the stored order."""
        fields = {key: _thawed(getattr(self, key)) for key in _JSON_KEYS}
        fields["identities"] = [{"name": name, "sha256": sha} for name, sha in self.identities.items()]
        return fields

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "the stored settings") -> RunSettings:
        """Read settings.json's "settings" object (as `to_json` writes it; ``from_json(s.to_json()) == s``).

        Args:
            data: the object.
            source: where it was read, for the messages (the settings.json path).

        Raises `RunFolderError`, naming ``source`` and the key, when the object is not a dict, a
        key is missing, a value is not of its type or the layout is of another version.
        """
        fix = "was it edited by hand? Restore it, or choose another --out (--overwrite deletes this run's results)"
        if not isinstance(data, Mapping):
            raise RunFolderError(f'{source}: "settings" is {type(data).__name__}, not an object; {fix}')
        missing = [key for key in _JSON_KEYS if key not in data]
        if missing:
            raise RunFolderError(f"{source}: the stored settings lack {', '.join(missing)}; {fix}")
        if data["format"] != SETTINGS_FORMAT:
            raise RunFolderError(
                f"{source}: the stored settings have format {data['format']!r}; this version reads format "
                f"{SETTINGS_FORMAT} only"
            )
        for key, (valid, words) in _JSON_TYPES.items():
            if not valid(data[key]):
                raise RunFolderError(f"{source}: {key} must be {words}, got {data[key]!r:.80}; {fix}")
        fields = {key: data[key] for key in _JSON_KEYS}
        fields["identities"] = {entry["name"]: entry["sha256"] for entry in data["identities"]}
        return cls(**fields)

    @classmethod
    def stored_in(cls, folder: RunFolder) -> RunSettings:
        """The settings a run folder was started with (its settings.json), checked as `from_json` does."""
        return cls.from_json(folder.load_settings(), source=str(folder.path / SETTINGS_FILE))


# ----------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------
def item_seed(seed: int, identity: str, prompt: str) -> int:
    """The seed of one image: SHA-256 of (seed, identity, prompt), 63 bits.

    Stable across processes, machines and Python runs (unlike ``hash()``), and independent of
    the order or sharding of the grid, of the variant and of the model.
    """
    text = json.dumps([int(seed), identity, prompt], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class EvalItem:
    """One image of the grid."""

    model: str
    variant: str
    identity: str
    prompt_set: str
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.model}/{self.variant}/{self.identity}/{self.prompt_set}/{self.prompt}"

    @property
    def image(self) -> str:
        """Path of the image inside the run folder (POSIX separators)."""
        words = re.sub(r"[^a-z0-9]+", "-", self.prompt.lower()).strip("-")[:48].strip("-")
        digest = hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:8]
        return f"{IMAGES}/{self.model}/{self.variant}/{self.identity}/{self.prompt_set}-{words}-{digest}.png"


def build_items(settings: RunSettings) -> list[EvalItem]:
    """The whole grid in its canonical order: model, identity, prompt set, prompt, variant.

    Models come first so that each process loads each model once; variants last, so the variants
    of one (identity, prompt) sit together.
    """
    items = []
    for model in settings.models:
        for identity in sorted(settings.identities):
            for prompt_set in sorted(settings.prompts):
                for prompt in sorted(settings.prompts[prompt_set]):
                    seed = item_seed(settings.seed, identity, prompt)
                    for variant in settings.variants:
                        items.append(EvalItem(model, variant, identity, prompt_set, prompt, seed))
    return items


def shard(items: Sequence[EvalItem], index: int, count: int) -> list[EvalItem]:
    """The items of process ``index`` of ``count``, a deterministic split.

    Items are dealt out in groups of one (model, identity, prompt) -- all variants of an image
    together -- and group g goes to process g % count. Dealing single items (i % count) would give
    one process every cheap baseline and another every three-branch variant when the number of
    variants is a multiple of the process count; whole groups give every process the same mix.
    """
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is outside 0..{count - 1}")
    groups: dict[tuple, int] = {}
    mine = []
    for item in items:
        group = groups.setdefault((item.model, item.identity, item.prompt_set, item.prompt), len(groups))
        if group % count == index:
            mine.append(item)
    return mine
