"""What a run writes from its records (fastface_lite.evaluation.summary): the merged table, the
summary table and markdown, the plots; failures as NaN."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fastface_lite.evaluation.grid import RunSettings, build_items
from fastface_lite.evaluation.summary import load_results
from fastface_lite.faces.photos import load_prompts

from .tiny_runs import N_ITEMS, SPEC


def test_reference_run_writes_table_summary_and_plots(reference_run):
    table = load_results(reference_run)
    assert len(table) == N_ITEMS and table["key"].is_unique
    assert [tuple(k.split("/")[:3]) for k in table["key"]] == \
        [(i.model, i.variant, i.identity) for i in build_items(RunSettings.from_spec(SPEC))]
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



def test_load_results_gives_failures_as_nan(reference_run):
    table = load_results(reference_run)
    failed = table["id_similarity"].isna()
    assert failed.any(), "tiny images are noise: the face model finds no face in them"
    assert table["id_similarity"].dtype == float and table["face_size_ratio"].dtype == float
