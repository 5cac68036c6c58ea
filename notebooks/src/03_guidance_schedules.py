# %% [markdown]
# # 03 · Guidance schedules
#
# Distilled SDXL models (Hyper-SD, Lightning, LCM, Turbo) are trained to run without
# classifier-free guidance, so an identity adapter on them has no guidance to strengthen the
# identity. FastFace brings guidance back in a form these models tolerate: **decoupled CFG (DCG)**,
# with its own weight per step. This notebook teaches:
#
# * the three branches of DCG and how the three DCG types combine them;
# * the two guidance terms, and their size (Frobenius norm) at each step of a real run;
# * renorm and rescale, and what each costs in UNet evaluations;
# * the schedule shapes a weight can follow over the timesteps;
# * an **interactive sweep**: per-step `a` and `b` sliders, schedule shape, rescale phi, DCG type
#   and preset buttons, regenerating a small grid and the norm plot.
#
# **Mode.** Tiny (default on a CPU): a random-weight SDXL twin, so the images are noise and the
# norms are those of random networks, but every number of evaluations, every weight and every
# formula is the real one. Full (a GPU, e.g. Colab): the same cells on the real Hyper-SD 4-step
# model with FaceID Plus v2; the grid then shows how the identity strengthens with `b`.

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
from fastface_lite.workbook.widgets import SweepExplorer, schedule_and_norms

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
# term 1 ($\epsilon_i - \epsilon_u$) pulls toward the identity, term 2 ($\epsilon_{ti} - \epsilon_i$)
# adds what the text brings on top of the identity. With `a = b = 1` the formula collapses to
# $\epsilon_{ti}$ alone: one branch, no guidance, which is the baseline.

# %%
rows = []
for dcg_type in (1, 2, 3):
    for index, (name, (has_text, has_id)) in enumerate(
        zip(guidance.BRANCH_NAMES[dcg_type], guidance.BRANCH_CONDITIONS[dcg_type])
    ):
        rows.append({"DCG type": dcg_type, "branch": index, "name": name, "text": has_text, "ID": has_id})
pd.DataFrame(rows).pivot(index="DCG type", columns="branch", values="name")

# %% [markdown]
# Every type is linear in the branches, $\epsilon = c_0\epsilon_0 + c_1\epsilon_1 + c_2\epsilon_2$.
# A branch whose coefficient is zero need not be evaluated, which is where the savings come from.
# The FastFace presets use per-step weights `a = [1, 1.5, 1.5, 1]`, `b = [1, 3, 3, 1]`:

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
            "c0 (uncond)": c[0],
            "c1 (id)": c[1],
            "c2 (text+id)": c[2],
            "branches read": guidance.needed_branches(step, t, cfg.guidance),
        }
    )
pd.DataFrame(table).set_index("step")

# %% [markdown]
# At steps 0 and 3 `a = b = 1`: only $\epsilon_{ti}$ has a nonzero coefficient, but the preset's
# rescale (phi = 0.75, below) also reads the ID branch, so two branches run. Steps 1 and 2 need all
# three: 2 + 3 + 3 + 2 = 10 UNet evaluations per image instead of 12.

# %% [markdown]
# ## The guidance terms, step by step
#
# `record_norms=True` keeps the Frobenius norm of every branch and of both terms at each step
# (it evaluates all three branches to do so). In a distilled model the first step carries most of
# the change, and term 2 is smaller than term 1: how much smaller is what the schedules tune.

# %%
recording = cfg.replace(guidance=replace(cfg.guidance, record_norms=True))
out = pipe(prompt=PROMPT, fastface=recording, generator=wb.generator(), **inputs.call_kwargs())
norms = pd.DataFrame(out.guidance_norms).rename_axis("step").round(3)
norms

# %%
fig, ax = plt.subplots(figsize=(4.5, 2.8))
for column, marker in (("term1", "o"), ("term2", "s")):
    ax.plot(norms.index, norms[column], marker=marker, label=column)
ax.set(xlabel="step", ylabel="Frobenius norm", xticks=norms.index, title="DCG terms per step (fastface-am1)")
ax.legend()
path = wb.save(fig, "03_term_norms")

# %% [markdown]
# ## Renorm and rescale
#
# * **renorm** scales term 2 to the norm of term 1 before weighting it, so `b` means "as strong
#   as term 1 times b" whatever the step. It reads all three branches at every step.
# * **rescale** (phi) pulls the standard deviation of the guided prediction back toward that of
#   $\epsilon_{ti}$, the fix for over-saturation at high weights known from CFG; it reads branches 1
#   and 2. The FastFace presets use phi = 0.75.
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
# for any number of steps. Below: every shape with base weight w = 1 (floor c = 0.5, power s = 2
# where a shape takes them), and the four timesteps the Hyper-SD 4-step model visits.

# %%
t_axis = np.linspace(0, 999, 200)
fig, axes = plt.subplots(3, 5, figsize=(11, 6), sharex=True, sharey=True)
for ax, name in zip(axes.flat, TIMESTEP_SHAPES):
    schedule = WeightSchedule(name, weight=1.0, c=0.5, s=2.0)
    ax.plot(t_axis, [schedule.at(0, t) for t in t_axis])
    ax.plot(timesteps, [schedule.at(0, t) for t in timesteps], "o", color="C3")
    ax.set_title(name, fontsize=9)
for ax in axes.flat[len(TIMESTEP_SHAPES) :]:
    ax.axis("off")
for ax in axes[-1]:
    ax.set_xlabel("timestep t")
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
# Move a slider and the grid (one image per seed) and the plot regenerate. **preset** sets every
# control from a variant (its attention settings stay for the whole sweep); **schedule** switches
# from per-step sliders (`custom`) to a timestep shape driven by the `a`/`b` base weights, and
# the per-step sliders then show what the shape gives. The summary states the UNet evaluations per
# image the config needs (the sweep itself records norms, so it runs all three branches).

# %%
explorer = SweepExplorer(pipe, inputs, PROMPT, model="hyper", seeds=(0, 1), preset="fastface-am1")
explorer

# %% [markdown]
# The explorer is an ordinary object: what the sliders do, code can do too, and its last result
# holds the numbers.

# %%
explorer.b_steps[1].value = 5.0
explorer.b_steps[2].value = 5.0
result = explorer.last
print("a, b per step:", [(round(a, 2), round(b, 2)) for a, b in result.weights])
print("UNet evaluations per image:", result.planned)
print("term 2 norm per step:", [round(n["term2"], 3) for n in result.norms])

# %%
explorer.shape.value = "pcs"
explorer.power.value = 2.0
print("pcs schedule, a and b per step:", [(round(a, 3), round(b, 3)) for a, b in explorer.last.weights])
print("UNet evaluations per image:", explorer.last.planned)

# %%
explorer.apply_preset("fastface-am1")  # back to the preset (the sliders above are live again)
path = wb.save(schedule_and_norms(explorer.last.weights, explorer.last.norms), "03_sweep")
print("saved", path.relative_to(wb.figures.parent))

# %% [markdown]
# **Next:** `04_identity_metrics` measures whether the identity actually survives: face models,
# same vs different people, and how the score fails.
