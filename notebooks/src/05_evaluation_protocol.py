# %% [markdown]
# # 05 · Evaluation protocol
#
# How to measure whether a FastFace variant preserves identity better than the baseline, in a way
# that another person (or you, next week) gets the same numbers.
#
# * **The protocol**: identities x prompts (realistic and stylistic sets) x variants (x models), one
#   image each, every image with its own seed; identity similarity, CLIP score and face size per
#   image; detection failures counted and excluded; bootstrap intervals per group.
# * **A small run** with `fastface_lite.evaluation.runner`: the run folder, the summary table, the plots it
#   writes, and a plot of our own from the per-image results.
# * **Resume**: running the same evaluation again redoes nothing; a changed setting is refused.
# * **Scaling up**: the full protocol on Colab, and on several GPUs with `accelerate launch`.
#
# **Mode.** Tiny mode (offline, CPU, the default here) runs the whole machinery on a 2-variant,
# 1-identity, 2-prompt grid in seconds, but its images are noise from random weights, so faces are
# not found and the numbers measure nothing. Full mode (Colab, GPU) runs the same small grid with
# real weights (real faces, insightface + dlib identity scores, CLIP ViT-L/14 and ViT-B/32), and
# an opt-in cell runs the full protocol.
#
# The protocol is the paper's (FastFace, [arXiv 2505.21144](https://arxiv.org/abs/2505.21144);
# [docs/method.md §14](../docs/method.md#14-the-evaluation-protocol)); terms such as ArcFace,
# buffalo_l or SCRFD are in the [glossary, §16](../docs/method.md#16-glossary).
#
# **Runtime.** About 30 s in tiny mode on a 2-core CPU. Full mode, the small grid (4 images): a
# minute or two after the weights are downloaded (over 10 GB on the first run). The opt-in full
# protocol (720 images): the UNet alone takes 0.6-1.0 s per image on an H200 (README's benchmark),
# so about 10-15 minutes there with decoding and scoring on top; no T4 was measured: an estimated
# 1.5-2.5 hours (8-10x the H200's, `fastface_lite.workbook.runtimes`).

# %%
import fastface_lite as ff
from fastface_lite.workbook.session import setup

wb = setup(seed=0)
print(wb.describe())

# %% [markdown]
# ## The protocol
#
# * **Grid.** Every identity photo x every prompt x every variant (x every model). Prompts come in
#   two sets, scored separately: `realistic` ("a photo of a person hiking ...") and `stylistic`
#   ("watercolor painting; a person reading in a park": a style, then the scene). A variant that
#   holds the identity only in photographs, or only by ignoring the style, shows up as a gap
#   between the two sets.
# * **One seed per image**, derived from (seed, identity, prompt) through SHA-256. An image does
#   not depend on which other images are in the run, on their order, or on how the work is split
#   between GPUs. It does not depend on the variant either: all variants start from the same
#   noise, so they are compared pair by pair.
# * **Metrics per image.** Identity similarity (insightface `buffalo_l` in full mode, plus dlib as
#   an independent second opinion; dlib in tiny mode; see notebook 04), CLIP text alignment
#   (ViT-L/14 and ViT-B/32 in full mode), face size ratio, and the UNet evaluations the variant
#   needed.
# * **Failures.** An image where no face is found is a detection failure: counted per group and
#   excluded from the mean, never scored as 0.
# * **Uncertainty.** Each group mean comes with a 95 % percentile-bootstrap interval (resample the
#   images of the group with replacement, 1000 times).
#
# The small grid of this notebook, and the items it expands to:

# %%
import os

import pandas as pd

from fastface_lite.evaluation.grid import EvalSpec, RunSettings, build_items
from fastface_lite.evaluation.runner import run_evaluation
from fastface_lite.evaluation.summary import load_results
from fastface_lite.workbook.session import repo_root

# The notebook changes its working directory here, to the repository root, so that the run folders
# below (`runs/...`) are where the README's commands put them. Every later relative path starts
# there.
os.chdir(repo_root())
print("working directory: the repository root (runs/ is relative to it)")
spec = EvalSpec(
    identities=("astronaut",),
    prompt_sets=("realistic", "stylistic"),
    prompts_per_set=1,
    variants=("baseline", "fastface-am2"),
    models=("hyper",),
    mode=wb.mode,
    size=64 if wb.tiny else wb.size,
)  # tiny: 64 px noise images are enough to run everything; full: the model's size unless FASTFACE_SIZE
items = build_items(RunSettings.from_spec(spec))
pd.DataFrame(
    [(i.variant, i.identity, i.prompt_set, i.prompt, i.seed) for i in items],
    columns=["variant", "identity", "prompt_set", "prompt", "seed"],
)

