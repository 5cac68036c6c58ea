# %% [markdown]
# # 03 · Guidance schedules
#
# Distilled SDXL models (Hyper-SD, Lightning, LCM, Turbo) are trained to run without
# classifier-free guidance, so an identity adapter on them has no guidance to strengthen the
# identity. FastFace brings guidance back in a form these models tolerate: **decoupled CFG (DCG)**,
# with its own weight per step. This notebook teaches:
#
# * the three branches of DCG and how the three DCG types combine them;
# * **DCG type 3 with rescale written out by hand**, checked against the package;
# * the two guidance terms, and their size (Frobenius norm) at each step of a real run;
# * renorm and rescale, and what each costs in UNet evaluations;
# * the schedule shapes a weight can follow over the timesteps, with their formulas;
# * an **interactive sweep**: per-step `a` and `b` sliders, schedule shape, rescale φ, DCG type
#   and preset buttons; beside the guided images it shows the identity photo, the baseline
#   (FastFace off, same seeds), each image's identity score and what each move cost.
#
# Why guidance is needed at all, and the diagram of the three-branch batch: notebook 00. Letters
# follow [docs/method.md §2](../docs/method.md#2-notation-one-letter-per-meaning) (one letter per
# meaning); terms are defined in the [glossary, §16](../docs/method.md#16-glossary).
#
# **Mode.** Tiny (default on a CPU): a random-weight SDXL twin, so the images are noise and the
# norms are those of random networks, but every number of evaluations, every weight and every
# formula is the real one. Full (a GPU, e.g. Colab): the same cells on the real Hyper-SD 4-step
# model with FaceID Plus v2. There the grid shows the identity strengthen as `a` (the weight of the
# identity term, below) grows, and the prompt's content (the park, the book) strengthen with `b`;
# too much of either over-saturates colours, which the rescale φ holds back.
#
# **Runtime.** About 30 s in tiny mode on a 2-core CPU. Full mode: the first run downloads the
# weights (over 10 GB, several minutes on Colab); the sweep section prints what one move of the
# sweep costs on an H200 (measured) and on a T4 (an estimate, stated as one), from the numbers in
# `bench/results/`.

# %%
from fastface_lite.workbook.session import setup

wb = setup(seed=0)  # first: it quietens the libraries before they are imported
print(wb.describe())

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import fastface_lite as ff
from fastface_lite.method import dcg as guidance
from fastface_lite.method.branches import planned_evaluations
from fastface_lite.method.schedules import TIMESTEP_SHAPES, WeightSchedule
from fastface_lite.sdxl.loading import model_timesteps
from fastface_lite.workbook.widgets import SweepExplorer, schedule_and_norms, score_label

pipe = wb.pipeline(model="hyper")
inputs, photo = wb.identity_inputs(pipe, "astronaut")  # dlib in tiny mode, insightface in full
PROMPT = "a photo of a person reading in a park"

# %% [markdown]
# ## The three branches
#
# Classic CFG evaluates the UNet twice (with and without the prompt). DCG evaluates it on up to
# **three** branches that differ in which conditions they carry, and mixes them with two weights:
# `a` scales the first guidance term, `b` the second. FastFace's own choice is **type 3**:
#
# $$\epsilon = \epsilon_u + a\,(\epsilon_{i} - \epsilon_u) + b\,(\epsilon_{ti} - \epsilon_{i})$$
#
# term 1 ($\epsilon_i - \epsilon_u$, weighted by **a**) pulls toward the identity, term 2
# ($\epsilon_{ti} - \epsilon_i$, weighted by **b**) adds what the text brings on top of the identity.
# With `a = b = 1` the formula collapses to $\epsilon_{ti}$ alone: one branch, no guidance, which is
# the baseline. (Here ε is the noise prediction written e in docs/method.md; subscripts u, t, i, ti:
# unconditional, text, ID, text + ID.)

