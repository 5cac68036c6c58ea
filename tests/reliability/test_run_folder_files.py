"""Run folders whose files are damaged, read-only, or held by another command.

* settings.json garbled in every way a hand edit or a disk can garble it: `fastface metrics`,
  `fastface eval --resume` and `load_results` refuse with a RunFolderError naming the file and
  what to do, and change nothing;
* log lines that are not records (not JSON, not UTF-8, JSON of another shape, a torn last line):
  skipped with a warning naming the file and the line (a torn last line silently), every other
  record kept, and `--resume` makes again exactly the items whose line was lost;
* a read-only run folder: refused before any image is made or scored;
* `--overwrite` from a second command while a first one holds the folder: refused, nothing deleted.

Table-driven; the run is one identity x one prompt x two variants at 64 px (tiny mode), made once."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from fastface_lite import cli
from fastface_lite.errors import RunFolderError
from fastface_lite.evaluation import runner
from fastface_lite.evaluation.run_folder import _LOCK_ENTRIES, RESULTS_JSONL, SETTINGS_FILE, SHARDS, RunFolder
from fastface_lite.evaluation.runner import run_evaluation
from fastface_lite.evaluation.summary import load_results

from .runs import SMALL, SMALL_GRID, single_thread, unwritable

LOG = f"{SHARDS}/process-000.jsonl"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-item run (read-only for the tests: each works on a copy)."""
    out = tmp_path_factory.mktemp("files") / "run"
    with single_thread():
        run_evaluation(SMALL_GRID, out, progress=False)
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, except the lock file a refused command may create."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in _LOCK_ENTRIES
    }


def edited_settings(**change):
    """settings.json with entries of "settings" replaced (removed where the value is ...)."""

    def edit(stored: dict) -> dict:
        settings = {k: v for k, v in stored["settings"].items() if change.get(k, None) is not ...}
        settings.update({k: v for k, v in change.items() if v is not ...})
        return {**stored, "settings": settings}

    return edit


FIX = "choose another --out"
# (settings.json's new content: bytes, or a function of the stored object; words the message must contain)
SETTINGS = [
    (b"", ["settings.json is empty", FIX]),
    (b'{"settings": {"seed": ', ["settings.json is not valid JSON", "line 1", FIX]),
    (b'\xff\xfe{"settings": {}}', ["settings.json is not UTF-8", FIX]),
    (b"[]", ['settings.json holds no "settings" object', FIX]),
    (b'{"settings": [1, 2]}', ['holds no "settings" object']),
    (lambda stored: {"info": stored["info"]}, ['holds no "settings" object']),
    (edited_settings(seed=..., prompts=...), ["settings.json: the stored settings lack seed, prompts", FIX]),
    (edited_settings(seed="0"), ["settings.json: seed must be an integer, got '0'", FIX]),
    (edited_settings(seed=True), ["seed must be an integer, got True"]),
    (edited_settings(variants="baseline"), ["variants must be a non-empty list", "'baseline'"]),
    (edited_settings(variants=[]), ["variants must be a non-empty list"]),
    (edited_settings(prompts=["a photo"]), ["prompts must be an object"]),
    (edited_settings(prompts={"realistic": "a photo"}), ["prompts must be an object"]),
    (edited_settings(identities=["astronaut"]), ['identities must be a list of {"name", "sha256"}']),
    (edited_settings(size=64.5), ["size must be null or a positive integer, got 64.5"]),
    (edited_settings(num_steps=0), ["num_steps must be an integer >= 1"]),
    (edited_settings(clip_crop_bgr="false"), ["clip_crop_bgr must be true or false, got 'false'"]),
    (edited_settings(mode="huge"), ["mode must be one of ['tiny', 'full']"]),
    (edited_settings(weights=None), ["weights must be an object"]),
    (edited_settings(variant_configs={"hyper/baseline": "x"}), ["variant_configs must be"]),
    (edited_settings(format=2), ["format 2", "reads format 1 only"]),
]