# %% [markdown]
# Four images: two prompts (the first of each set after sorting, as `prompts_per_set=1` keeps)
# times two variants. Both variants of a prompt share its seed.
#
# ## A small run
#
# `run_evaluation` generates each image, scores it as soon as it exists, and writes a **run
# folder**. `overwrite=True` deletes an earlier run in that folder first, so re-running this cell
# starts clean. From a terminal the same run is:
#
# ```bash
# fastface eval --mode tiny --identities astronaut --prompt-sets realistic stylistic --prompts-per-set 1 \
#     --variants baseline fastface-am2 --size 64 --out runs/05_protocol_tiny --overwrite
# ```

# %%
from pathlib import Path

import torch

if wb.tiny:  # the tiny UNet gains nothing from threads, and on a shared CPU they mostly wait on each other
    torch.set_num_threads(1)
run = Path(f"runs/05_protocol_{wb.mode}")
results = run_evaluation(spec, run, overwrite=True, progress=False)

# %%
for path in sorted(p for p in run.rglob("*") if p.is_file()):
    print(path.relative_to(run))

# %% [markdown]
# * `settings.json`: everything that defines the results (prompts, photo checksums, every
#   variant's full config, the weights), compared on resume;
# * `identities/`: copies of the reference photos; `images/`: one PNG per item;
# * `shards/process-NNN.jsonl`: append-only logs, one line per finished image and process;
# * `results.jsonl|csv`: the merged per-image table; `summary.csv|md`: the per-group summary;
#   `plots/`: one bar chart per metric;
# * `.fastface-run.lock`: the folder's one-writer lock, held by a command while it runs (a second
#   command on the same folder is refused, naming the first one's pid, host and command).
#
# The per-image table (the timing columns `seconds` and `finished_at` left out: they change from
# run to run):

# %%
columns = [
    "variant",
    "prompt_set",
    "prompt",
    "unet_evaluations",
    "id_similarity",
    "id_detection_failure",
    "clip_score",
    "face_size_ratio",
]
results[columns]

# %% [markdown]
# In tiny mode every `id_similarity` is empty and `id_detection_failure` is True: the pictures are
# noise, so dlib finds no face, and each image is a counted failure rather than a score. The
# `unet_evaluations` column is real in both modes: the baseline evaluates one guidance branch per
# step (4 for 4 steps); FastFace-AM2 needs all three at every step (12), because its adaptive
# softmask normalises across the three branches (see the README's benchmark).
#
# The generated images, from the `image` column:

# %%
import matplotlib.pyplot as plt
from PIL import Image

fig, axes = plt.subplots(1, len(results), figsize=(2.2 * len(results), 2.6))
for ax, row in zip(axes, results.itertuples()):
    ax.imshow(Image.open(run / row.image))
    ax.set_title(f"{row.variant}\n{row.prompt_set}", fontsize=8)
    ax.axis("off")
wb.save(fig, "05_images")
plt.show()

# %% [markdown]
# ## The summary
#
# One row per (model, variant, prompt set, metric): the mean over the images that have a value,
# `n` images used, `failures` excluded, and the 95 % bootstrap interval. (The run also summarises
# `seconds`; we leave it out here because it is a wall-clock time.)

# %%
summary = pd.read_csv(run / "summary.csv")
summary[summary["metric"] != "seconds"].reset_index(drop=True)

# %% [markdown]
# With one image per group the bootstrap interval collapses onto the mean: resampling one value
# always gives that value. The interval narrows as the group grows, roughly as 1/sqrt(n), which is
# why the protocol uses many prompts. The same `metrics.aggregate` the runner uses, on made-up
# identity scores (mean 0.6, spread 0.1) for groups of 10, 40 and 160 images (four times the
# images, about half the width; the failures are counted, not averaged):

# %%
import numpy as np

from fastface_lite.evaluation.metrics import aggregate

rng = np.random.default_rng(0)
sizes = [10, 40, 160]
made_up = pd.DataFrame({"images": np.repeat(sizes, sizes), "id_similarity": rng.normal(0.6, 0.1, sum(sizes))})
made_up.loc[[20, 100], "id_similarity"] = np.nan  # two detection failures
ci = aggregate(made_up, by=["images"], metrics=["id_similarity"])
ci.assign(width=ci["ci_high"] - ci["ci_low"])

# %% [markdown]
# ## Plots
#
# The run writes one chart per metric to `plots/`: the mean per variant with its bootstrap
# interval, one bar per prompt set. A group with no value at all (every image a failure) is marked
# "n/a". Here is the CLIP score chart (tiny mode: a random tiny CLIP, so the values mean nothing):

