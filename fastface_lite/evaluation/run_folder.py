"""The run folder of an evaluation (see :mod:`fastface_lite.evaluation.runner`): atomic writes, append-only
logs that survive a kill, merging them, and the settings a resume is checked against.

**A killed run loses nothing and repeats nothing.** Each finished item is written as it finishes:
the image first (to a temporary file, then ``os.replace``), then one JSON line appended to the
process's own log ``shards/process-NNN.jsonl`` (flush + fsync). A restart with ``resume=True``
(``--resume``) reads the logs, ignores a torn last line, and skips every item that has a record
and an image. Settings are stored in ``settings.json``; resuming with other settings is refused.

Run folder::

    RUN_DIR/
      settings.json               what the run is (compared on --resume) and where its inputs came from
      identities/<name>.<ext>     copies of the identity photos (so `fastface metrics` needs nothing else)
      images/<model>/<variant>/<identity>/<prompt_set>-<prompt words>-<hash>.png
      shards/process-000.jsonl    append-only log of finished items, one per process
      results.jsonl, results.csv  the merged table, one row per image, in grid order
      summary.csv, summary.md     mean and 95% bootstrap interval per (model, variant, prompt_set)
      plots/<metric>.png          one bar chart per metric
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (exists without --resume/--overwrite, other settings...)."""


# ----------------------------------------------------------------------------------------------
# identity photos (a run folder keeps copies of them, checked by SHA-256)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """An identity photo: its name (file stem, made path-safe), where it is, and its SHA-256."""

    name: str
    path: Path
    sha256: str


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
