# %% [markdown]
# # 00 · Why FastFace
#
# The question this workbook answers, before any code: **why does a face adapter lose the identity
# on a 4-step distilled SDXL model, and what do FastFace's two ideas change?** This notebook
# draws the method (no model is loaded: it runs in a few seconds, in tiny and full mode alike)
# and ends with a cheat sheet of the six variants. Notebooks 01-05 then run each part.
#
# * Paper: S. Karpukhin, V. Titov, A. Kuznetsov, A. Alanov, *FastFace: Tuning Identity
#   Preservation in Distilled Diffusion via Guidance and Attention*, 2025,
#   [arXiv 2505.21144](https://arxiv.org/abs/2505.21144).
# * Reference code: [github.com/ControlGenAI/FastFace](https://github.com/ControlGenAI/FastFace).
# * This package's account of the method, formula by formula: `docs/method.md`; every term used in
#   the notebooks is defined in its glossary, [docs/method.md §16](../docs/method.md#16-glossary),
#   and the letters in [§2](../docs/method.md#2-notation-one-letter-per-meaning).
#
# **Mode.** Nothing here depends on it: tiny (CPU) and full (GPU) mode print the same tables and
# draw the same diagrams.

# %%
from fastface_lite.workbook.session import setup

wb = setup(seed=0)
print(wb.describe())

# %% [markdown]
# ## The problem
#
# **IP-Adapter FaceID** turns a face photo into 4 *ID tokens* that every cross-attention layer of
# SDXL's UNet attends to. It was trained on **base SDXL**, which is sampled with classifier-free
# guidance (CFG): at each of 30-50 steps the UNet runs with and without the conditions and the
# difference is multiplied by a weight ω of about 5-7.5, so whatever the ID tokens add to the
# prediction is amplified at every step.
#
# **Distilled models** (Hyper-SD, SDXL-Lightning, LCM-LoRA, SDXL-Turbo) sample in 1-8 steps with one
# UNet evaluation per step and **no CFG**. In FastFace's notation (below) they run at weights
# a = b = 1: the prediction is just the text + ID branch, and nothing amplifies the direction the
# ID tokens add. Four weak steps later the image shows a plausible person who does not look like the
# reference. The adapter scale is the one knob left, and it strengthens the adapter everywhere in
# the image at once. ([docs/method.md §1](../docs/method.md#1-the-problem-why-identity-fades-on-a-distilled-model))
#
# ## The two ideas
#
# 1. **DCG, decoupled classifier-free guidance**: bring guidance back, but split in two directions
#    with their own weights, an identity direction (weight a) and a text direction (weight b), used
#    only at the two middle steps, followed by a rescale of the prediction's spread (the idea of
#    *CFG rescale*, Lin et al. 2023, [arXiv 2305.08891](https://arxiv.org/abs/2305.08891)).
#    Notebook 03.
# 2. **AM, attention manipulation**: inside the adapter's own attention, rewrite the attention
#    probabilities A of the 4 ID tokens (sharpen them, mask them to the face, amplify them) instead
#    of scaling the whole adapter. Notebook 02 looks at these maps with a tracer whose design follows
#    *DAAM* (Tang et al. 2022, [arXiv 2210.04885](https://arxiv.org/abs/2210.04885)) and an attention
#    store after *prompt-to-prompt* (Hertz et al. 2022, [arXiv 2208.01626](https://arxiv.org/abs/2208.01626)).
#
# Both are training-free: the same weights, a different computation per step.

# %% [markdown]
# ## DCG: the three-branch batch
#
# DCG evaluates the UNet on up to three *branches* per step, which differ in the conditions they
# carry: e_u (none), e_i (ID only), e_ti (text + ID). FastFace uses **type 3**:
#
# $$e = e_u + a\,(e_i - e_u) + b\,(e_{ti} - e_i) = \lambda_0 e_u + \lambda_1 e_i + \lambda_2 e_{ti},
# \quad (\lambda_0, \lambda_1, \lambda_2) = (1 - a,\; a - b,\; b)$$
#
# a weights the **identity** term (e_i − e_u: what the face adds to nothing), b the **text** term
# (e_ti − e_i: what the prompt adds on top of the face). A branch whose coefficient λ is 0 need not
# be evaluated. The diagram shows step 1 of FastFace (a = 1.5, b = 3):

# %%
from fastface_lite.workbook import diagrams

fig = diagrams.branch_batch(a=1.5, b=3.0)
wb.save(fig, "00_branch_batch")
fig

# %% [markdown]
# At a = b = 1 the coefficients are (0, 0, 1): only e_ti is needed, one UNet evaluation, which is
# exactly how a distilled model runs without FastFace (the *baseline*):

# %%
diagrams.branch_batch(a=1.0, b=1.0)