# %%
rows = []
for dcg_type in (1, 2, 3):
    for index, (name, (has_text, has_id)) in enumerate(
        zip(guidance.BRANCH_NAMES[dcg_type], guidance.BRANCH_CONDITIONS[dcg_type])
    ):
        rows.append({"DCG type": dcg_type, "branch": index, "name": name, "text": has_text, "ID": has_id})
pd.DataFrame(rows).pivot(index="DCG type", columns="branch", values="name")

# %% [markdown]
# Every type is linear in the branches, $\epsilon = \lambda_0\epsilon_0 + \lambda_1\epsilon_1 + \lambda_2\epsilon_2$
# (for type 3, $\lambda = (1 - a,\ a - b,\ b)$). A branch whose coefficient is zero need not be
# evaluated, which is where the savings come from. The FastFace presets use per-step weights
# `a = [1, 1.5, 1.5, 1]`, `b = [1, 3, 3, 1]` (columns λ0-λ2 below; the timestep t runs from 999 at
# the first step down to 249 at the last):

# %%
cfg = ff.FastFaceConfig.preset("fastface-am1")
timesteps = model_timesteps("hyper", 4)
table = []
for step, t in enumerate(timesteps):
    a, b = guidance.weights_at(step, t, cfg.guidance)
    c = guidance.coefficients(a, b, cfg.guidance.dcg_type)
    table.append(
        {
            "step": step,
            "timestep": t,
            "a": a,
            "b": b,
            "λ0 (uncond)": c[0],
            "λ1 (id)": c[1],
            "λ2 (text+id)": c[2],
            "branches read": guidance.needed_branches(step, t, cfg.guidance),
        }
    )
pd.DataFrame(table).set_index("step")

# %% [markdown]
# At steps 0 and 3 `a = b = 1`: only $\epsilon_{ti}$ has a nonzero coefficient, but the preset's
# rescale (φ = 0.75, below) also reads the ID branch, so two branches run. Steps 1 and 2 need all
# three: 2 + 3 + 3 + 2 = 10 UNet evaluations per image instead of 12.
#
# ## DCG type 3 with rescale, by hand
#
# The whole guidance step is a few lines. After combining, the **rescale** (the idea of CFG
# rescale, Lin et al. 2023, [arXiv 2305.08891](https://arxiv.org/abs/2305.08891)) compares the
# spread of the result with the spread of the two conditioned branches, per image over (C, H, W)
# with the unbiased standard deviation, and moves the result part of the way (φ) to match:
#
# $$e = e_u + a(e_i - e_u) + b(e_{ti} - e_i),\quad f = \frac{\mathrm{std}(e_i) + \mathrm{std}(e_{ti})}{2\,\mathrm{std}(e)},\quad e \leftarrow e\,(\varphi f + 1 - \varphi)$$
#
# Below, the same three random branch tensors (2 images, the tiny model's latent shape) go through
# the hand-written lines and through the package's `dcg.guide` at step 1 of the preset
# (a = 1.5, b = 3, φ = 0.75). Both are float32 but sum in a different order, so they are compared
# with a tolerance of 1e-5 (relative) and 1e-6 (absolute), not bit for bit.

# %%
import torch

generator = torch.Generator().manual_seed(0)
e_u, e_i, e_ti = torch.randn(3, 2, 4, 32, 32, generator=generator)  # branches, images, C, H, W
step, t = 1, timesteps[1]
a, b = guidance.weights_at(step, t, cfg.guidance)
phi = cfg.guidance.rescale

e = e_u + a * (e_i - e_u) + b * (e_ti - e_i)  # type 3
dims = (1, 2, 3)  # per image: over channels, height, width
f = (e_i.std(dim=dims, keepdim=True) + e_ti.std(dim=dims, keepdim=True)) / (2 * e.std(dim=dims, keepdim=True))
by_hand = e * (phi * f + (1 - phi))

package = guidance.guide(torch.cat([e_u, e_i, e_ti]), step, t, cfg.guidance)
torch.testing.assert_close(by_hand, package, rtol=1e-5, atol=1e-6)
print(f"a = {a}, b = {b}, φ = {phi}: rescale factor f per image {f.flatten().numpy()} -> hand-written = package")