def _write_settings(run: Path, content):
    path = run / SETTINGS_FILE
    if callable(content):
        content = json.dumps(content(json.loads(path.read_text()))).encode()
    path.write_bytes(content)


@pytest.mark.parametrize(("content", "words"), SETTINGS, ids=[w[0] for _, w in SETTINGS])
def test_a_garbled_settings_file_is_named_and_nothing_is_changed(run, capsys, content, words):
    _write_settings(run, content)
    before = snapshot(run)
    assert cli.main(["metrics", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastface metrics: error: ") and "Traceback" not in err
    assert str(run / SETTINGS_FILE) in err
    for word in words:
        assert word in err, (word, err)
    with pytest.raises(RunFolderError) as info:
        load_results(run)
    assert str(info.value) in err  # the Python API says the same
    # eval --resume compares the settings: a file it cannot read is named, and so is any
    # stored value that differs from the command's (there a valid file with other settings)
    assert cli.main(["eval", *SMALL, "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastface eval: error: ") and "settings.json" in err and "Traceback" not in err
    assert snapshot(run) == before


def test_a_settings_file_that_is_a_folder(run, capsys):
    (run / SETTINGS_FILE).unlink()
    (run / SETTINGS_FILE).mkdir()
    assert cli.main(["metrics", str(run), "--no-progress"]) == 2
    assert f"cannot read {run / SETTINGS_FILE}" in capsys.readouterr().err
    assert cli.main(["eval", *SMALL, "--out", str(run), "--resume"]) == 2
    assert "not an evaluation run folder (no settings.json)" in capsys.readouterr().err


def _lines(run: Path) -> list[bytes]:
    return (run / LOG).read_bytes().splitlines(keepends=True)


# (the log's new bytes from its two lines; the lines whose items stay done; the warning, None: silent)
LOG_LINES = [
    (lambda a, b: b"not json\n" + b, [1], "line 1 is not valid JSON"),
    (lambda a, b: a[:-1] + b"\xff\n" + b, [1], "line 1 is not valid JSON (or not UTF-8)"),
    (lambda a, b: b"\xff\xfe\x00\n" + b, [1], "line 1 is not valid JSON"),
    (lambda a, b: b"\x00\x00\x00\x00\n" + b, [1], "line 1 is not valid JSON"),
    (lambda a, b: b"[1, 2]\n" + b, [1], "line 1 is a JSON list, not an object"),
    (lambda a, b: b'"a string"\n' + b, [1], "line 1 is a JSON str"),
    (lambda a, b: b"null\n" + b, [1], "line 1 is a JSON NoneType"),
    (lambda a, b: b'{"image": "images/x.png"}\n' + b, [1], 'line 1 has no "key" string'),
    (lambda a, b: a.replace(b'"key": "', b'"key": ["').replace(b'", "model"', b'"], "model"') + b, [1], 'no "key"'),
    (lambda a, b: a.replace(b'"finished_at": ', b'"finished_at": "yesterday", "x": ') + b, [1], "finished_at="),
    (lambda a, b: a.replace(b'"finished_at": ', b'"finished_at": true, "x": ') + b, [1], "finished_at=True"),
    (lambda a, b: a + b[: len(b) // 2], [0], None),  # torn last line: a kill mid-write
    (lambda a, b: a + b"\n\n" + b, [0, 1], None),  # blank lines are nothing
    (lambda a, b: a + b"[]\n" + b[: len(b) // 2], [0], "line 2 is a JSON list"),
]


@pytest.mark.parametrize(
    ("garble", "kept", "warning"), LOG_LINES, ids=[f"{i}-{c[2] or 'silent'}" for i, c in enumerate(LOG_LINES)]
)
def test_log_lines_that_are_not_records_are_skipped_and_named(run, garble, kept, warning):
    folder = RunFolder(run)
    keys = [json.loads(line)["key"] for line in _lines(run)]
    (run / RESULTS_JSONL).unlink()  # as a run killed before its end leaves it: only the logs
    (run / LOG).write_bytes(garble(*_lines(run)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records, finished = folder.records(), folder.finished()
    assert sorted(records) == sorted(keys[i] for i in kept)  # every other record kept
    assert finished == {keys[i] for i in kept}
    messages = [str(w.message) for w in caught]
    if warning is None:
        assert messages == []
    else:
        assert messages and all(m.startswith(f"{run / LOG}: line ") for m in messages), messages
        assert any(warning in m and "--resume generates it again" in m for m in messages), messages


def test_a_wrong_line_in_results_jsonl_loses_nothing(run):
    keys = set(RunFolder(run).records())
    with open(run / RESULTS_JSONL, "ab") as f:
        f.write(b'{"key": 5}\n')
    with pytest.warns(UserWarning, match=r"results\.jsonl: line 3 has no \"key\" string"):
        assert set(RunFolder(run).records()) == keys  # the logs still hold both items


def test_resume_makes_again_exactly_the_items_whose_line_was_lost(run):
    """Line 1 garbled, and a torn half line after it: --resume regenerates item 1 only (the same
    image: same seed), keeps item 2's image and record, and the table is whole again."""
    first, second = _lines(run)
    keys = [json.loads(line)["key"] for line in (first, second)]
    images = {k: (run / json.loads(line)["image"]).read_bytes() for k, line in zip(keys, (first, second), strict=True)}
    (run / RESULTS_JSONL).unlink()
    (run / LOG).write_bytes(b"[garbled]]\n" + second + first[:20])
    stat = (run / json.loads(second)["image"]).stat()
    with pytest.warns(UserWarning, match="line 1 is not valid JSON"):
        table = run_evaluation(SMALL_GRID, run, resume=True, progress=False)
    assert table["key"].tolist() == keys and table["image_sha256"].notna().all()
    lines = _lines(run)
    assert lines[:2] == [b"[garbled]]\n", second]  # the torn tail cut off, nothing else rewritten
    assert [json.loads(line)["key"] for line in lines[2:]] == [keys[0]]  # item 1 made again, once
    assert (run / json.loads(second)["image"]).stat().st_mtime_ns == stat.st_mtime_ns  # item 2 untouched
    assert {k: (run / r).read_bytes() for k, r in zip(table["key"], table["image"], strict=True)} == images


def test_a_read_only_run_folder_is_refused_before_any_image_is_made_or_scored(
    finished_run, tmp_path, capsys, monkeypatch
):
    scored = []
    monkeypatch.setattr(runner.Scorers, "score", lambda self, *a: scored.append(a))
    run, empty = tmp_path / "run", tmp_path / "empty"
    shutil.copytree(finished_run, run)
    empty.mkdir()
    before = snapshot(run)
    commands = [
        ["metrics", str(run), "--no-progress"],
        ["eval", *SMALL, "--out", str(run), "--resume"],
        ["eval", *SMALL, "--out", str(run), "--overwrite"],
    ]
    with unwritable(run):
        codes = [cli.main(argv) for argv in commands]
    with unwritable(empty):
        codes += [cli.main(["eval", *SMALL, "--out", str(empty)])]
        codes += [cli.main(["eval", *SMALL, "--out", str(empty / "new")])]
    assert snapshot(run) == before
    assert codes == [2] * 5 and scored == []
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 5, errors
    for line, folder in zip(errors, [run, run, run, empty, empty / "new"], strict=True):
        assert f"cannot write to {folder} (Permission denied)" in line and "choose another --out" in line, line


def test_overwrite_from_a_second_command_deletes_nothing(run, capsys):
    before = snapshot(run)
    with RunFolder(run).claim():  # the first command, still running
        assert cli.main(["eval", *SMALL, "--out", str(run), "--overwrite"]) == 2
        assert "is in use by another command" in capsys.readouterr().err
    assert snapshot(run) == before
