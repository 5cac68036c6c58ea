"""The evaluation runner (SPEC §5): identities x prompts x variants x models, one image each.

    from fastface_lite.evaluate import EvalSpec, run_evaluation, recompute_metrics
    spec = EvalSpec(identities=("astronaut", "grace_hopper"), variants=("baseline", "fastface-am2"))
    table = run_evaluation(spec, "runs/hyper", resume=True)   # a pandas DataFrame, one row per image
    recompute_metrics("runs/hyper")                           # score the saved images again

What makes a run trustworthy, and how this module gets it:

* **An image does not depend on its neighbours.** Every item draws its starting noise from its own
  generator, seeded by :func:`item_seed` from (seed, identity, prompt) through SHA-256. The
  reference implementation shared one generator over the whole dataset and walked ``os.listdir``
  order (SPEC §4, bug 7), so an image changed when the dataset or its order did. Here identities and
  prompts are sorted, and an item's result is the same alone, in any order, in any shard, on any
  number of processes. The seed does not depend on the variant or model: every variant starts from
  the same noise, so variants are compared pair by pair.
* **A killed run loses nothing and repeats nothing.** Each finished item is written as it finishes:
  the image first (to a temporary file, then ``os.replace``), then one JSON line appended to the
  process's own log ``shards/process-NNN.jsonl`` (flush + fsync). A restart with ``resume=True``
  (``--resume``) reads the logs, ignores a torn last line, and skips every item that has a record
  and an image. Settings are stored in ``settings.json``; resuming with other settings is refused.
* **Several processes or GPUs** (``accelerate launch ... fastface eval``): ``accelerate.PartialState``
  gives each process its index; the items still to do are dealt out deterministically (see `shard`:
  the variants of one (model, identity, prompt) stay together, group g goes to process g % n), each
  process appends to its own log, and the main process merges the logs after ``wait_for_everyone``.
  Results do not depend on the number of processes (bit for bit when every process uses the same
  number of CPU threads; CPU float sums depend on it at the 1e-6 level). One command at a time per
  run folder; across machines the folder must be on a shared filesystem.

Run folder::

    RUN_DIR/
      settings.json               what the run is (compared on --resume) and where its inputs came from
      identities/<name>.<ext>     copies of the identity photos (so `fastface metrics` needs nothing else)
      images/<model>/<variant>/<identity>/<prompt_set>-<prompt words>-<hash>.png
      shards/process-000.jsonl    append-only log of finished items, one per process
      results.jsonl, results.csv  the merged table, one row per image, in grid order
      summary.csv, summary.md     mean and 95% bootstrap interval per (model, variant, prompt_set)
      plots/<metric>.png          one bar chart per metric

Metrics per image (SPEC §5): identity similarity with the mode's analyzer (tiny: dlib; full:
insightface buffalo_l) plus dlib as an independent second opinion (in tiny mode the primary already
is dlib, so the ``id_dlib_*`` columns repeat the ``id_*`` ones); CLIP text alignment (tiny: a tiny
random CLIP; full: ViT-L/14 as ``clip_score`` and ViT-B/32 as ``clip_score_b32``); face size ratio.
A missing face is a detection failure (a flag, and NaN in the metric), never a number.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .config import MODELS, PRESETS, FastFaceConfig
from .data import face_names, face_path, load_prompts
from .errors import ConfigError
from .mode import MODES, run_mode

__all__ = [
    "EvalSpec", "EvalItem", "Identity", "RunFolderError", "SimulatedKill", "Scorers",
    "run_evaluation", "recompute_metrics", "load_results", "build_items", "item_seed",
    "shard", "resolve_identities", "resolve_prompt_sets", "run_settings", "SUMMARY_METRICS",
    "TIMING_COLUMNS",
]

SETTINGS_FILE = "settings.json"
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SHARDS = "shards"
IMAGES = "images"
IDENTITIES = "identities"
PLOTS = "plots"
# everything a run folder may hold: --overwrite deletes these names and nothing else
_RUN_ENTRIES = (SETTINGS_FILE, RESULTS_JSONL, RESULTS_CSV, SUMMARY_CSV, SUMMARY_MD, SHARDS, IMAGES,
                IDENTITIES, PLOTS)
SETTINGS_FORMAT = 1

ADAPTER_NAMES = ("faceid", "faceid-plusv2")  # models.ADAPTERS, without importing diffusers
TINY_WEIGHTS_SEED = 0  # the tiny pipeline's (random) weights: one fixed "checkpoint"
FULL_CLIP_MODELS = {"clip_score": "openai/clip-vit-large-patch14",
                    "clip_score_b32": "openai/clip-vit-base-patch32"}
# per-image columns summarised by `metrics.aggregate` (those present in the table)
SUMMARY_METRICS = ("id_similarity", "id_dlib_similarity", "clip_score", "clip_score_b32",
                   "face_size_ratio", "unet_evaluations", "seconds")
# columns that depend on the machine and the moment, not on the inputs
TIMING_COLUMNS = ("seconds", "finished_at", "metrics_at")
_GROUP_BY = ("model", "variant", "prompt_set")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (exists without --resume/--overwrite, other settings...)."""