# %% [markdown]
# ## The guidance terms, step by step
#
# `record_norms=True` keeps the Frobenius norm (the square root of the sum of squares of every entry)
# of each branch's noise prediction and of both **unweighted** terms, e_i − e_u and e_ti − e_i, at
# each step: whole tensors of shape (1, 4, 32, 32) in tiny mode, (1, 4, 128, 128) in full mode, so
# the numbers have no unit and grow with the latent's size (a unit-variance tensor of 4096 entries
# has norm 64). Recording evaluates all three branches. In a distilled model the first step carries
# most of the change, and term 2 is smaller than term 1: how much smaller is what the schedules tune.
# In tiny mode the values are those of a random UNet; in full mode the same table shows the real
# ratio of the text term to the identity term, which is what `b` has to compensate.

# %%
recording = cfg.replace(guidance=replace(cfg.guidance, record_norms=True))
out = pipe(prompt=PROMPT, fastface=recording, generator=wb.generator(), **inputs.call_kwargs())
norms = pd.DataFrame(out.guidance_norms).rename_axis("step").round(3)
norms

# %%
fig, ax = plt.subplots(figsize=(4.5, 2.8))
for column, marker in (("term1", "o"), ("term2", "s")):
    ax.plot(norms.index, norms[column], marker=marker, label=column)
ax.set(
    xlabel="step (sampling order)",
    ylabel="Frobenius norm of the term",
    xticks=norms.index,
    title="unweighted DCG terms per step (fastface-am1)",
)
ax.legend()
path = wb.save(fig, "03_term_norms")

# %% [markdown]
# ## Renorm and rescale
#
# * **renorm** scales term 2 to the norm of term 1 before weighting it, so `b` means "as strong
#   as term 1 times b" whatever the step. It reads all three branches at every step.
# * **rescale** (φ) pulls the standard deviation of the guided prediction back toward the mean of
#   those of $\epsilon_i$ and $\epsilon_{ti}$ (the cell by hand above), the fix for
#   over-saturation at high weights known from CFG; it reads branches 1 and 2. The FastFace presets
#   use φ = 0.75.
#
# Each feature has a price in UNet evaluations per 4-step image; the pipeline only runs what the
# config reads:

# %%
base = ff.FastFaceConfig.preset("fastface-am1")
g = base.guidance
variants = {
    "a, b per step, rescale 0.75 (preset)": g,
    "same, no rescale": replace(g, rescale=None),
    "same, renorm": replace(g, renorm=True),
    "a = b = 1 (no guidance)": ff.GuidanceConfig(dcg_type=3),
}
pd.Series(
    {name: planned_evaluations(base.replace(guidance=v), timesteps) for name, v in variants.items()},
    name="UNet evaluations / image",
).to_frame()

# %% [markdown]
# ## Schedule shapes
#
# Instead of one value per step, a weight can follow a shape of the timestep t (T = 1000), defined
# for any number of steps. Below: every shape with base weight g = 1 (floor m = 0.5, bend exponent
# γ = 2 where a shape takes them; in code `weight=`, `c=` and `s=`), and the four timesteps the
# Hyper-SD 4-step model visits. The formula of every shape is in the table of
# [docs/method.md §5](../docs/method.md#5-guidance-schedules-a-and-b-over-the-steps); for example
# `pcs` ("power cosine") is 0.5 g (1 − cos(π ((T − t)/T)^γ)), `capshape` is g (1 − t/T) for
# t > T/2 and g t/T below, and `ccshape` is `capshape` floored at m. The x axis runs from t = 999 to
# 0, **in sampling order**: the first step is on the left.

# %%
t_axis = np.linspace(0, 999, 200)
fig, axes = plt.subplots(3, 5, figsize=(11, 6), sharex=True, sharey=True)
for ax, name in zip(axes.flat, TIMESTEP_SHAPES):
    schedule = WeightSchedule(name, weight=1.0, c=0.5, s=2.0)
    ax.plot(t_axis, [schedule.at(0, t) for t in t_axis])
    ax.plot(timesteps, [schedule.at(0, t) for t in timesteps], "o", color="C3")
    ax.set_title(name, fontsize=10)
