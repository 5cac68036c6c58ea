"""The run folder (fastface_lite.evaluation.run_folder): a run needs --resume or --overwrite to be
touched again, a resume with other settings is refused, --overwrite only ever replaces a run folder;
and the folder's operations on their own: decide, prepare, logs and their merge, atomic writes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from fastface_lite import cli
from fastface_lite.evaluation.grid import EvalSpec, RunSettings, build_items, resolve_identities
from fastface_lite.evaluation.run_folder import (
    IDENTITIES,
    IMAGES,
    SETTINGS_FILE,
    SHARDS,
    RunFolder,
    RunFolderError,
    atomic_write,
    sha256_file,
)
from fastface_lite.evaluation.runner import run_evaluation
from fastface_lite.faces.photos import face_path

from .tiny_runs import EVAL_GRID, GRID, images, log_lines


def test_existing_run_needs_resume_or_overwrite(reference_run, capsys):
    before = (reference_run / "results.jsonl").read_bytes()
    assert cli.main(["eval", *GRID, "--out", str(reference_run)]) == 2
    message = capsys.readouterr().err
    assert "already holds an evaluation run" in message and "--resume" in message and "--overwrite" in message
    with pytest.raises(RunFolderError, match="--resume"):
        run_evaluation(EVAL_GRID, reference_run)
    with pytest.raises(RunFolderError, match="exclude each other"):
        run_evaluation(EVAL_GRID, reference_run, resume=True, overwrite=True)
    assert (reference_run / "results.jsonl").read_bytes() == before


def test_resume_with_other_settings_is_refused(reference_run, tmp_path, capsys):
    before = (reference_run / "results.jsonl").read_bytes()
    with pytest.raises(RunFolderError, match=r"other settings:\n  seed: stored 0, now 1"):
        run_evaluation(EvalSpec(**{**EVAL_GRID.__dict__, "seed": 1}), reference_run, resume=True)
    with pytest.raises(RunFolderError, match="variants"):
        run_evaluation(EvalSpec(**{**EVAL_GRID.__dict__, "variants": ("baseline",)}), reference_run, resume=True)
    with pytest.raises(RunFolderError, match="prompts"):
        run_evaluation(EvalSpec(**{**EVAL_GRID.__dict__, "prompts_per_set": 3}), reference_run, resume=True)
    # an identity photo that changed under the same name is a different setting too
    edited = tmp_path / "astronaut.jpg"
    edited.write_bytes(face_path("astronaut").read_bytes() + b"\0")
    with pytest.raises(RunFolderError, match="identities"):
        run_evaluation(
            EvalSpec(**{**EVAL_GRID.__dict__, "identities": (str(edited), "grace_hopper")}), reference_run, resume=True
        )
    assert cli.main(["eval", *GRID, "--seed", "1", "--out", str(reference_run), "--resume"]) == 2
    assert "seed: stored 0, now 1" in capsys.readouterr().err
    assert (reference_run / "results.jsonl").read_bytes() == before


def test_overwrite_only_replaces_run_folders_and_limit_is_not_a_setting(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(RunFolderError, match="not an evaluation run folder"):
        run_evaluation(EVAL_GRID, foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "keep me"

    out = tmp_path / "run"
    assert len(run_evaluation(EVAL_GRID, out, progress=False, limit=2)) == 2
    table = run_evaluation(EVAL_GRID, out, overwrite=True, progress=False, limit=1)
    assert len(table) == 1 and len(log_lines(out)) == 1 and len(images(out)) == 1
    table = run_evaluation(EVAL_GRID, out, resume=True, progress=False, limit=3)  # continues the grid
    assert table["key"].tolist() == [i.key for i in build_items(RunSettings.from_spec(EVAL_GRID))[:3]]
    assert len(log_lines(out)) == 3


# ------------------------------------------------------------- the folder alone, without generating
@pytest.fixture(scope="module")
def settings():
    return RunSettings.from_spec(EVAL_GRID)


@pytest.fixture(scope="module")
def identities():
    return resolve_identities(EVAL_GRID.identities)


def test_a_folder_being_claimed_counts_as_new_for_the_other_processes(settings, tmp_path):
    # a multi-process run: the workers decide while the main process holds the lock and is still
    # writing its owner file (atomic_write's temporary copy, slow to fsync on a busy disk)
    run_dir = tmp_path / "claiming"
    run_dir.mkdir()
    for name in (".fastface-run.lock", ".fastface-run.owner.json", ".fastface-run.owner.json.tmp-4242"):
        (run_dir / name).write_text("")
    assert RunFolder(run_dir).decide(settings.to_json(), False, False) == "new"
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not an evaluation run folder"):
        RunFolder(run_dir).decide(settings.to_json(), False, False)


def test_decide_reads_the_folder_and_refuses_what_it_must(settings, identities, tmp_path):
    stored = settings.to_json()
    assert RunFolder(tmp_path / "missing").decide(stored, False, False) == "new"
    (tmp_path / "empty").mkdir()
    assert RunFolder(tmp_path / "empty").decide(stored, False, False) == "new"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder(tmp_path / "file").decide(stored, False, False)
    folder = RunFolder(tmp_path / "run")
    folder.prepare("new", stored, identities)
    with pytest.raises(RunFolderError, match="exclude each other"):
        folder.decide(stored, True, True)
    with pytest.raises(RunFolderError, match="already holds an evaluation run"):
        folder.decide(stored, False, False)
    assert folder.decide(stored, True, False) == "resume"
    assert folder.decide(stored, False, True) == "overwrite"
    other = RunSettings.from_spec(EvalSpec(**{**EVAL_GRID.__dict__, "adapter": "faceid"})).to_json()
    with pytest.raises(RunFolderError, match=r"other settings:\n  adapter: stored \"faceid-plusv2\", now \"faceid\"\n"):
        folder.decide(other, True, False)


def test_prepare_writes_settings_photos_and_repairs_a_killed_run(settings, identities, tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.prepare("new", settings.to_json(), identities)
    text = (folder.path / SETTINGS_FILE).read_text(encoding="utf-8")
    stored = json.loads(text)
    assert list(stored) == ["settings", "info"] and list(stored["info"]) == ["created", "identity_sources"]
    assert text == json.dumps(stored, indent=2, ensure_ascii=False) + "\n"  # the layout old runs have
    assert folder.load_settings() == settings.to_json()
    for identity in identities:
        copy = folder.identity_photo(identity.name)
        assert copy.parent.name == IDENTITIES and sha256_file(copy) == identity.sha256
    # what a kill leaves: a torn last log line, a half-written image; and a file of the user's
    log = folder.path / SHARDS / "process-000.jsonl"
    log.parent.mkdir()
    log.write_bytes(b'{"key": "a"}\n{"key": "b", "fin')
    stale = folder.path / IMAGES / "hyper" / ".x.png.tmp-123"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    (folder.path / "notes.txt").write_text("mine")
    folder.prepare("resume", settings.to_json(), identities)
    assert log.read_bytes() == b'{"key": "a"}\n' and not stale.exists()
    folder.prepare("overwrite", settings.to_json(), identities)
    assert not (folder.path / SHARDS).exists() and (folder.path / "notes.txt").read_text() == "mine"
    assert (folder.path / SETTINGS_FILE).is_file()


def test_logs_merge_to_the_newest_record_and_finished_needs_the_image(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.open_log(0) as log:
        log.append(
            {
                "key": "a",
                "image": "images/a.png",
                "score": float("nan"),
                "n": np.int64(3),
                "ok": np.bool_(True),
                "finished_at": 1.0,
            }
        )
        log.append({"key": "b", "image": "images/b.png", "finished_at": 1.0})
    with folder.open_log(1) as log:
        log.append({"key": "a", "image": "images/a.png", "score": 0.5, "finished_at": 2.0})
    assert (folder.path / SHARDS / "process-001.jsonl").is_file()
    first = json.loads((folder.path / SHARDS / "process-000.jsonl").read_text().splitlines()[0])
    assert first["score"] is None and first["n"] == 3 and first["ok"] is True  # standard JSON
    assert folder.records()["a"]["score"] == 0.5  # the later finish wins
    folder.write_records([{"key": "a", "image": "images/a.png", "score": 0.7, "finished_at": 2.0, "metrics_at": 5.0}])
    assert folder.records()["a"]["score"] == 0.7  # recomputed metrics win over the logs
    assert folder.finished() == set()
    folder.write_image("images/a.png", Image.new("RGB", (8, 8)))
    assert folder.finished() == {"a"}
    with pytest.raises(RunFolderError, match="'nobody' is missing"):
        folder.identity_photo("nobody")
    with open(folder.path / SHARDS / "process-000.jsonl", "ab") as f:
        f.write(b'not json\n{"key": "c"')  # a garbled line and a torn one
    with pytest.warns(UserWarning, match="line 3 is not valid JSON"):
        assert set(folder.records()) == {"a", "b"}


def test_files_are_written_whole_and_settings_errors_name_the_file(tmp_path):
    atomic_write(tmp_path / "a" / "b.txt", "héllo")
    atomic_write(tmp_path / "c.bin", b"\0\1")
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert sha256_file(tmp_path / "c.bin") == hashlib.sha256(b"\0\1").hexdigest()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.txt", "c.bin"]  # no temporary file left
    with pytest.raises(RunFolderError, match="not an evaluation run folder"):
        RunFolder(tmp_path).load_settings()
    (tmp_path / SETTINGS_FILE).write_text("{")
    with pytest.raises(RunFolderError, match="is not valid JSON"):
        RunFolder(tmp_path).load_settings()
    (tmp_path / SETTINGS_FILE).write_text("[]")
    with pytest.raises(RunFolderError, match='holds no "settings" object'):
        RunFolder(tmp_path).load_settings()
