"""The run folder of an evaluation (see :mod:`fastface_lite.evaluation.runner`): one `RunFolder`
holds every file operation a run does, so none of them is spread over the runner and the summary.

**A killed run loses nothing and repeats nothing.** Each finished item is written as it finishes:
the image first (to a temporary file, then ``os.replace``), then one JSON line appended to the
process's own log ``shards/process-NNN.jsonl`` (flush + fsync). A restart with ``resume=True``
(``--resume``) reads the logs, ignores a torn last line, and skips every item that has a record
and an intact image (readable, of the recorded size and SHA-256). Settings are stored in
``settings.json``; resuming with other settings is refused.

**One writer per folder**: a command holds the folder's lock (``.fastface-run.lock``, see
`RunFolder.claim`) from before it reads anything until it exits; a second command is refused.

Run folder::

    RUN_DIR/
      settings.json               what the run is (compared on --resume) and where its inputs came from
      identities/<name>.<ext>     copies of the identity photos (so `fastface metrics` needs nothing else)
      images/<model>/<variant>/<identity>/<prompt_set>-<prompt words>-<hash>.png
      shards/process-000.jsonl    append-only log of finished items, one per process
      results.jsonl, results.csv  the merged table, one row per image, in grid order
      summary.csv, summary.md     mean and 95% bootstrap interval per (model, variant, prompt_set)
      plots/<metric>.png          one bar chart per metric
      .fastface-run.lock          the one-writer lock, and .fastface-run.owner.json: who holds it

What the settings *mean* is :class:`fastface_lite.evaluation.grid.RunSettings`; this module stores
and compares them as the JSON object ``RunSettings.to_json()`` gives, so it needs no knowledge of
their fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock, Timeout

from fastface_lite.errors import RunFolderError

__all__ = ["RunFolder", "RunFolderError", "AppendLog", "Identity", "atomic_write", "sha256_file"]

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
_RUN_ENTRIES = (SETTINGS_FILE, RESULTS_JSONL, RESULTS_CSV, SUMMARY_CSV, SUMMARY_MD, SHARDS, IMAGES, IDENTITIES, PLOTS)

Decision = Literal["new", "resume", "overwrite"]


# the one-writer lock (see `RunFolder.claim`): a file that is flock-ed, and who holds it
LOCK_FILE = ".fastface-run.lock"
OWNER_FILE = ".fastface-run.owner.json"
_LOCK_ENTRIES = (LOCK_FILE, OWNER_FILE)
_LOCK_TEMPS = (f".{OWNER_FILE}.tmp-",)  # atomic_write's name for the owner file being written


class StaleLockWarning(UserWarning):
    """A run folder's lock was left by a command that died (killed) while holding it."""


def _me() -> dict:
    """This process as the holder of a run folder: pid, host, start time, command line."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]),
    }


@dataclass(frozen=True)
class Identity:
    """An identity photo: its name (file stem, made path-safe), where it is, and its SHA-256."""

    name: str
    path: Path
    sha256: str


# ----------------------------------------------------------------------------------------------
# files: checksums, atomic writes, append-only logs that survive a kill
# ----------------------------------------------------------------------------------------------
def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (photos are compared by content)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` all at once or not at all.

    A temporary file in the same folder is written and fsynced, then moved over ``path`` with
    ``os.replace``: a reader, or a run killed mid-write, never sees half a file. Folders are created.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_value(value):
    """One record value as standard JSON: NaN -> null, numpy scalars -> Python numbers."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps({k: _json_value(v) for k, v in record.items()}, ensure_ascii=False, allow_nan=False) + "\n"


def _record_problem(record) -> str | None:
    """Why a parsed log line is not an item's record (None: it is one)."""
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("key"), str):
        return 'has no "key" string'
    for name in ("finished_at", "metrics_at"):
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"has {name}={value!r:.40}, not a time in seconds"
    return None


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records of a JSON-lines log and the byte length of its complete lines.

    A last line without its newline is what a kill mid-write leaves: it is ignored (and
    `_repair_log` cuts it off). A complete line that is not a record (not JSON, not UTF-8, or JSON
    of another shape: not an object with a "key" string) is skipped with a warning naming the file
    and the line; its item counts as not done, so ``--resume`` generates it again. Every other
    line is kept.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            problem = "is not valid JSON (or not UTF-8)"
        else:
            problem = _record_problem(record)
        if problem is None:
            records.append(record)
        else:
            warnings.warn(
                f"{path}: line {number} {problem}; it is ignored (its item, if any, counts as not done "
                "and --resume generates it again)",
                stacklevel=3,
            )
    return records, end