class SimulatedKill(RuntimeError):
    """Raised by ``run_evaluation(..., stop_after=N)``: a test hook standing in for a killed process."""


# ----------------------------------------------------------------------------------------------
# what to evaluate
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSpec:
    """The grid of an evaluation run.

    Args:
        identities: names of photos in data/faces or paths to photos; empty = all shipped faces.
            An identity is called by the file's stem.
        prompt_sets: shipped sets ("realistic", "stylistic") or paths to prompt files (set name =
            file stem). Prompts are stripped, lower-cased (`data.load_prompts`), de-duplicated, sorted.
        prompts_per_set: keep the first N prompts of each set after sorting (None = all).
        variants: FastFace presets (``config.PRESETS``).
        models: distilled model presets (``config.MODELS``).
        adapter: "faceid-plusv2" or "faceid".
        seed: base seed; each image's seed is ``item_seed(seed, identity, prompt)``.
        num_steps: sampling steps (the presets with per-step lists need 4).
        size: image side in pixels (None = the model's default: 1024, turbo 512; tiny: a quarter).
        mode: "tiny" or "full" (None = ``run_mode()``).
        clip_crop_bgr: Plus v2 only: give CLIP the BGR face crop, as the reference implementation
            and the IP-Adapter FaceID demo do (SPEC §1). True by default for fidelity.
    """

    identities: tuple[str, ...] = ()
    prompt_sets: tuple[str, ...] = ("realistic", "stylistic")
    prompts_per_set: Optional[int] = None
    variants: tuple[str, ...] = PRESETS
    models: tuple[str, ...] = ("hyper",)
    adapter: str = "faceid-plusv2"
    seed: int = 0
    num_steps: int = 4
    size: Optional[int] = None
    mode: Optional[str] = None
    clip_crop_bgr: bool = True

    def __post_init__(self):
        for name in ("identities", "prompt_sets", "variants", "models"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, (str, os.PathLike)) else value
            # de-duplicate, keep the order given (variants and models are the columns of the summary)
            object.__setattr__(self, name, tuple(dict.fromkeys(os.fspath(v) for v in value)))
        for name, valid in (("variants", PRESETS), ("models", MODELS)):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{name} is empty; give at least one of {', '.join(valid)}")
            bad = [v for v in values if v not in valid]
            if bad:
                raise ConfigError(f"unknown {name} {bad}; valid: {', '.join(valid)}")
        if not self.prompt_sets:
            raise ConfigError("prompt_sets is empty; give 'realistic', 'stylistic' or prompt files")
        if self.adapter not in ADAPTER_NAMES:
            raise ConfigError(f"unknown adapter {self.adapter!r}; valid: {', '.join(ADAPTER_NAMES)}")
        if self.mode is not None and self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.prompts_per_set is not None and (not isinstance(self.prompts_per_set, int)
                                                 or self.prompts_per_set < 1):
            raise ConfigError(f"prompts_per_set must be a positive integer, got {self.prompts_per_set!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 32 or self.size % 8):
            raise ConfigError(f"size must be a multiple of 8 and at least 32 pixels, got {self.size!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        for model in self.models:  # fail now, not after hours, if a preset cannot run
            for variant in self.variants:
                FastFaceConfig.preset(variant, model=model, num_steps=self.num_steps)


@dataclass(frozen=True)
class Identity:
    """An identity photo: its name (file stem, made path-safe), where it is, and its SHA-256."""

    name: str
    path: Path
    sha256: str


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "face"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_identities(identities: Sequence[str]) -> list[Identity]:
    """Identity photos by name (data/faces) or path, sorted by name; names must be unique."""
    found = {}
    for entry in identities or face_names():
        path = Path(entry).expanduser()
        if not path.is_file():
            if os.sep in entry or "/" in entry or path.suffix:
                raise FileNotFoundError(f"identity photo {entry!r} does not exist; pass a name from "
                                        f"data/faces ({', '.join(face_names())}) or a path to a photo")
            path = face_path(entry)  # raises FileNotFoundError naming the shipped faces
        name = _safe_name(path.stem)
        if name in found and found[name].resolve() != path.resolve():
            raise ConfigError(f"two identity photos are both called {name!r} ({found[name]} and {path}); "
                              "rename one: an identity is known by its file name")
        found[name] = path
    return [Identity(name, found[name], _sha256_file(found[name])) for name in sorted(found)]


def resolve_prompt_sets(prompt_sets: Sequence[str], per_set: Optional[int] = None) -> dict[str, list[str]]:
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


def run_settings(spec: EvalSpec) -> dict:
    """What defines the run's results, as stored in settings.json and compared on resume.

    The prompts and the photos' SHA-256 are stored (not just file names), and so is every variant's
    full config: an edited prompt file, photo or preset makes a resume refuse instead of mixing
    old and new results. ``--limit`` is not a setting: it only says how much of the grid to do now.
    """
    mode = spec.mode or run_mode()
    configs = {f"{m}/{v}": FastFaceConfig.preset(v, model=m, num_steps=spec.num_steps).to_dict()
               for m in spec.models for v in spec.variants}
    return {
        "format": SETTINGS_FORMAT,
        "mode": mode,
        "models": list(spec.models),
        "variants": list(spec.variants),
        "adapter": spec.adapter,
        "seed": spec.seed,
        "num_steps": spec.num_steps,
        "size": spec.size,
        "clip_crop_bgr": spec.clip_crop_bgr,
        "identities": [{"name": i.name, "sha256": i.sha256}
                       for i in resolve_identities(spec.identities)],
        "prompts": resolve_prompt_sets(spec.prompt_sets, spec.prompts_per_set),
        "weights": ({"tiny_pipeline_seed": TINY_WEIGHTS_SEED, "clip": "ClipScorer.tiny(seed=0)",
                     "face_analyzer": "dlib"} if mode == "tiny" else
                    {"clip": FULL_CLIP_MODELS, "face_analyzer": "insightface buffalo_l",
                     "second_opinion": "dlib", "dtype": "float16 on CUDA, else float32"}),
        "variant_configs": configs,
    }


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


def build_items(settings: dict) -> list[EvalItem]:
    """The whole grid in its canonical order: model, identity, prompt set, prompt, variant.

    Models come first so that each process loads each model once; variants last, so the variants
    of one (identity, prompt) sit together.
    """
    identities = sorted(i["name"] for i in settings["identities"])
    items = []
    for model in settings["models"]:
        for identity in identities:
            for prompt_set in sorted(settings["prompts"]):
                for prompt in sorted(settings["prompts"][prompt_set]):
                    seed = item_seed(settings["seed"], identity, prompt)
                    for variant in settings["variants"]:
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


# ----------------------------------------------------------------------------------------------
# files: atomic writes, append-only logs that survive a kill
# ----------------------------------------------------------------------------------------------
def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _fsync_write(path, text.encode("utf-8"))


def _jsonable(value):
    """NaN -> None (standard JSON), numpy scalars -> Python."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records of a JSON-lines log and the byte length of its complete lines.

    A last line without its newline is what a kill mid-write leaves: it is ignored (and
    `_repair_log` cuts it off). A complete line that is not JSON is skipped with a warning.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}: line {number} is not valid JSON and is ignored", stacklevel=2)
    return records, end


def _repair_log(path: Path) -> None:
    """Cut a torn last line off a log, so the next append starts on a line of its own."""
    _, end = _read_jsonl(path)
    if end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())


class _Log:
    """An append-only JSON-lines file: one ``write`` per record, flushed and fsynced."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")

    def append(self, record: dict) -> None:
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False,
                          allow_nan=False) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _merged_records(run_dir: Path) -> dict[str, dict]:
    """key -> the newest record of that item over all process logs and results.jsonl.

    Newest = latest ``finished_at`` (an item is regenerated only if its image went missing),
    then latest ``metrics_at`` (set by `recompute_metrics`), so neither a resume nor a
    recomputation can bring back stale numbers.
    """
    sources = sorted((run_dir / SHARDS).glob("*.jsonl"))
    if (run_dir / RESULTS_JSONL).is_file():
        sources.append(run_dir / RESULTS_JSONL)
    newest: dict[str, dict] = {}
    order = lambda r: (r.get("finished_at") or 0.0, r.get("metrics_at") or 0.0)  # noqa: E731
    for source in sources:
        for record in _read_jsonl(source)[0]:
            key = record.get("key")
            if key is not None and (key not in newest or order(record) >= order(newest[key])):
                newest[key] = record
    return newest


