"""The evaluation runner (`fastface eval`, `fastface metrics`) on the tiny pipeline, offline.

The grid: 2 identities x 4 prompts (2 realistic + 2 stylistic) x 2 variants (baseline and
fastface-am2, the one that evaluates all three branches and normalises across them), 64 px.
What is checked: per-item seeds that do not depend on order or sharding; a run killed half-way
(by the test hook and by SIGKILL) and restarted gives the same table and the same image bytes as
an uninterrupted one, with no duplicates; two processes under `accelerate launch` give the same
table and images as one; `fastface metrics` reproduces the stored metrics; refusals.

Torch runs on one thread in this module: the processes launched by accelerate use one thread each
(torchrun sets OMP_NUM_THREADS=1), so the single-process reference does the same arithmetic; and
on a small shared CPU box two threads per process slow the tiny UNet down many times over.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fastface_lite import cli
from fastface_lite.faces.photos import face_path, load_prompts
from fastface_lite.evaluation.runner import (SHARDS, TIMING_COLUMNS, EvalSpec, RunFolderError, Scorers,
                                    SimulatedKill, build_items, item_seed, load_results,
                                    run_evaluation, run_settings, shard)

REPO = Path(__file__).resolve().parents[2]
GRID = ["--identities", "astronaut", "grace_hopper", "--prompt-sets", "realistic", "stylistic",
        "--prompts-per-set", "2", "--variants", "baseline", "fastface-am2", "--size", "64",
        "--mode", "tiny", "--seed", "0", "--no-progress"]
# the same grid through the Python API (identities given in the other order on purpose)
SPEC = EvalSpec(identities=("grace_hopper", "astronaut"), prompt_sets=("realistic", "stylistic"),
                prompts_per_set=2, variants=("baseline", "fastface-am2"), size=64, mode="tiny", seed=0)
N_ITEMS = 2 * 4 * 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted single-process run through the CLI."""
    out = tmp_path_factory.mktemp("eval") / "reference"
    assert cli.main(["eval", *GRID, "--out", str(out)]) == 0
    return out


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by item, timing columns dropped."""
    table = table.drop(columns=[c for c in TIMING_COLUMNS if c in table.columns])
    return table.sort_values("key").reset_index(drop=True)


def images(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "images").rglob("*"))
            if p.is_file()}


def log_lines(run: Path) -> list[dict]:
    lines = []
    for log in sorted((run / SHARDS).glob("*.jsonl")):
        lines += [json.loads(line) for line in log.read_text().splitlines()]
    return lines


def assert_same_run(run: Path, reference: Path):
    table, expected = load_results(run), load_results(reference)
    assert len(table) == N_ITEMS and table["key"].is_unique
    pd.testing.assert_frame_equal(comparable(table), comparable(expected))
    assert images(run) == images(reference)  # same PNG bytes
    logged = [r["key"] for r in log_lines(run)]
    assert len(logged) == len(set(logged)) == N_ITEMS  # every item logged once: nothing repeated


def subprocess_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", FASTFACE_MODE="tiny", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    return env


# ----------------------------------------------------------------------------------- the grid
def test_item_seeds_are_stable_and_do_not_depend_on_order_or_sharding():
    # SHA-256 of (seed, identity, prompt): pinned, so a change to Python's hash() or to the
    # grid's order can never move an image's noise
    assert item_seed(0, "astronaut", "a photo of a person") == 1824630376682420279
    assert item_seed(0, "grace_hopper", "a photo of a person") == 4869380854937372202
    assert item_seed(1, "astronaut", "a photo of a person") != item_seed(0, "astronaut", "a photo of a person")

    settings = run_settings(SPEC)
    items = build_items(settings)
    assert len(items) == N_ITEMS and len({i.key for i in items}) == N_ITEMS
    assert [i.identity for i in items[:8]] == ["astronaut"] * 8  # sorted inputs
    for item in items:
        assert item.seed == item_seed(0, item.identity, item.prompt)
    # variants share the noise of their (identity, prompt); different prompts / identities do not
    by_pair = {}
    for item in items:
        by_pair.setdefault((item.identity, item.prompt), set()).add(item.seed)
    assert all(len(seeds) == 1 for seeds in by_pair.values())
    assert len({next(iter(s)) for s in by_pair.values()}) == len(by_pair)

    # the same grid given in any order
    shuffled = json.loads(json.dumps(settings))
    rng = random.Random(0)
    rng.shuffle(shuffled["identities"])
    for prompts in shuffled["prompts"].values():
        rng.shuffle(prompts)
    assert build_items(shuffled) == items
    other = run_settings(EvalSpec(identities=("astronaut", "grace_hopper"), prompt_sets=("stylistic", "realistic"),
                                  prompts_per_set=2, variants=("baseline", "fastface-am2"), size=64, mode="tiny"))
    assert {(i.key, i.seed) for i in build_items(other)} == {(i.key, i.seed) for i in items}

    # sharded over 1..4 processes, in grid order or shuffled: every item exactly once, with its seed
    scrambled = list(items)
    rng.shuffle(scrambled)
    for listing in (items, scrambled):
        for count in range(1, 5):
            parts = [shard(listing, index, count) for index in range(count)]
            assert sorted(i.key for part in parts for i in part) == sorted(i.key for i in items)
            assert all(i.seed == item_seed(0, i.identity, i.prompt) for part in parts for i in part)
    # the variants of an image stay together, so two processes get the same mix of variants
    for index in range(2):
        assert Counter(i.variant for i in shard(items, index, 2)) == {"baseline": 4, "fastface-am2": 4}


def test_reference_run_writes_table_summary_and_plots(reference_run):
    table = load_results(reference_run)
    assert len(table) == N_ITEMS and table["key"].is_unique
    assert [tuple(k.split("/")[:3]) for k in table["key"]] == \
        [(i.model, i.variant, i.identity) for i in build_items(run_settings(SPEC))]
    assert set(table["prompt_set"]) == {"realistic", "stylistic"}
    assert dict(table.groupby("variant")["unet_evaluations"].unique().map(list)) == \
        {"baseline": [4], "fastface-am2": [12]}
    assert np.isfinite(table["clip_score"].astype(float)).all()
    assert (table["seconds"] > 0).all()
    # a failure is a flag plus NaN, never a number
    for prefix in ("id_", "id_dlib_"):
        assert (table[f"{prefix}detection_failure"] == table[f"{prefix}similarity"].isna()).all()
    assert (table["face_detection_failure"] == table["face_size_ratio"].isna()).all()
    for row in table.itertuples():
        assert (reference_run / row.image).is_file()
    assert pd.read_csv(reference_run / "results.csv")["key"].tolist() == table["key"].tolist()

    summary = pd.read_csv(reference_run / "summary.csv")
    assert set(summary["metric"]) == {"id_similarity", "clip_score", "face_size_ratio",
                                      "unet_evaluations", "seconds"}
    assert len(summary) == 2 * 2 * 5  # variants x prompt sets x metrics
    assert summary.loc[summary["metric"] == "clip_score", "n"].tolist() == [4, 4, 4, 4]
    assert "| hyper | fastface-am2 | stylistic | clip_score |" in (reference_run / "summary.md").read_text()
    for metric in set(summary["metric"]):
        assert (reference_run / "plots" / f"{metric}.png").stat().st_size > 1000
    settings = json.loads((reference_run / "settings.json").read_text())["settings"]
    assert settings["prompts"]["realistic"] == sorted(load_prompts("realistic"))[:2]
    assert sorted(p.name for p in (reference_run / "identities").iterdir()) == ["astronaut.jpg", "grace_hopper.jpg"]


# ------------------------------------------------------------------------------ kill and resume
def test_run_stopped_half_way_resumes_to_identical_results(reference_run, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        run_evaluation(SPEC, out, resume=True, progress=False, stop_after=7)
    assert len(log_lines(out)) == 7
    assert not (out / "results.csv").exists()  # nothing merged: the process "died"
    # what a kill in the middle of a write leaves: a torn log line and a half-written image
    log = out / SHARDS / "process-000.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"key": "hyper/fastface-am2/astronaut/realistic/a ph')
    torn_image = out / build_items(run_settings(SPEC))[7].image
    torn_image.parent.mkdir(parents=True, exist_ok=True)
    (torn_image.parent / f".{torn_image.name}.tmp-12345").write_bytes(b"\x89PNG half")

    # the same call again (resume=True makes the command safe to repeat)
    table = run_evaluation(SPEC, out, resume=True, progress=False)
    assert len(table) == N_ITEMS
    assert_same_run(out, reference_run)
    assert not list(out.rglob(".*.tmp-*"))


def test_sigkilled_cli_run_restarted_with_the_same_command(reference_run, tmp_path):
    out = tmp_path / "run"
    argv = ["eval", *GRID, "--out", str(out), "--resume"]
    log = out / SHARDS / "process-000.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "fastface_lite.cli", *argv], cwd=REPO,
                               env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


# ------------------------------------------------------------------------------------ refusals
def test_existing_run_needs_resume_or_overwrite(reference_run, capsys):
    before = (reference_run / "results.jsonl").read_bytes()
    assert cli.main(["eval", *GRID, "--out", str(reference_run)]) == 2
    message = capsys.readouterr().err
    assert "already holds an evaluation run" in message and "--resume" in message and "--overwrite" in message
    with pytest.raises(RunFolderError, match="--resume"):
        run_evaluation(SPEC, reference_run)
    with pytest.raises(RunFolderError, match="exclude each other"):
        run_evaluation(SPEC, reference_run, resume=True, overwrite=True)
    assert (reference_run / "results.jsonl").read_bytes() == before


def test_resume_with_other_settings_is_refused(reference_run, tmp_path, capsys):
    before = (reference_run / "results.jsonl").read_bytes()
    with pytest.raises(RunFolderError, match=r"other settings:\n  seed: stored 0, now 1"):
        run_evaluation(EvalSpec(**{**SPEC.__dict__, "seed": 1}), reference_run, resume=True)
    with pytest.raises(RunFolderError, match="variants"):
        run_evaluation(EvalSpec(**{**SPEC.__dict__, "variants": ("baseline",)}), reference_run, resume=True)
    with pytest.raises(RunFolderError, match="prompts"):
        run_evaluation(EvalSpec(**{**SPEC.__dict__, "prompts_per_set": 3}), reference_run, resume=True)
    # an identity photo that changed under the same name is a different setting too
    edited = tmp_path / "astronaut.jpg"
    edited.write_bytes(face_path("astronaut").read_bytes() + b"\0")
    with pytest.raises(RunFolderError, match="identities"):
        run_evaluation(EvalSpec(**{**SPEC.__dict__, "identities": (str(edited), "grace_hopper")}),
                       reference_run, resume=True)
    assert cli.main(["eval", *GRID, "--seed", "1", "--out", str(reference_run), "--resume"]) == 2
    assert "seed: stored 0, now 1" in capsys.readouterr().err
    assert (reference_run / "results.jsonl").read_bytes() == before


def test_overwrite_only_replaces_run_folders_and_limit_is_not_a_setting(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(RunFolderError, match="not an evaluation run folder"):
        run_evaluation(SPEC, foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "keep me"

    out = tmp_path / "run"
    assert len(run_evaluation(SPEC, out, progress=False, limit=2)) == 2
    table = run_evaluation(SPEC, out, overwrite=True, progress=False, limit=1)
    assert len(table) == 1 and len(log_lines(out)) == 1 and len(images(out)) == 1
    table = run_evaluation(SPEC, out, resume=True, progress=False, limit=3)  # continues the grid
    assert table["key"].tolist() == [i.key for i in build_items(run_settings(SPEC))[:3]]
    assert len(log_lines(out)) == 3


def test_stop_after_is_not_on_the_command_line():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert "stop_after" not in help_text and "stop-after" not in help_text and "--resume" in help_text and "--limit" in help_text


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
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "-m", "fastface_lite.cli"]
    if torch.cuda.is_available():
        pytest.skip("this check runs the CPU gloo path; on a CUDA machine it would use the GPUs")
    result = subprocess.run([*launch, "eval", *GRID, "--out", str(out)], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=420)
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
    again = run_evaluation(SPEC, out, resume=True, progress=False)
    assert again["metrics_at"].notna().all() and len(log_lines(out)) == N_ITEMS


def test_scores_of_a_real_face():
    """Tiny images are noise, so check the scoring on a photo: the identity against itself."""
    photo = face_path("grace_hopper")
    scores = Scorers("tiny").score(photo, "a photo of a person", photo)
    assert scores["id_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert scores["id_detection_failure"] is False and scores["id_failed"] == ""
    assert scores["id_same_person"] == 1.0 and scores["id_distance"] == pytest.approx(0.0, abs=1e-6)
    assert {k: scores[k] for k in scores if k.startswith("id_dlib_")} == \
        {k.replace("id_", "id_dlib_", 1): v for k, v in scores.items() if k.startswith("id_") and not k.startswith("id_dlib_")}
    assert 0.0 < scores["face_size_ratio"] < 1.0 and scores["face_detection_failure"] is False
    assert -1.0 <= scores["clip_score"] <= 1.0


def test_load_results_gives_failures_as_nan(reference_run):
    table = load_results(reference_run)
    failed = table["id_similarity"].isna()
    assert failed.any(), "tiny images are noise: the face model finds no face in them"
    assert table["id_similarity"].dtype == float and table["face_size_ratio"].dtype == float