def _repair_log(path: Path) -> None:
    """Cut a torn last line off a log, so the next append starts on a line of its own."""
    _, end = _read_jsonl(path)
    if end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())


class AppendLog:
    """An append-only JSON-lines file: one ``write`` per record, flushed and fsynced, so a kill
    loses at most the record being written (a torn last line, which readers ignore)."""

    def __init__(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "ab")

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record (NaN is written as null, numpy scalars as Python numbers)."""
        self._file.write(_json_line(record).encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _entries(run_dir: Path) -> list[str]:
    """What a folder holds apart from the lock of `RunFolder.claim`: its lock and owner files, and
    the owner file's temporary copy while `atomic_write` writes it (the other processes of a
    multi-process run look at the folder while the main process is claiming it)."""
    return [p.name for p in run_dir.iterdir() if not p.name.startswith(_LOCK_ENTRIES + _LOCK_TEMPS)]


def _around(text: str, at: int, width: int = 100) -> str:
    """``text`` cut to ``width`` characters from a little before position ``at``."""
    start = max(0, at - 40)
    return ("..." if start else "") + text[start : start + width] + ("..." if len(text) > start + width else "")


def settings_differences(stored: Mapping, current: Mapping) -> list[str]:
    """One line per differing setting; long values are cut around their first difference, so
    the difference itself is always shown."""
    lines = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            old, new = json.dumps(stored.get(key)), json.dumps(current.get(key))
            if max(len(old), len(new)) > 120:
                at = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), len(old))
                old, new = _around(old, at), _around(new, at)
            lines.append(f"{key}: stored {old}, now {new}")
    return lines


# ----------------------------------------------------------------------------------------------
# the run folder
# ----------------------------------------------------------------------------------------------
class RunFolder:
    """One evaluation run folder on disk (layout in the module docstring).

    A run goes: `claim` (the span in which this command owns the folder), `decide` (every process,
    reads only), `prepare` (the main process), `finished` (what to skip), then per process
    `open_log` + `write_image` per item, and at the end the merged `records` (see
    :func:`fastface_lite.evaluation.summary.finalize`). Settings are passed and returned as the JSON
    object of ``RunSettings.to_json()``.

    Args:
        path: the folder (it need not exist yet).
    """

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- owning the folder ---------------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self, create: bool = True) -> Iterator[RunFolder]:
        """The span in which this command alone reads and writes the folder.

        An advisory lock (``filelock`` on ``RUN_DIR/.fastface-run.lock``) is taken before anything
        else is read or written and released on any exit, exceptions and Ctrl-C included; who
        holds it (pid, host, start time, command) is written next to it. A second command on the
        same folder is refused at once with a `RunFolderError` that names the holder, and touches
        nothing. The operating system drops the lock of a process that dies (kill -9 too); the
        next command finds its owner file still there, reports the stale lock (a warning naming
        the dead holder) and takes the folder over.

        Args:
            create: create the folder if it does not exist (``fastface eval``); with False a missing
                folder is a `RunFolderError` (``fastface metrics``).

        Raises:
            RunFolderError: another command holds the folder; the path is a file; the folder cannot
                be created or written (read-only, no permission).
        """
        run_dir = self.path
        if run_dir.exists() and not run_dir.is_dir():
            raise RunFolderError(f"{run_dir} is a file, not a folder; choose another --out")
        if not run_dir.exists() and not create:
            raise RunFolderError(f"{run_dir} does not exist; give the folder of an evaluation run")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(run_dir / LOCK_FILE, timeout=0, thread_local=False)
            lock.acquire()
        except Timeout:
            raise RunFolderError(
                f"{run_dir} is in use by another command ({self._holder()}); wait for it to finish, "
                "or choose another --out. Nothing was changed."
            ) from None
        except OSError as err:
            raise RunFolderError(
                f"cannot write to {run_dir} ({err.strerror or err}); a run folder must be a writable "
                "folder: check its permissions or choose another --out"
            ) from None
        try:
            owner = run_dir / OWNER_FILE
            if owner.is_file():  # the lock is ours, so whoever wrote this died holding it
                warnings.warn(
                    f"{run_dir}: stale lock of a command that ended without releasing it "
                    f"({self._holder()}); taking the folder over",
                    StaleLockWarning,
                    stacklevel=3,
                )
            atomic_write(owner, json.dumps(_me(), indent=2) + "\n")
            try:
                yield self
            finally:
                owner.unlink(missing_ok=True)
        finally:
            lock.release()

    def _holder(self) -> str:
        """The owner of the lock in words, from its owner file (or that it has not written it yet)."""
        try:
            owner = json.loads((self.path / OWNER_FILE).read_text(encoding="utf-8"))
            return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}, command: {owner['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its pid and command are not written yet or unreadable"

    # -- before a run --------------------------------------------------------------------------
    def decide(self, settings: Mapping[str, Any], resume: bool, overwrite: bool) -> Decision:
        """What a run with ``settings`` does with this folder: "new", "resume" or "overwrite".

        Reads only (every process may call it). Raises `RunFolderError` when the folder holds
        something else than a run, holds a run and neither flag is given, or holds a run with
        other settings (the message lists the differences).
        """
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other; pass one of them")
        run_dir = self.path
        if not run_dir.exists() or (run_dir.is_dir() and not _entries(run_dir)):
            return "new"
        if not run_dir.is_dir():
            raise RunFolderError(f"{run_dir} is a file, not a folder; choose another --out")
        if not (run_dir / SETTINGS_FILE).is_file():
            raise RunFolderError(
                f"{run_dir} is not empty and is not an evaluation run folder (no {SETTINGS_FILE}); "
                "choose a new or empty folder for --out (--overwrite only ever replaces a run folder)"
            )
        if overwrite:
            return "overwrite"
        if not resume:
            raise RunFolderError(
                f"{run_dir} already holds an evaluation run. Pass --resume to continue it (finished "
                "items are kept and skipped) or --overwrite to delete its results and start again "
                "(Python: resume=True / overwrite=True)."
            )
        stored = self.load_settings()
        diff = settings_differences(stored, json.loads(json.dumps(settings)))
        if diff:
            raise RunFolderError(
                f"cannot resume {run_dir}: its {SETTINGS_FILE} says it was started with other settings:\n  "
                + "\n  ".join(diff)
                + "\nRun the original command again, pass --overwrite to start over, or choose another --out."
            )
        return "resume"

    def prepare(self, decision: Decision, settings: Mapping[str, Any], identities: Sequence[Identity]) -> None:
        """Main process only: create, wipe or repair the folder before any process writes to it.

        "overwrite" deletes the run's own entries (nothing else); "new" and "overwrite" write
        settings.json first, so a folder that holds anything of ours is recognisably a run folder.
        Every decision copies missing or changed identity photos, cuts torn last lines off the
        logs and removes half-written temporary files of a killed run.
        """
        run_dir = self.path
        if decision == "overwrite":
            for name in _RUN_ENTRIES:
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        if decision in ("new", "overwrite"):
            info = {
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "identity_sources": {i.name: str(i.path.resolve()) for i in identities},
            }
            atomic_write(
                run_dir / SETTINGS_FILE,
                json.dumps({"settings": settings, "info": info}, indent=2, ensure_ascii=False) + "\n",
            )
        for identity in identities:  # copies of the photos: a run folder is self-contained
            copy = run_dir / IDENTITIES / f"{identity.name}{identity.path.suffix.lower()}"
            if not copy.is_file() or sha256_file(copy) != identity.sha256:
                atomic_write(copy, identity.path.read_bytes())
        for log in (run_dir / SHARDS).glob("*.jsonl"):
            _repair_log(log)
        for stale in list((run_dir / IMAGES).rglob(".*.tmp-*")) + list(run_dir.glob(".*.tmp-*")):
            stale.unlink(missing_ok=True)  # half-written files of a killed run

    # -- reading -------------------------------------------------------------------------------
    def _settings_file(self):
        path = self.path / SETTINGS_FILE
        fix = "was it edited by hand? Restore it, or choose another --out (--overwrite deletes this run's results)"
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise RunFolderError(f"{self.path} is not an evaluation run folder (no {SETTINGS_FILE})") from None
        except UnicodeDecodeError:
            raise RunFolderError(f"{path} is not UTF-8 text; {fix}") from None
        except json.JSONDecodeError as err:
            what = "is empty" if not err.doc.strip() else f"is not valid JSON ({err})"
            raise RunFolderError(f"{path} {what}; {fix}") from None
        except OSError as err:
            raise RunFolderError(f"cannot read {path} ({err.strerror or err}); it must be a readable file") from None

    def load_settings(self) -> dict:
        """The stored settings (settings.json's "settings": give it to ``RunSettings.from_json``).

        Raises `RunFolderError`, naming the file, when there is no settings.json, it cannot be
        read, is not JSON, or holds no "settings" object.
        """
        stored = self._settings_file()
        if not isinstance(stored, dict) or not isinstance(stored.get("settings"), dict):
            raise RunFolderError(
                f'{self.path / SETTINGS_FILE} holds no "settings" object; was it edited by hand? Restore it, '
                "or choose another --out (--overwrite deletes this run's results)"
            )
        return stored["settings"]

    def records(self) -> dict[str, dict]:
        """key -> the newest record of that item over all process logs and results.jsonl.

        Newest = latest ``finished_at`` (an item is regenerated only if its image went missing),
        then latest ``metrics_at`` (set by `recompute_metrics`), so neither a resume nor a
        recomputation can bring back stale numbers.
        """
        sources = sorted((self.path / SHARDS).glob("*.jsonl"))
        if (self.path / RESULTS_JSONL).is_file():
            sources.append(self.path / RESULTS_JSONL)
        newest: dict[str, dict] = {}
        order = lambda r: (r.get("finished_at") or 0.0, r.get("metrics_at") or 0.0)  # noqa: E731
        for source in sources:
            for record in _read_jsonl(source)[0]:
                key = record.get("key")
                if key is not None and (key not in newest or order(record) >= order(newest[key])):
                    newest[key] = record
        return newest

    def finished(self) -> set[str]:
        """Keys of the items that are done: they have a record and an intact image.

        The one place that says what a resume may skip. Intact: a readable PNG, and, where the
        record holds them (every record written since they were added), the recorded size in
        bytes and SHA-256. An item whose image is missing, truncated or replaced is generated again.
        """
        return {key for key, record in self.records().items() if self._image_intact(record)}

    def _image_intact(self, record: Mapping[str, Any]) -> bool:
        path = self.path / str(record.get("image") or "")
        if not record.get("image") or not path.is_file():
            return False
        data = path.read_bytes()
        if record.get("image_bytes") is not None and len(data) != record["image_bytes"]:
            return False
        if record.get("image_sha256") is not None and hashlib.sha256(data).hexdigest() != record["image_sha256"]:
            return False
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # decodes every row: a truncated file fails here
        except (OSError, SyntaxError, ValueError):
            return False
        return True

    def identity_photo(self, name: str) -> Path:
        """The folder's copy of identity ``name``'s photo (RunFolderError if it is missing)."""
        folder = self.path / IDENTITIES
        found = sorted(p for p in folder.iterdir() if p.stem == name) if folder.is_dir() else []
        if not found:
            raise RunFolderError(f"the photo of identity {name!r} is missing from {folder}")
        return found[0]

    # -- writing -------------------------------------------------------------------------------
    def open_log(self, process_index: int) -> AppendLog:
        """Process ``process_index``'s own append-only log, shards/process-NNN.jsonl."""
        return AppendLog(self.path / SHARDS / f"process-{process_index:03d}.jsonl")

    def write_image(self, relative: str, image) -> dict:
        """Save a PIL ``image`` as PNG at ``relative`` (a path inside the folder), atomically.

        Returns ``{"image_bytes": size, "image_sha256": hex digest}`` of the file written: put them
        in the item's record, so that a resume can tell an intact image from a damaged one.
        """
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        atomic_write(self.path / relative, data)
        return {"image_bytes": len(data), "image_sha256": hashlib.sha256(data).hexdigest()}

    def write_text(self, relative: str, text: str) -> Path:
        """Write a text file (UTF-8) at ``relative`` inside the folder, atomically."""
        path = self.path / relative
        atomic_write(path, text)
        return path

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> Path:
        """Replace results.jsonl with ``records``, one JSON line each (NaN as null), atomically."""
        return self.write_text(RESULTS_JSONL, "".join(_json_line(r) for r in records))
