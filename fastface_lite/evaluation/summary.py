"""From a run's records to what people read (see :mod:`fastface_lite.evaluation.runner`): the
merged per-image table, the summary per (model, variant, prompt set) and one plot per metric.

    table = load_results("runs/hyper")     # a pandas DataFrame, one row per finished image
    finalize(RunFolder("runs/hyper"))      # write results.jsonl|csv, summary.csv|md, plots/ again

Each summary row is a mean with its 95% percentile-bootstrap interval (`metrics.aggregate`);
images without a detectable face are counted as ``failures`` and excluded from the mean.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

from fastface_lite.evaluation.grid import RunSettings, build_items
from fastface_lite.evaluation.run_folder import PLOTS, RESULTS_CSV, SUMMARY_CSV, SUMMARY_MD, RunFolder
from fastface_lite.inspect.plots import save_figure

# per-image columns summarised by `metrics.aggregate` (those present in the table)
SUMMARY_METRICS = (
    "id_similarity",
    "id_dlib_similarity",
    "clip_score",
    "clip_score_b32",
    "face_size_ratio",
    "unet_evaluations",
    "seconds",
)
# columns that depend on the machine and the moment, not on the inputs
TIMING_COLUMNS = ("seconds", "finished_at", "metrics_at")
_GROUP_BY = ("model", "variant", "prompt_set")


# Score columns (JSON stores their NaN failures as null): id_*similarity, id_*distance, ...
_SCORE_SUFFIXES = ("similarity", "distance", "same_person", "clip_score", "face_size_ratio")


def load_results(run_dir) -> pd.DataFrame:
    """The merged results table of a run folder (all items finished so far, in grid order).

    Score columns are floats with NaN for a failure (JSON stores those as null).
    """
    folder = RunFolder(run_dir)
    return _results(folder, RunSettings.stored_in(folder))


def _results(folder: RunFolder, settings: RunSettings) -> pd.DataFrame:
    records = folder.records()
    rows = [records[item.key] for item in build_items(settings) if item.key in records]
    return _failures_as_nan(pd.DataFrame(rows))


def _failures_as_nan(table: pd.DataFrame) -> pd.DataFrame:
    """Score columns come back from JSON with None for a failure; make them float with NaN, as
    the scorers produce them, so they plot and aggregate without conversion."""
    for column in table.columns:
        if column.endswith(_SCORE_SUFFIXES) and table[column].dtype == object:
            table[column] = table[column].astype(float)
    return table


def finalize(folder: RunFolder) -> pd.DataFrame:
    """Write results.jsonl/.csv, summary.csv/.md and one plot per metric from the folder's records.

    Main process only, after every process has finished. Returns the merged table.
    """
    from fastface_lite.evaluation.metrics import aggregate

    settings = RunSettings.stored_in(folder)
    table = _results(folder, settings)
    folder.write_records(table.to_dict("records"))
    folder.write_text(RESULTS_CSV, table.to_csv(index=False))
    if table.empty:
        return table
    metrics = [
        m for m in SUMMARY_METRICS if m in table.columns and not (m == "id_dlib_similarity" and settings.mode == "tiny")
    ]
    summary = aggregate(table, by=_GROUP_BY, metrics=metrics)
    # the order the user gave variants and models in, not alphabetical
    order = {"model": list(settings.models), "variant": list(settings.variants)}
    for column, values in order.items():
        summary[column] = pd.Categorical(summary[column], categories=values, ordered=True)
    summary["metric"] = pd.Categorical(summary["metric"], categories=metrics, ordered=True)
    summary = summary.sort_values([*_GROUP_BY, "metric"], kind="stable").reset_index(drop=True)
    summary[["model", "variant", "metric"]] = summary[["model", "variant", "metric"]].astype(str)
    folder.write_text(SUMMARY_CSV, summary.to_csv(index=False))
    folder.write_text(SUMMARY_MD, summary_markdown(summary, settings))
    for metric in metrics:
        save_figure(metric_figure(summary, metric, settings), folder.path / PLOTS / f"{metric}.png")
    return table


def _format(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def summary_markdown(summary: pd.DataFrame, settings: RunSettings) -> str:
    """summary.md: what the run was, how to read it, and the summary table (4 decimals, n/a)."""
    head = (
        f"# Evaluation summary\n\nmode: {settings.mode}, adapter: {settings.adapter}, "
        f"{settings.num_steps} steps, seed {settings.seed}. Mean and 95% percentile-bootstrap "
        "interval per group; `failures` = images without a detectable face (excluded from the mean).\n"
    )
    if settings.mode == "tiny":
        head += (
            "\nTiny mode: random weights, so the images are noise and faces are rarely found; "
            "the numbers exercise the pipeline, they do not measure FastFace.\n"
        )
    columns = list(summary.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in summary.itertuples(index=False):
        lines.append("| " + " | ".join(_format(v) for v in row) + " |")
    return head + "\n" + "\n".join(lines) + "\n"


def metric_figure(summary: pd.DataFrame, metric: str, settings: RunSettings) -> Figure:
    """Bars of the mean (with the bootstrap interval) per variant, one bar per prompt set, one
    panel per model; a group without any value is marked "n/a"."""
    rows = summary[summary["metric"] == metric]
    variants, models = list(settings.variants), list(settings.models)
    sets = sorted(rows["prompt_set"].unique())
    fig = Figure(figsize=(max(4.0, 0.9 * len(variants) * len(models) + 1.5), 3.4))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    width = 0.8 / max(len(sets), 1)
    for ax, model in zip(axes, models, strict=True):
        for j, prompt_set in enumerate(sets):
            sel = rows[(rows["model"] == model) & (rows["prompt_set"] == prompt_set)]
            sel = sel.set_index("variant").reindex(variants)
            x = np.arange(len(variants)) + (j - (len(sets) - 1) / 2) * width
            mean = sel["mean"].to_numpy(float)
            err = np.vstack([mean - sel["ci_low"].to_numpy(float), sel["ci_high"].to_numpy(float) - mean])
            ax.bar(x, np.nan_to_num(mean), width, yerr=np.nan_to_num(err), capsize=3, label=prompt_set)
            for xi, m in zip(x, mean, strict=True):
                if math.isnan(m):
                    ax.annotate("n/a", (xi, 0), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(model, fontsize=9)
    axes[0].set_ylabel(metric)
    axes[-1].legend(fontsize=7, title="prompts", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{metric}: mean and 95% bootstrap interval ({settings.mode} mode)", fontsize=9)
    fig.tight_layout()
    return fig
