"""What a run writes from its records (fastface_lite.evaluation.summary): the merged table, the
summary table and markdown, the plots; failures as NaN. On the reference run, and on records
written by hand (no generation) where every number is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fastface_lite.evaluation.grid import EvalSpec, RunSettings, build_items, resolve_identities
from fastface_lite.evaluation.run_folder import RunFolder
from fastface_lite.evaluation.summary import finalize, load_results, metric_figure
from fastface_lite.faces.photos import load_prompts

from .tiny_runs import EVAL_GRID, N_ITEMS


def test_reference_run_writes_table_summary_and_plots(reference_run):
    table = load_results(reference_run)
    assert len(table) == N_ITEMS and table["key"].is_unique
    assert [tuple(k.split("/")[:3]) for k in table["key"]] == [
        (i.model, i.variant, i.identity) for i in build_items(RunSettings.from_spec(EVAL_GRID))
    ]
    assert set(table["prompt_set"]) == {"realistic", "stylistic"}
    assert dict(table.groupby("variant")["unet_evaluations"].unique().map(list)) == {
        "baseline": [4],
        "fastface-am2": [12],
    }
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
    assert set(summary["metric"]) == {"id_similarity", "clip_score", "face_size_ratio", "unet_evaluations", "seconds"}
    assert len(summary) == 2 * 2 * 5  # variants x prompt sets x metrics
    assert summary.loc[summary["metric"] == "clip_score", "n"].tolist() == [4, 4, 4, 4]
    assert "| hyper | fastface-am2 | stylistic | clip_score |" in (reference_run / "summary.md").read_text()
    for metric in set(summary["metric"]):
        assert (reference_run / "plots" / f"{metric}.png").stat().st_size > 1000
    settings = json.loads((reference_run / "settings.json").read_text())["settings"]
    assert settings["prompts"]["realistic"] == sorted(load_prompts("realistic"))[:2]
    assert sorted(p.name for p in (reference_run / "identities").iterdir()) == ["astronaut.jpg", "grace_hopper.jpg"]


def test_load_results_gives_failures_as_nan(reference_run):
    table = load_results(reference_run)
    failed = table["id_similarity"].isna()
    assert failed.any(), "tiny images are noise: the face model finds no face in them"
    assert table["id_similarity"].dtype == float and table["face_size_ratio"].dtype == float


# ------------------------------------------------------------------- from hand-written records
def hand_written_run(path):
    """A run folder of 4 items (2 variants x 2 prompt sets, 1 prompt each) with 3 records written by
    hand: one identity failure, one face-size failure, one item not finished."""
    spec = EvalSpec(
        identities=("astronaut",), prompts_per_set=1, variants=("fastface-am2", "baseline"), size=64, mode="tiny"
    )
    settings = RunSettings.from_spec(spec)
    folder = RunFolder(path)
    folder.prepare("new", settings.to_json(), resolve_identities(spec.identities))
    values = {  # (variant, prompt set): id_similarity, clip_score, face_size_ratio, unet_evaluations
        ("baseline", "realistic"): (0.5, 0.2, 0.1, 4),
        ("fastface-am2", "realistic"): (float("nan"), 0.3, 0.2, 12),
        ("baseline", "stylistic"): (0.7, 0.25, float("nan"), 4),
    }
    with folder.open_log(0) as log:
        for item in reversed(build_items(settings)):  # logged in another order than the grid's
            if (item.variant, item.prompt_set) in values:
                ident, clip, size, evaluations = values[item.variant, item.prompt_set]
                log.append(
                    {
                        "key": item.key,
                        "model": item.model,
                        "variant": item.variant,
                        "identity": item.identity,
                        "prompt_set": item.prompt_set,
                        "prompt": item.prompt,
                        "seed": item.seed,
                        "image": item.image,
                        "unet_evaluations": evaluations,
                        "seconds": 1.0,
                        "id_similarity": ident,
                        "clip_score": clip,
                        "face_size_ratio": size,
                        "finished_at": 1.0,
                    }
                )
    return folder, settings


def test_finalize_writes_table_summary_markdown_and_plots(tmp_path):
    folder, settings = hand_written_run(tmp_path / "run")
    table = finalize(folder)
    # the table: finished items only, in grid order; failures NaN here and null in the JSON lines
    assert [(r.variant, r.prompt_set) for r in table.itertuples()] == [
        ("fastface-am2", "realistic"),
        ("baseline", "realistic"),
        ("baseline", "stylistic"),
    ]
    assert table["id_similarity"].isna().tolist() == [True, False, False]
    stored = [json.loads(line) for line in (folder.path / "results.jsonl").read_text().splitlines()]
    assert [r["id_similarity"] for r in stored] == [None, 0.5, 0.7]
    pd.testing.assert_frame_equal(load_results(folder.path), table)
    assert pd.read_csv(folder.path / "results.csv")["key"].tolist() == table["key"].tolist()

    summary = pd.read_csv(folder.path / "summary.csv")
    # variants in the order given (fastface-am2 first), then prompt set, then metric
    assert summary[["variant", "prompt_set"]].drop_duplicates().values.tolist() == [
        ["fastface-am2", "realistic"],
        ["baseline", "realistic"],
        ["baseline", "stylistic"],
    ]
    assert summary["metric"].unique().tolist() == [
        "id_similarity",
        "clip_score",
        "face_size_ratio",
        "unet_evaluations",
        "seconds",
    ]
    row = summary.set_index(["variant", "prompt_set", "metric"])
    assert row.loc[("baseline", "realistic", "id_similarity"), ["mean", "n", "failures"]].tolist() == [0.5, 1, 0]
    assert np.isnan(row.loc[("fastface-am2", "realistic", "id_similarity"), "mean"])
    assert row.loc[("fastface-am2", "realistic", "id_similarity"), "failures"] == 1
    assert row.loc[("baseline", "stylistic", "face_size_ratio"), "failures"] == 1

    markdown = (folder.path / "summary.md").read_text()
    assert markdown.startswith("# Evaluation summary\n\nmode: tiny, adapter: faceid-plusv2, 4 steps, seed 0.")
    assert "Tiny mode: random weights" in markdown
    assert "| hyper | fastface-am2 | realistic | id_similarity | n/a | 0 | 1 | n/a | n/a |" in markdown
    assert "| hyper | baseline | realistic | clip_score | 0.2000 | 1 | 0 | 0.2000 | 0.2000 |" in markdown

    for metric in summary["metric"].unique():
        png = (folder.path / "plots" / f"{metric}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and b"Matplotlib version" not in png  # the one saver's PNGs
    figure = metric_figure(summary, "id_similarity", settings)
    assert len(figure.axes) == len(settings.models)
    assert "n/a" in [text.get_text() for text in figure.axes[0].texts]  # the group without a value


def test_finalize_of_a_run_without_records_writes_an_empty_table(tmp_path):
    folder = RunFolder(tmp_path / "run")
    settings = RunSettings.from_spec(EVAL_GRID)
    folder.prepare("new", settings.to_json(), resolve_identities(EVAL_GRID.identities))
    assert finalize(folder).empty and load_results(folder.path).empty
    assert (folder.path / "results.jsonl").read_text() == ""
    assert not (folder.path / "summary.csv").exists()
