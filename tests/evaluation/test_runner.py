"""The evaluation runner (fastface_lite.evaluation.runner) on the tiny pipeline, offline.

What is checked: a run killed half-way (by the test hook and by SIGKILL) and restarted gives the
same table and the same image bytes as an uninterrupted one, with no duplicates; two processes
under `accelerate launch` give the same table and images as one; `fastface metrics` reproduces the
stored metrics; the scorers on a real face.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from fastface_lite import cli
from fastface_lite.evaluation.grid import RunSettings, build_items
from fastface_lite.evaluation.run_folder import SHARDS
from fastface_lite.evaluation.runner import Scorers, SimulatedKill, run_evaluation
from fastface_lite.evaluation.summary import load_results
from fastface_lite.faces.photos import face_path

from .tiny_runs import EVAL_GRID, GRID, N_ITEMS, REPO, assert_same_run, comparable, log_lines, subprocess_env


# ------------------------------------------------------------------------------ kill and resume
def test_run_stopped_half_way_resumes_to_identical_results(reference_run, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        run_evaluation(EVAL_GRID, out, resume=True, progress=False, stop_after=7)
    assert len(log_lines(out)) == 7
    assert not (out / "results.csv").exists()  # nothing merged: the process "died"
    # what a kill in the middle of a write leaves: a torn log line and a half-written image
    log = out / SHARDS / "process-000.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"key": "hyper/fastface-am2/astronaut/realistic/a ph')
    torn_image = out / build_items(RunSettings.from_spec(EVAL_GRID))[7].image
    torn_image.parent.mkdir(parents=True, exist_ok=True)
    (torn_image.parent / f".{torn_image.name}.tmp-12345").write_bytes(b"\x89PNG half")

    # the same call again (resume=True makes the command safe to repeat)
    table = run_evaluation(EVAL_GRID, out, resume=True, progress=False)
    assert len(table) == N_ITEMS
    assert_same_run(out, reference_run)
    assert not list(out.rglob(".*.tmp-*"))


def test_sigkilled_cli_run_restarted_with_the_same_command(reference_run, tmp_path):
    out = tmp_path / "run"
    argv = ["eval", *GRID, "--out", str(out), "--resume"]
    log = out / SHARDS / "process-000.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "fastface_lite.cli", *argv],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not (log.is_file() and log.read_bytes().count(b"\n") >= 2):
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run logged nothing in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    done_before = len(log.read_bytes().splitlines())
    assert 2 <= done_before < N_ITEMS  # really killed half-way
    assert not (out / "results.csv").exists()

    assert cli.main(argv) == 0  # the very same command
    assert_same_run(out, reference_run)


# ----------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_accelerate_match_one(reference_run, tmp_path):
    out = tmp_path / "two"
    # `--cpu --num_processes 2` would start a single process (accelerate's multi-CPU launch goes
    # through mpirun); `--multi_gpu` launches through torchrun, which on a machine without CUDA
    # gives CPU processes in a gloo group (the runner asks PartialState for cpu=True there).
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "fastface_lite.cli",
    ]
    if torch.cuda.is_available():
        pytest.skip("this check runs the CPU gloo path; on a CUDA machine it would use the GPUs")
    result = subprocess.run(
        [*launch, "eval", *GRID, "--out", str(out)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "by 2 process(es)" in result.stdout
    shards = {p.name: len(p.read_text().splitlines()) for p in (out / SHARDS).glob("*.jsonl")}
    assert shards == {"process-000.jsonl": N_ITEMS // 2, "process-001.jsonl": N_ITEMS // 2}
    assert_same_run(out, reference_run)
    assert (out / "summary.md").is_file()


# ------------------------------------------------------------------------------------ metrics
def test_metrics_command_reproduces_the_stored_metrics(reference_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    assert cli.main(["metrics", str(out), "--no-progress"]) == 0
    table, stored = load_results(out), load_results(reference_run)
    assert table["metrics_at"].notna().all()
    pd.testing.assert_frame_equal(comparable(table), comparable(stored))
    summary = pd.read_csv(out / "summary.csv")
    expected = pd.read_csv(reference_run / "summary.csv")
    keep = lambda s: s[s["metric"] != "seconds"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(keep(summary), keep(expected))
    # a later resume keeps the recomputed records (nothing left to generate)
    again = run_evaluation(EVAL_GRID, out, resume=True, progress=False)
    assert again["metrics_at"].notna().all() and len(log_lines(out)) == N_ITEMS


def test_scores_of_a_real_face():
    """Tiny images are noise, so check the scoring on a photo: the identity against itself."""
    photo = face_path("grace_hopper")
    scores = Scorers("tiny").score(photo, "a photo of a person", photo)
    assert scores["id_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert scores["id_detection_failure"] is False and scores["id_failed"] == ""
    assert scores["id_same_person"] == 1.0 and scores["id_distance"] == pytest.approx(0.0, abs=1e-6)
    assert {k: scores[k] for k in scores if k.startswith("id_dlib_")} == {
        k.replace("id_", "id_dlib_", 1): v
        for k, v in scores.items()
        if k.startswith("id_") and not k.startswith("id_dlib_")
    }
    assert 0.0 < scores["face_size_ratio"] < 1.0 and scores["face_detection_failure"] is False
    assert -1.0 <= scores["clip_score"] <= 1.0