axes[0, 0].invert_xaxis()  # shared x: sampling runs from t = 999 (left) to t = 0 (right)
for index, ax in enumerate(axes.flat):
    if index >= len(TIMESTEP_SHAPES):
        ax.axis("off")
    elif index + axes.shape[1] >= len(TIMESTEP_SHAPES):  # lowest panel of its column: label the axis
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("timestep t (sampling →)")
for ax in axes[:, 0]:
    ax.set_ylabel("weight (g = 1)")
fig.tight_layout()
path = wb.save(fig, "03_schedule_shapes")

# %%
pd.DataFrame(
    {
        name: [WeightSchedule(name, weight=1.0, c=0.5, s=2.0).at(i, t) for i, t in enumerate(timesteps)]
        for name in TIMESTEP_SHAPES
    },
    index=pd.Index(timesteps, name="timestep"),
).T.round(3)

# %% [markdown]
# A per-step list only fits the step count it was written for; the pipeline refuses a mismatch
# with a message that says what to do:

# %%
try:
    ff.FastFaceConfig.preset("fastface-am1", num_steps=6)
except ff.ConfigError as error:
    print(error)

# %% [markdown]
# ## Interactive sweep
#
# Each move runs the pipeline again for every seed. The grid shows, per seed, the **baseline**
# (FastFace off: the `baseline` variant, computed once and reused until the prompt or seeds
# change) above the **guided** image, with the **identity photo** beside them; under each image
# its identity score (cosine similarity of face embeddings to the photo, 1 = the same face,
# notebook 04) or "no face" when the face analyzer finds none, which is every image in tiny mode:
# random weights paint no faces. In full mode the guided row should score above the baseline;
# that gap is what FastFace is for. The summary states the UNet evaluations per image the config
# needs (the sweep records norms, so its first seed runs all three branches) and what the last
# move cost: UNet evaluations of every image it ran, and the seconds it took.
#
# **preset** sets every control from a variant (its attention settings stay for the whole sweep);
# **schedule** switches from per-step sliders (`custom`) to a timestep shape driven by the `a`/`b`
# base weights, and the per-step sliders then show exactly the weights the shape gives. In tiny
# mode and on GPUs as fast as an A100 the sweep regenerates when you release a slider; on slower
# GPUs (a T4) it waits for **Generate**. What a move costs in full mode:

# %%
from fastface_lite.workbook.runtimes import sweep_runtime_note

print(sweep_runtime_note(seeds=2))

# %%
explorer = SweepExplorer(pipe, inputs, PROMPT, model="hyper", seeds=(0, 1), preset="fastface-am1", photo=photo)
explorer

# %% [markdown]
# The explorer is an ordinary object: what the sliders do, code can do too, and its result holds
# the numbers. `explorer.current()` is the last move's result, or, where the explorer waits for
# **Generate**, the run that pressing it makes.

# %%
explorer.b_steps[1].value = 5.0
explorer.b_steps[2].value = 5.0
result = explorer.current()
print("a, b per step:", [(round(a, 2), round(b, 2)) for a, b in result.weights])
print("UNet evaluations per image:", result.planned)
print("unweighted term 2 norm per step:", [round(n["term2"], 3) for n in result.norms])
print("weighted, b × norm:", [round(b * n["term2"], 3) for (_, b), n in zip(result.weights, result.norms)])
print("identity score, guided:", [score_label(s) for s in result.identity])
print("identity score, baseline:", [score_label(s) for s in result.baseline_identity])
print("last move: UNet evaluations", result.move_evaluations, "| baseline reused:", result.baseline_reused)

