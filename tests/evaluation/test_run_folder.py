"""The run folder (fastface_lite.evaluation.run_folder): a run needs --resume or --overwrite to be
touched again, a resume with other settings is refused, --overwrite only ever replaces a run folder."""
from __future__ import annotations

import pytest

from fastface_lite import cli
from fastface_lite.evaluation.grid import EvalSpec, RunSettings, build_items
from fastface_lite.evaluation.run_folder import RunFolderError
from fastface_lite.evaluation.runner import run_evaluation
from fastface_lite.faces.photos import face_path

from .tiny_runs import GRID, SPEC, images, log_lines


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
    assert table["key"].tolist() == [i.key for i in build_items(RunSettings.from_spec(SPEC))[:3]]
    assert len(log_lines(out)) == 3