# %% [markdown]
# ## AM: where it sits in the decoupled cross-attention
#
# Each `attn2` layer of the UNet runs two attentions from the same image queries Q: one over the 77
# text tokens, one over the 4 ID tokens with the adapter's own keys K_ip and values V_ip (IP-Adapter's
# *decoupled* cross-attention). Their outputs are added, the ID part times the adapter scale. AM
# rewrites the ID probabilities A (shape (B, H, N, J): batch, heads, positions, J = 4 tokens) before
# they weight the values, and does not renormalise: rows stop summing to 1, which is how the
# identity gets more weight. FastFace-AM2 then pulls the result partly back with AdaIN, once on A
# (stage 1) and once on the output O (stage 2). ([docs/method.md §6-§10](../docs/method.md#6-where-am-acts-the-decoupled-cross-attention))

# %%
fig = diagrams.decoupled_attention()
wb.save(fig, "00_decoupled_attention")
fig

# %% [markdown]
# ## Cheat sheet: the six variants
#
# What each variant turns on, and its cost in **UNet evaluations per 4-step image** (one branch's
# pass through the UNet for one image at one step), counted by the package itself
# (`planned_evaluations`) for Hyper-SD (default weight 1) and LCM (default weight 1.5).

# %%
import pandas as pd

import fastface_lite as ff
from fastface_lite.method.branches import planned_evaluations
from fastface_lite.sdxl.loading import model_timesteps

TURNS_ON = {
    "baseline": "nothing: a = b = the model's default weight",
    "dcg": "DCG type 3, a = [1, 1.5, 1.5, 1], b = [1, 3, 3, 1], rescale φ = 0.75",
    "am1": "AM: pow then scale (down and up blocks, steps 0-3)",
    "am2": "AM: adaptive softmask then scale, inverse token 0, per-step schedule",
    "fastface-am1": "DCG + AM1",
    "fastface-am2": "DCG + AM2 + AdaIN (w = 0.7, both stages)",
}
rows = []
for variant, what in TURNS_ON.items():
    row = {"variant": variant, "turns on": what}
    for model in ("hyper", "lcm"):
        cfg = ff.FastFaceConfig.preset(variant, model=model)
        row[f"UNet evals, {model}"] = planned_evaluations(cfg, model_timesteps(model, 4))
    rows.append(row)
cheat_sheet = pd.DataFrame(rows).set_index("variant")
cheat_sheet

# %% [markdown]
# Reading it: the baseline needs 4 evaluations on Hyper-SD (one branch per step) and 8 on LCM
# (a = b = 1.5 makes λ_0 = −0.5 and λ_2 = 1.5 non-zero). DCG's rescale reads branches 1 and 2 at
# every step, and its middle steps need all three: 2 + 3 + 3 + 2 = 10. AM2's adaptive softmask
# min-max normalises over the whole batch, so it couples the branches and keeps all three at every
# step: 12, what the reference always evaluates ([docs/method.md §11-§12](../docs/method.md#11-batch-coupling-and-unet-evaluations)).

# %% [markdown]
# ## Exercises
#
# **1.** At a = 2, b = 2 (type 3), which branches must a step evaluate (no rescale)? Write the
# number of UNet evaluations per step for one image.

# %%
my_evaluations_per_step = None  # your prediction, e.g. 1, 2 or 3

# %%
from fastface_lite.method import dcg
from fastface_lite.workbook.exercises import check

lam = dcg.coefficients(2.0, 2.0, 3)
check(
    my_evaluations_per_step,
    sum(c != 0 for c in lam),
    "evaluations per step at a = b = 2",
    why=f"λ = (1 − a, a − b, b) = {lam}: the ID-only branch drops out, e_u and e_ti remain (plain CFG).",
)

# %% [markdown]
# **2.** FastFace-AM1 on SDXL-Turbo: how many UNet evaluations per 4-step image? (Turbo's default
# weight is 1, like Hyper-SD's; AM1's transforms act element by element.)

# %%
my_turbo_fastface_am1 = None  # your prediction: a whole number

# %%
check(
    my_turbo_fastface_am1,
    planned_evaluations(ff.FastFaceConfig.preset("fastface-am1", model="turbo"), model_timesteps("turbo", 4)),
    "UNet evaluations of FastFace-AM1 on Turbo",
    why="AM1 couples no branches, so the count is DCG's: 2 + 3 + 3 + 2.",
)

# %% [markdown]
# ## What next
#
# * **01** builds a pipeline and shows what one call computes (the adapter, the ID tokens, the
#   branches); **02** opens the ID attention maps and writes the four AM transforms by hand;
# * **03** writes DCG type 3 with rescale by hand and sweeps a and b; **04** checks the identity
#   score; **05** runs the paper's evaluation protocol on a small grid.
# * Expected runtime: each notebook runs in under about 30 s in tiny mode on a CPU. In full mode the
#   first run downloads over 10 GB of weights (minutes on Colab); after that a 4-step 1024 px image
#   takes 0.6-1.0 s of UNet time on an H200 (README's benchmark, `bench/results/`). No T4 was
#   measured: an estimated 5-10 s on a T4 (the H200's times 8-10, the factor
#   `fastface_lite.workbook.runtimes` states; a T4 has roughly a tenth of an H200's fp16 compute).