# %% [markdown]
# The unweighted norms did not move, and that is not a broken slider: `b` multiplies term 2 *after*
# it is measured, so the step where b changed cannot show it. What b changes is the weighted term
# (second line: 5/3 of the preset's at steps 1 and 2) and, through it, the latent that later steps
# start from. Steps 2 and 3 do see a different latent, but the tiny random UNet barely responds to
# its input, so their norms agree to 3 decimals. In full mode the later norms and the images change
# visibly; the sweep's grid is where to look.
#
# The last move ran 22 UNet evaluations: 12 for the first seed (recording norms needs every
# branch) and 10 for the second; the baseline images (4 evaluations per seed) were made at the
# first move and reused since. Every image reads "no face" here (tiny mode); in full mode the
# guided scores against the baseline's are the sweep's answer to "did the identity come back?".

# %%
explorer.shape.value = "pcs"
explorer.power.value = 2.0
result = explorer.current()
print("pcs schedule, a and b per step:", [(round(a, 3), round(b, 3)) for a, b in result.weights])
print("UNet evaluations per image:", result.planned)

# %% [markdown]
# `pcs` is 0 at t = 999, so the first step has a = b = 0: λ = (1, 0, 0), a **purely
# unconditional** first step (neither the prompt nor the face shapes it). Why then 12 evaluations?
# The rescale (φ = 0.75) reads branches 1 and 2 at every step, and at the later steps a and b are
# small but not 0, so λ0 = 1 − a ≠ 0 keeps e_u: three branches at each of the four steps. A schedule
# that is 0 at the first step is the trap of
# [docs/method.md §5](../docs/method.md#5-guidance-schedules-a-and-b-over-the-steps): use a clamped
# shape (floor m) to keep the conditions in from the start.

# %%
explorer.apply_preset("fastface-am1")  # back to the preset (the sliders above are live again)
result = explorer.current()
fig = schedule_and_norms(result.weights, result.norms)
path = wb.save(fig, "03_sweep")
print("saved", path.relative_to(wb.figures.parent))
fig

# %% [markdown]
# ## Exercises
#
# **1.** Plain CFG with weight ω = 5 is DCG type 3 with a = b = 5. How many UNet evaluations per
# 4-step image does that need, without rescale? (Work out λ first.)

# %%
my_cfg_evaluations = None  # your prediction: a whole number

# %%
from fastface_lite.workbook.exercises import check

plain_cfg = ff.GuidanceConfig(dcg_type=3, a=WeightSchedule.constant(5.0), b=WeightSchedule.constant(5.0))
check(
    my_cfg_evaluations,
    planned_evaluations(base.replace(guidance=plain_cfg), timesteps),
    "UNet evaluations of plain CFG (a = b = 5) over 4 steps",
    why="λ = (1 − a, a − b, b) = (−4, 0, 5): e_u and e_ti at each step, 2 × 4.",
)

# %% [markdown]
# **2.** With the `linear` shape and base weight g = 2, what is `a` at the second step of the
# Hyper-SD 4-step model (t = 749)? The formula is g (1 − t/T) with T = 1000.

# %%
my_linear_a = None  # your prediction, to 3 decimals

# %%
check(
    my_linear_a,
    round(WeightSchedule("linear", weight=2.0).at(1, timesteps[1]), 3),
    "a at t = 749 under linear, g = 2",
    why="2 × (1 − 749/1000) = 0.502.",
    abs_tol=5e-4,
)

# %% [markdown]
# ## What to try next
#
# * In the sweep, pick **preset → dcg** and raise `b` at step 1 only: in full mode, watch the
#   prompt's content grow and the colours saturate; then set **rescale φ** to 0 and 1 and compare.
# * Switch the schedule to `clamped_pcs` with floor m = 0.5: the first step is no longer
#   unconditional. Compare the evaluation count with `pcs`.
# * Change the DCG type to 1 or 2 (notebook 00's diagram, `diagrams.branch_batch(a, b, dcg_type)`,
#   shows which branches each reads).
#
# **Next:** `04_identity_metrics` measures whether the identity actually survives: face models,
# same vs different people, and how the score fails.
