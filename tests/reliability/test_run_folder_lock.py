"""One writer per run folder: the lock of `RunFolder.claim` (a second command is refused, names the
holder and touches nothing; a dead holder's lock is reported and taken over; `fastface metrics`
takes it too), and `--resume` checks each image it counts as done.

The grid is one identity x one prompt x two variants at 64 px (tiny mode, offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastface_lite import cli
from fastface_lite.errors import RunFolderError
from fastface_lite.evaluation.run_folder import OWNER_FILE, RunFolder, StaleLockWarning
from fastface_lite.evaluation.runner import recompute_metrics, run_evaluation
from fastface_lite.evaluation.summary import load_results

from .runs import REPO, SMALL, SMALL_GRID, log_lines, single_thread, subprocess_env


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns), to show that nothing was touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_second_command_is_refused_names_the_holder_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder(out).claim():
        before = snapshot(out)
        assert cli.main(["eval", *SMALL, "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert "is in use by another command" in err and f"pid {os.getpid()}" in err and "Traceback" not in err
        assert cli.main(["metrics", str(out), "--no-progress"]) == 2  # metrics takes the lock too
        assert "is in use by another command" in capsys.readouterr().err
        assert snapshot(out) == before
    assert not (out / OWNER_FILE).exists()  # released on exit


def test_the_lock_is_released_on_an_exception(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyError), RunFolder(out).claim():
        raise KeyError("boom")
    with RunFolder(out).claim():  # free again
        pass


def test_a_stale_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = {"pid": 2**22 + 1, "host": "elsewhere", "started": "2026-01-01T00:00:00", "command": "fastface eval"}
    (out / OWNER_FILE).write_text(json.dumps(dead))
    with pytest.warns(StaleLockWarning, match=r"stale lock.*pid 4194305 on elsewhere"), RunFolder(out).claim():
        assert json.loads((out / OWNER_FILE).read_text())["pid"] == os.getpid()


def test_out_that_is_a_file_or_a_missing_metrics_folder_is_a_clear_error(tmp_path, capsys):
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert cli.main(["eval", *SMALL, "--out", str(file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert file.read_text() == "x"
    assert cli.main(["metrics", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    with pytest.raises(RunFolderError, match="does not exist"):
        recompute_metrics(tmp_path / "missing")


def test_resume_regenerates_a_truncated_or_replaced_image(tmp_path):
    out = tmp_path / "run"
    table = run_evaluation(SMALL_GRID, out, progress=False)
    assert len(table) == 2 and {"image_bytes", "image_sha256"} <= set(table.columns)
    first, second = (out / image for image in table["image"])
    expected = {first: first.read_bytes(), second: second.read_bytes()}
    first.write_bytes(expected[first][: len(expected[first]) // 2])  # truncated PNG
    second.write_bytes(expected[first])  # a readable PNG, but not the one recorded
    assert RunFolder(out).finished() == set()
    table = run_evaluation(SMALL_GRID, out, resume=True, progress=False)
    assert len(table) == 2 and table["key"].is_unique
    assert {p: p.read_bytes() for p in expected} == expected  # the same images again (same seeds)
    assert len(log_lines(out)) == 4  # both items generated a second time
    assert RunFolder(out).finished() == set(table["key"])


def _launch(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fastface_lite.cli", "eval", *SMALL, "--out", str(out), "--resume"],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_on_one_folder_one_wins_the_other_is_refused(tmp_path):
    """The first process is frozen (SIGSTOP) while it holds the lock, so the overlap is certain."""
    out = tmp_path / "run"
    first = _launch(out)
    try:
        deadline = time.monotonic() + 120
        while not (out / OWNER_FILE).is_file():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first process never took the lock"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)
        before = snapshot(out)
        second = _launch(out)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert "in use by another command" in err and f"pid {first.pid}" in err and "Traceback" not in err
        assert snapshot(out) == before  # the refused process touched nothing
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    table = load_results(out)
    assert len(table) == 2 and table["key"].is_unique and table["image_sha256"].notna().all()
    assert len(log_lines(out)) == 2


def test_the_settings_difference_is_shown_even_in_long_values():
    from fastface_lite.evaluation.run_folder import settings_differences

    stored = {"prompts": ["a photo of a person"] * 20 + ["reading"]}
    (line,) = settings_differences(stored, {"prompts": ["a photo of a person"] * 20 + ["writing"]})
    assert '"reading"' in line and '"writing"' in line