# %%
from IPython.display import Image as PNG

PNG(filename=str(run / "plots" / "clip_score.png"))

# %% [markdown]
# Means hide the pairing. Because both variants of a prompt start from the same noise, the
# interesting quantity is the *change* per prompt. A plot of our own from `load_results`: each line
# joins the two variants of one (identity, prompt).

# %%
table = load_results(run)
metrics = ["id_similarity", "clip_score", "unet_evaluations"]
fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3))
for ax, metric in zip(axes, metrics):
    wide = table.pivot_table(
        index=["identity", "prompt_set", "prompt"], columns="variant", values=metric, aggfunc="first", dropna=False
    )[list(spec.variants)].astype(float)
    for (_identity, prompt_set, _prompt), row in wide.iterrows():
        shift = -0.03 if prompt_set == "realistic" else 0.03  # so equal values do not hide each other
        ax.plot(
            np.arange(len(row)) + shift,
            row.to_numpy(),
            marker="o",
            color="tab:blue" if prompt_set == "realistic" else "tab:orange",
        )
    if wide.isna().all().all():
        ax.text(
            0.5,
            0.5,
            "no value:\nevery image a detection failure",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
        )
        ax.set_yticks([])
    ax.set_xticks(range(len(spec.variants)), spec.variants, fontsize=8)
    ax.set_xlim(-0.3, len(spec.variants) - 0.7)
    ax.set_title(metric, fontsize=9)
axes[0].plot([], [], color="tab:blue", label="realistic")
axes[0].plot([], [], color="tab:orange", label="stylistic")
axes[0].legend(fontsize=7, title="prompt set", title_fontsize=7)
fig.suptitle(f"per prompt, variant against variant ({wb.mode} mode)", fontsize=9)
fig.tight_layout()
wb.save(fig, "05_paired")
plt.show()

# %% [markdown]
# ## Resume
#
# Long runs get interrupted (a Colab disconnect, a killed job). Every finished image is appended to
# the log at once, so the same call with `resume=True` skips what is done: here, everything.

# %%
log = run / "shards" / "process-000.jsonl"
before = {p: p.read_bytes() for p in run.rglob("*.png")}
lines = len(log.read_text().splitlines())
again = run_evaluation(spec, run, resume=True, progress=False)
print("log lines before / after:", lines, "/", len(log.read_text().splitlines()))
print("every image file unchanged:", before == {p: p.read_bytes() for p in run.rglob("*.png")})
print(
    "same results:",
    again.drop(columns=["seconds", "finished_at"]).equals(results.drop(columns=["seconds", "finished_at"])),
)

# %% [markdown]
# `resume=True` on a folder with no run starts one, so a command with `--resume` is safe to repeat
# after any interruption. Resuming with *different* settings is refused (mixing results of two
# settings in one table would be silently wrong), and so is writing into a run without either flag:

# %%
from fastface_lite.evaluation.run_folder import RunFolderError

for label, call in {
    "another seed": lambda: run_evaluation(EvalSpec(**{**spec.__dict__, "seed": 1}), run, resume=True, progress=False),
    "neither flag": lambda: run_evaluation(spec, run, progress=False),
}.items():
    try:
        call()
    except RunFolderError as err:
        print(f"{label}: {err}\n")

# %% [markdown]
# ## The full protocol on Colab
#
# In full mode (a Colab GPU, see the set-up cell at the top), the cell below runs the protocol:
# both shipped identities (add your own photo by path), all prompts of both sets, all six
# variants, Hyper-SD 4-step. That is 2 x 60 x 6 = 720 images at 1024 px; an estimated 1.5-2.5 hours on
# a T4 (not measured) and 10-15 minutes on an H200-class GPU. It is off by default: set
# `FULL_PROTOCOL = True` in the cell below to run it. With `resume=True` it is safe to run again
# after a disconnect; to survive the end of the Colab session, mount Google Drive first and set
# `FULL_RUN_FOLDER` in the cell below to a folder on it:
#
# ```python
# from google.colab import drive
# drive.mount("/content/drive")
# # then, in the next cell: FULL_RUN_FOLDER = "/content/drive/MyDrive/ff-runs/hyper"
# ```
#
# The same from a terminal (`!` in a Colab cell), with your own photo:
#
# ```bash
# !fastface eval --mode full --models hyper --identities me.jpg --prompt-sets realistic stylistic \
#     --out /content/drive/MyDrive/ff-runs/hyper --resume
# !fastface metrics /content/drive/MyDrive/ff-runs/hyper   # score the saved images again
# ```