# ----------------------------------------------------------------------------------------------
# the run folder
# ----------------------------------------------------------------------------------------------
def _load_settings(run_dir: Path) -> dict:
    path = run_dir / SETTINGS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{run_dir} is not an evaluation run folder (no {SETTINGS_FILE})") from None
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is not valid JSON ({err}); was it edited by hand?") from None


def _differences(stored: dict, current: dict) -> list[str]:
    lines = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            old, new = json.dumps(stored.get(key)), json.dumps(current.get(key))
            short = lambda s: s if len(s) <= 120 else s[:117] + "..."  # noqa: E731
            lines.append(f"{key}: stored {short(old)}, now {short(new)}")
    return lines


def _inspect_run_dir(run_dir: Path, settings: dict, resume: bool, overwrite: bool) -> str:
    """What to do with ``run_dir``: "new", "resume" or "overwrite". Reads only; raises RunFolderError."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other; pass one of them")
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is a file, not a folder; choose another --out")
    if not (run_dir / SETTINGS_FILE).is_file():
        raise RunFolderError(
            f"{run_dir} is not empty and is not an evaluation run folder (no {SETTINGS_FILE}); "
            "choose a new or empty folder for --out (--overwrite only ever replaces a run folder)")
    if overwrite:
        return "overwrite"
    if not resume:
        raise RunFolderError(
            f"{run_dir} already holds an evaluation run. Pass --resume to continue it (finished "
            "items are kept and skipped) or --overwrite to delete its results and start again "
            "(Python: resume=True / overwrite=True).")
    stored = _load_settings(run_dir).get("settings", {})
    diff = _differences(stored, json.loads(json.dumps(settings)))
    if diff:
        raise RunFolderError(
            f"cannot resume {run_dir}: it was started with other settings:\n  " + "\n  ".join(diff)
            + "\nRun the original command again, pass --overwrite to start over, or choose another --out.")
    return "resume"


def _prepare_run_dir(run_dir: Path, decision: str, settings: dict, identities: list[Identity]) -> None:
    """Main process only: create, wipe or repair the folder before any process writes to it."""
    if decision == "overwrite":
        for name in _RUN_ENTRIES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    if decision in ("new", "overwrite"):
        info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "identity_sources": {i.name: str(i.path.resolve()) for i in identities}}
        # first, so a folder that holds anything of ours is recognisably a run folder
        _write_text(run_dir / SETTINGS_FILE,
                    json.dumps({"settings": settings, "info": info}, indent=2, ensure_ascii=False) + "\n")
    for identity in identities:  # copies of the photos: a run folder is self-contained
        copy = run_dir / IDENTITIES / f"{identity.name}{identity.path.suffix.lower()}"
        if not copy.is_file() or _sha256_file(copy) != identity.sha256:
            _fsync_write(copy, identity.path.read_bytes())
    for log in (run_dir / SHARDS).glob("*.jsonl"):
        _repair_log(log)
    for stale in list((run_dir / IMAGES).rglob(".*.tmp-*")) + list(run_dir.glob(".*.tmp-*")):
        stale.unlink(missing_ok=True)  # half-written files of a killed run


def _identity_photo(run_dir: Path, name: str) -> Path:
    folder = run_dir / IDENTITIES
    found = sorted(p for p in folder.iterdir() if p.stem == name) if folder.is_dir() else []
    if not found:
        raise RunFolderError(f"the photo of identity {name!r} is missing from {run_dir / IDENTITIES}")
    return found[0]


# ----------------------------------------------------------------------------------------------
# scoring (shared by the run and by recompute_metrics)
# ----------------------------------------------------------------------------------------------
class Scorers:
    """The metrics of one mode (SPEC §5), loaded once per process.

    tiny: dlib identity similarity (the second opinion is the same model, so it is copied),
    ``ClipScorer.tiny()``. full: insightface buffalo_l primary + dlib second opinion, CLIP
    ViT-L/14 (``clip_score``) and ViT-B/32 (``clip_score_b32``). Face size: the primary analyzer.
    CLIP models load on first use.
    """

    def __init__(self, mode: str, device: Optional[torch.device] = None):
        from .faces import FaceAnalyzer

        self.mode = mode
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if mode == "tiny":
            self.analyzer = FaceAnalyzer("dlib")
            self.second = None
        else:
            ctx_id = (self.device.index or 0) if self.device.type == "cuda" else -1
            self.analyzer = FaceAnalyzer("insightface", ctx_id=ctx_id)
            self.second = FaceAnalyzer("dlib")
        self._clip = None
        self._references: dict[Path, tuple] = {}

    @property
    def clip(self) -> dict:
        if self._clip is None:
            from .metrics import ClipScorer

            if self.mode == "tiny":
                self._clip = {"clip_score": ClipScorer.tiny(seed=0)}
            else:
                self._clip = {column: ClipScorer(model_id, device=self.device)
                              for column, model_id in FULL_CLIP_MODELS.items()}
        return self._clip

    def reference(self, photo: Path):
        """(primary Face, second-opinion Face or the photo itself when dlib finds no face).

        The primary analyzer must find a face: the adapter is conditioned on it.
        """
        photo = Path(photo)
        if photo not in self._references:
            primary = self.analyzer.largest(photo)
            second = None
            if self.second is not None:
                from .faces import NoFaceError

                try:
                    second = self.second.largest(photo)
                except NoFaceError:
                    second = photo  # scored as a reference-side detection failure
            self._references[photo] = (primary, second)
        return self._references[photo]

    def score(self, image, prompt: str, photo: Path) -> dict:
        """Metric columns for one generated ``image`` of ``prompt`` against identity ``photo``."""
        from .metrics import face_size_ratio, identity_similarity

        primary, second = self.reference(photo)
        scores = {}
        ident = identity_similarity(primary, image, self.analyzer)
        scores.update(ident.as_record("id_"))
        scores["id_failed"] = ",".join(ident.failed)
        if self.second is None:  # tiny: the primary is dlib already
            dlib_ident = ident
        else:
            dlib_ident = identity_similarity(second, image, self.second)
        scores.update(dlib_ident.as_record("id_dlib_"))
        scores["id_dlib_failed"] = ",".join(dlib_ident.failed)
        for column, scorer in self.clip.items():
            scores[column] = float(scorer.scores([image], [prompt])[0])
        size = face_size_ratio(image, self.analyzer)
        scores["face_size_ratio"] = float("nan") if size.ratio is None else size.ratio
        scores["face_detection_failure"] = size.detection_failure
        return scores


# ----------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------
class _Generator:
    """One pipeline at a time (items come grouped by model) and each identity's inputs once."""

    def __init__(self, settings: dict, device: torch.device, scorers: Scorers):
        self.settings = settings
        self.device = device
        self.scorers = scorers
        self.model = None
        self.pipe = None
        self._inputs: dict[str, object] = {}
        self._crops: dict[str, object] = {}

    def _load(self, model: str):
        if self.model == model:
            return
        self.pipe, self._inputs = None, {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        from . import models

        adapter = self.settings["adapter"]
        if self.settings["mode"] == "tiny":
            pipe = models.tiny_pipeline(adapter=adapter, seed=TINY_WEIGHTS_SEED, model=model,
                                        device=str(self.device))
        else:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            pipe = models.load_pipeline(model=model, steps=self.settings["num_steps"], adapter=adapter,
                                        device=str(self.device), dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.model = pipe, model

    def _id_inputs(self, identity: str, photo: Path):
        """Embedding and aligned crop from the mode's analyzer (tiny: dlib 128-d; full: insightface
        512-d); the crop is BGR when ``clip_crop_bgr`` (the reference's choice, SPEC §1)."""
        if identity not in self._inputs:
            from .id_inputs import id_inputs, needs_clip

            face, _ = self.scorers.reference(photo)
            crop = None
            if needs_clip(self.pipe):
                if identity not in self._crops:
                    self._crops[identity] = face.aligned_crop(photo, size=224,
                                                              bgr=self.settings["clip_crop_bgr"])
                crop = self._crops[identity]
            self._inputs[identity] = id_inputs(self.pipe, face.embedding, crop)
        return self._inputs[identity]

    def __call__(self, item: EvalItem, photo: Path):
        """-> (PIL image, UNet evaluations, seconds)."""
        self._load(item.model)
        inputs = self._id_inputs(item.identity, photo)
        cfg = FastFaceConfig.preset(item.variant, model=item.model, num_steps=self.settings["num_steps"])
        size = self.settings["size"]
        # noise from a CPU generator: the same starting latents on any device
        generator = torch.Generator("cpu").manual_seed(item.seed)
        start = time.perf_counter()
        out = self.pipe(prompt=item.prompt, fastface=cfg, generator=generator, height=size, width=size,
                        **inputs.call_kwargs())
        image = out.images[0]  # a PIL image: the GPU work is done once it exists
        return image, int(out.unet_evaluations), time.perf_counter() - start


def _item_record(item: EvalItem) -> dict:
    return {"key": item.key, "model": item.model, "variant": item.variant, "identity": item.identity,
            "prompt_set": item.prompt_set, "prompt": item.prompt, "seed": item.seed, "image": item.image}


def _save_png(image, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    _fsync_write(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# the runner
# ----------------------------------------------------------------------------------------------
def _process_state():
    """accelerate's view of this process: index, count, device, barrier.

    ``cpu=True`` where there is no CUDA (or ``accelerate launch --cpu``), so that a launch of
    several processes on a CPU machine forms a gloo group instead of running alone.
    """
    from datetime import timedelta

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # A process that is done waits at the last barrier for the slowest one; the default
    # collective timeout (10 min for NCCL) is too short for a long grid. (Ignored when the
    # process group already exists.)
    return PartialState(cpu=not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"),
                        timeout=timedelta(hours=6))


def run_evaluation(spec: EvalSpec, out_dir, resume: bool = False, overwrite: bool = False, *,
                   progress: bool = True, limit: Optional[int] = None,
                   stop_after: Optional[int] = None) -> pd.DataFrame:
    """Generate and score the grid of ``spec`` into ``out_dir``; returns the merged results table.

    Args:
        spec: what to evaluate.
        out_dir: the run folder (see the module docstring for its layout).
        resume: continue the run in ``out_dir`` (its settings must match); with no run there yet,
            start one. So ``resume=True`` makes a command safe to repeat after a kill.
        overwrite: delete the run in ``out_dir`` and start again.
        progress: a tqdm bar on the main process.
        limit: do only the first ``limit`` items of the grid (canonical order); a later call
            with a larger or no limit continues.
        stop_after: TESTING ONLY: raise `SimulatedKill` after this process has recorded this many
            items, as if it were killed there.

    Returns:
        One row per finished item, in grid order (see `load_results`). Every process returns it.

    Raises:
        RunFolderError: ``out_dir`` holds a run and neither flag was given, or its settings differ.
    """
    run_dir = Path(out_dir)
    state = _process_state()
    settings = run_settings(spec)
    identities = {i.name: i for i in resolve_identities(spec.identities)}
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")

    # 1. every process checks (reads only), then the main process writes, then everyone reads
    decision = _inspect_run_dir(run_dir, settings, resume, overwrite)
    with state.local_main_process_first():  # one process per machine fetches missing weights first
        scorers = Scorers(settings["mode"], state.device)
    for identity in identities.values():  # a photo without a face fails here, before any work
        scorers.reference(identity.path)
    state.wait_for_everyone()
    if state.is_main_process:
        _prepare_run_dir(run_dir, decision, settings, list(identities.values()))
    state.wait_for_everyone()
    done = {key for key, record in _merged_records(run_dir).items()
            if (run_dir / record.get("image", "")).is_file()}
    state.wait_for_everyone()  # nobody appends before everyone has read the same `done`

    # 2. this process's share of what is left
    items = build_items(settings)[:limit]
    todo = [item for item in items if item.key not in done]
    mine = shard(todo, state.process_index, state.num_processes)
    generate = _Generator(settings, state.device, scorers)
    log_path = run_dir / SHARDS / f"process-{state.process_index:03d}.jsonl"
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), unit="image", disable=not progress or not state.is_main_process,
               desc=f"eval (process {state.process_index + 1}/{state.num_processes})"
               if state.num_processes > 1 else "eval")
    recorded = 0
    with _Log(log_path) as log, bar:
        for item in mine:
            photo = identities[item.identity].path
            image, evaluations, seconds = generate(item, photo)
            _save_png(image, run_dir / item.image)  # the image first: a record always has one
            record = _item_record(item)
            record.update(unet_evaluations=evaluations, seconds=seconds)
            record.update(scorers.score(image, item.prompt, photo))
            record["finished_at"] = time.time()
            log.append(record)
            recorded += 1
            bar.update()
            if stop_after is not None and recorded >= stop_after:
                raise SimulatedKill(f"stopped after {recorded} item(s) (stop_after={stop_after})")

    # 3. the main process merges and summarises
    state.wait_for_everyone()
    if state.is_main_process:
        table = _finalize(run_dir)
        skipped = len(items) - len(todo)
        print(f"{run_dir}: {len(table)} images ({len(todo)} generated now by {state.num_processes} "
              f"process(es), {skipped} already done); summary in {run_dir / SUMMARY_MD}")
    state.wait_for_everyone()
    return load_results(run_dir)


def load_results(run_dir) -> pd.DataFrame:
    """The merged results table of a run folder (all items finished so far, in grid order)."""
    run_dir = Path(run_dir)
    settings = _load_settings(run_dir)["settings"]
    records = _merged_records(run_dir)
    rows = [records[item.key] for item in build_items(settings) if item.key in records]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# merge, summary, plots
# ----------------------------------------------------------------------------------------------
def _finalize(run_dir: Path) -> pd.DataFrame:
    """Write results.jsonl/.csv, summary.csv/.md and one plot per metric from the logs."""
    from .metrics import aggregate

    settings = _load_settings(run_dir)["settings"]
    table = load_results(run_dir)
    lines = "".join(json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False,
                               allow_nan=False) + "\n" for row in table.to_dict("records"))
    _write_text(run_dir / RESULTS_JSONL, lines)
    _write_text(run_dir / RESULTS_CSV, table.to_csv(index=False))
    if table.empty:
        return table
    metrics = [m for m in SUMMARY_METRICS if m in table.columns
               and not (m == "id_dlib_similarity" and settings["mode"] == "tiny")]
    summary = aggregate(table, by=_GROUP_BY, metrics=metrics)
    # the order the user gave variants and models in, not alphabetical
    order = {"model": settings["models"], "variant": settings["variants"]}
    for column, values in order.items():
        summary[column] = pd.Categorical(summary[column], categories=values, ordered=True)
    summary["metric"] = pd.Categorical(summary["metric"], categories=metrics, ordered=True)
    summary = summary.sort_values([*_GROUP_BY, "metric"], kind="stable").reset_index(drop=True)
    summary[["model", "variant", "metric"]] = summary[["model", "variant", "metric"]].astype(str)
    _write_text(run_dir / SUMMARY_CSV, summary.to_csv(index=False))
    _write_text(run_dir / SUMMARY_MD, _summary_markdown(summary, settings))
    for metric in metrics:
        _plot_metric(summary, metric, run_dir / PLOTS / f"{metric}.png", settings)
    return table


def _format(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _summary_markdown(summary: pd.DataFrame, settings: dict) -> str:
    head = (f"# Evaluation summary\n\nmode: {settings['mode']}, adapter: {settings['adapter']}, "
            f"{settings['num_steps']} steps, seed {settings['seed']}. Mean and 95% percentile-bootstrap "
            "interval per group; `failures` = images without a detectable face (excluded from the mean).\n")
    if settings["mode"] == "tiny":
        head += ("\nTiny mode: random weights, so the images are noise and faces are rarely found; "
                 "the numbers exercise the pipeline, they do not measure FastFace.\n")
    columns = list(summary.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in summary.itertuples(index=False):
        lines.append("| " + " | ".join(_format(v) for v in row) + " |")
    return head + "\n" + "\n".join(lines) + "\n"


def _plot_metric(summary: pd.DataFrame, metric: str, path: Path, settings: dict) -> None:
    """Bars of the mean (with the bootstrap interval) per variant, one panel per model."""
    import io

    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone (Agg canvas)

    rows = summary[summary["metric"] == metric]
    variants, models = settings["variants"], settings["models"]
    sets = sorted(rows["prompt_set"].unique())
    fig = Figure(figsize=(max(4.0, 0.9 * len(variants) * len(models) + 1.5), 3.4))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    width = 0.8 / max(len(sets), 1)
    for ax, model in zip(axes, models):
        for j, prompt_set in enumerate(sets):
            sel = rows[(rows["model"] == model) & (rows["prompt_set"] == prompt_set)]
            sel = sel.set_index("variant").reindex(variants)
            x = np.arange(len(variants)) + (j - (len(sets) - 1) / 2) * width
            mean = sel["mean"].to_numpy(float)
            err = np.vstack([mean - sel["ci_low"].to_numpy(float), sel["ci_high"].to_numpy(float) - mean])
            ax.bar(x, np.nan_to_num(mean), width, yerr=np.nan_to_num(err), capsize=3, label=prompt_set)
            for xi, m in zip(x, mean):
                if math.isnan(m):
                    ax.annotate("n/a", (xi, 0), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(model, fontsize=9)
    axes[0].set_ylabel(metric)
    axes[-1].legend(fontsize=7, title="prompts", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{metric}: mean and 95% bootstrap interval ({settings['mode']} mode)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _fsync_write(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------
# fastface metrics RUN_DIR
# ----------------------------------------------------------------------------------------------
def recompute_metrics(run_dir, *, progress: bool = True, device=None) -> pd.DataFrame:
    """Score the saved images of a run again and write the table and the summary again.

    Uses the run's mode (settings.json) and its copies of the identity photos. Generation columns
    (seed, unet_evaluations, seconds, ...) are kept; metric columns are replaced and ``metrics_at``
    is set, so a later ``--resume`` keeps the new numbers. Items not finished yet are left out (a
    warning says how many).
    """
    run_dir = Path(run_dir)
    settings = _load_settings(run_dir)["settings"]
    if device is None:
        device = "cuda" if torch.cuda.is_available() and settings["mode"] == "full" else "cpu"
    scorers = Scorers(settings["mode"], torch.device(device))
    records = _merged_records(run_dir)
    items = [item for item in build_items(settings) if item.key in records]
    missing = len(build_items(settings)) - len(items)
    if missing:
        warnings.warn(f"{run_dir}: {missing} item(s) of the grid are not finished; scoring the "
                      f"{len(items)} that are", stacklevel=2)
    from PIL import Image
    from tqdm.auto import tqdm

    updated = []
    for item in tqdm(items, unit="image", desc="metrics", disable=not progress):
        record = dict(records[item.key])
        with Image.open(run_dir / record["image"]) as image:
            image = image.convert("RGB")
        record.update(scorers.score(image, item.prompt, _identity_photo(run_dir, item.identity)))
        record["metrics_at"] = time.time()
        updated.append(record)
    lines = "".join(json.dumps({k: _jsonable(v) for k, v in r.items()}, ensure_ascii=False,
                               allow_nan=False) + "\n" for r in updated)
    _write_text(run_dir / RESULTS_JSONL, lines)
    table = _finalize(run_dir)
    print(f"{run_dir}: metrics of {len(table)} images recomputed; summary in {run_dir / SUMMARY_MD}")
    return table