# %%
from IPython.display import display

FULL_PROTOCOL = False  # True: run the whole protocol (full mode only)
FULL_RUN_FOLDER = "runs/05_full_hyper"  # on Colab: a Drive folder, e.g. "/content/drive/MyDrive/ff-runs/hyper"
full_run = FULL_RUN_FOLDER

if wb.mode == "full" and FULL_PROTOCOL:
    full_spec = EvalSpec(
        identities=("astronaut", "grace_hopper"),
        prompt_sets=("realistic", "stylistic"),
        variants=ff.VARIANTS,
        models=("hyper",),
        mode="full",
    )
    full_table = run_evaluation(full_spec, full_run, resume=True)
    full_summary = pd.read_csv(Path(full_run) / "summary.csv")
    display(full_summary[full_summary["metric"].isin(["id_similarity", "id_dlib_similarity", "clip_score"])])

# %% [markdown]
# What to look for in a full run: FastFace variants should raise `id_similarity` over the
# baseline **and** `id_dlib_similarity` with it (the independent face model agreeing), without
# losing much `clip_score`, especially on the stylistic set; check `failures` and
# `face_size_ratio` per variant before trusting a difference in identity (notebook 04).
#
# ## Several GPUs: `accelerate launch`
#
# The runner is written for Hugging Face accelerate: each process takes its share of the items
# still to do (the variants of one image stay together, so every GPU gets the same mix of cheap
# and expensive variants), appends to its own log, and the main process merges the logs at the
# end. The per-item seeds make the results the same as a single-process run. One command per run
# folder; on several machines the folder must be on a shared filesystem.
#
# ```bash
# accelerate launch --multi_gpu --num_processes 4 --num_machines 1 --mixed_precision no --dynamo_backend no \
#     -m fastface_lite.cli eval --mode full --models hyper lightning --variants baseline fastface-am1 fastface-am2 \
#     --out runs/hl --resume
# ```
#
# `--num_processes` is the number of GPUs. Adding `--resume` makes the same command continue after
# a crash, with any number of processes. (On a machine without CUDA, `--multi_gpu` starts CPU
# processes through torchrun, which is how the tests check the split; accelerate's `--cpu` flag
# starts a single process unless run under MPI.)
#
# ## Exercises
#
# **1.** In the small run, how many UNet evaluations did each FastFace-AM2 image need (the
# `unet_evaluations` column)?

# %%
my_am2_evaluations = None  # your prediction: a whole number

# %%
from fastface_lite.workbook.exercises import check

check(
    my_am2_evaluations,
    int(results.loc[results["variant"] == "fastface-am2", "unet_evaluations"].iloc[0]),
    "UNet evaluations per FastFace-AM2 image",
    why="its adaptive softmask normalises across the three branches, so all three run at each of 4 steps.",
)

# %% [markdown]
# **2.** The bootstrap table above gave the interval width for 160 images. Predict the width for
# 640 images of the same made-up scores (a width in similarity units, i.e. cosine).

# %%
my_width_640 = None  # your prediction, a number

# %%
more = pd.DataFrame({"images": 640, "id_similarity": np.random.default_rng(1).normal(0.6, 0.1, 640)})
wide_ci = aggregate(more, by=["images"], metrics=["id_similarity"]).iloc[0]
check(
    my_width_640,
    round(float(wide_ci["ci_high"] - wide_ci["ci_low"]), 4),
    "95 % interval width at 640 images",
    why="four times the images, about half the width (1/sqrt(n)); within 25 % counts as right.",
    rel_tol=0.25,
)

# %% [markdown]
# ## Real studies: the command line
#
# This notebook runs the machinery on a toy grid. For a study whose numbers you will report, use
# the `fastface` command (installed with the package; `fastface --help`, and the README's
# commands): `fastface eval` writes a run folder with the same settings check, seeds, logs,
# summary and plots as above, resumes after any interruption with `--resume`, and runs on several
# GPUs under `accelerate launch`; `fastface metrics RUN` rescores a finished run. Keep one run
# folder per (models, variants, prompt sets) setting, and report the bootstrap intervals and the
# failure counts with every mean.
#
# ## What to try next
#
# * Add your own photo as an identity (`identities=("astronaut", "me.jpg")`) and a third variant
#   to the small run, in full mode.
# * Change `prompts_per_set` to 5 and watch the bootstrap intervals of the summary open up.
# * Compare `id_similarity` with `id_dlib_similarity` per variant in a full run: do the two face
#   models agree on the ranking? (Notebook 04 explains why a second face model.)
