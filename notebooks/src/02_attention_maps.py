# %% [markdown]
# # 02 · Attention maps
#
# Where do the text tokens and the 4 ID tokens attend, and what does FastFace's attention
# manipulation (AM) do to the ID maps?
#
# * **The AM transforms** (`pow`, `scale`, `softmask`, `adaptive_softmask`) with the constants of
#   the method, first on a **synthetic** attention map with a known face, where their effect can be
#   read off exactly; the per-part constants, the per-step schedule, AdaIN, and why the softmask
#   ties the three guidance branches together.
# * **The math by hand**: the four transforms, inverse token 0 and both AdaIN stages written out
#   in a few lines each and checked against the package on the same tensors.
# * **Recorded maps**: `ff.trace(pipe)` records per-token attention while the pipeline runs;
#   `Trace.maps(kind, token, block, step, branch, stage)` returns one heat map; `fastface_lite.inspect.plots`
#   plots them by token, block and step, and the ID maps before AM ("raw") and after ("used").
# * **The attention inspector**: a widget to browse a recorded run.
#
# **Mode.** Tiny mode (offline, CPU, the default here) records maps from a UNet with **random
# weights**: the mechanics are real (shapes, which blocks and steps, the transforms, raw vs used,
# the numbers AM changes), but the spatial patterns mean nothing: no face is drawn, so no token
# can attend to one. In full mode (Colab, GPU) the same cells record the real model: text tokens
# light up their objects and the ID tokens the face.
#
# Where AM sits in the UNet (diagram) and why it exists: notebook 00. Letters follow
# [docs/method.md §2](../docs/method.md#2-notation-one-letter-per-meaning): J = 4 ID tokens, s the
# `scale` factor, k the softmask slope, q its quantile level, w the AdaIN weight; terms (AdaIN, AM1,
# AM2, DAAM, ...) are in the [glossary, §16](../docs/method.md#16-glossary).
#
# **Runtime.** About 30 s in tiny mode on a 2-core CPU. Full mode: one recorded 4-step
# FastFace-AM2 image; recording costs 1.2-1.4x a plain run at SDXL's size on an H200 (README's
# benchmark), about 1-1.5 s per image there after the weights are downloaded; no T4 was measured:
# an estimated 10-15 s per image (8-10x the H200's, `fastface_lite.workbook.runtimes`).

# %%
import fastface_lite as ff
from fastface_lite.workbook.session import setup

wb = setup(seed=0)
print(wb.describe())

# %% [markdown]
# ## What AM acts on
#
# In every cross-attention (`attn2`) of the UNet, each image position attends to the 4 ID tokens
# with probabilities `A = softmax(Q K_ip^T / sqrt(d))`, a softmax over the ID tokens alone (the
# text tokens have their own; notebook 01). `A` has shape **(B, H, N, J)**: B the whole
# guidance batch (3 branches x images), H attention heads, N = h x w positions of that layer,
# J = 4 ID tokens. Each position's row (its J weights) sums to 1.
#
# In the target layers (blocks in `down` and `up`; **mid is not targeted**) and steps, AM
# rewrites the columns of the target tokens (all 4) with a chain of transforms, and does **not**
# renormalise: rows stop summing to 1, which is the point, the identity gets more weight.
#
# ## The transforms on a synthetic face
#
# `fastface_lite.workbook.synthetic.synthetic_face_attention` builds such a tensor for a 32 x 32 grid: an
# elliptical "face" blob on a background, with noise. Token 1 attends to the face most strongly,
# token 2 less, token 3 least (after the softmax token 3 even gets less on the face than elsewhere:
# tokens 1 and 2 take its share); token 0 attends to the background (the reference treats token 0
# as a "negative" token, see AM2 below). Away from the face every token gets about 1/4.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from fastface_lite.workbook.synthetic import synthetic_face_attention

SIDE = 32
synthetic = synthetic_face_attention(size=SIDE, heads=2, seed=wb.seed)
A, face = synthetic.probs, synthetic.mask
inside, outside = face > 0.5, face < 0.1
print(
    "A:",
    tuple(A.shape),
    "(branches, heads, positions, ID tokens); rows sum to 1:",
    torch.allclose(A.sum(-1), torch.ones(1)),
)


def grid(probs, token, branch=0):
    """One token's map, heads averaged, as a (SIDE, SIDE) array."""
    return probs[branch, :, :, token].mean(0).reshape(SIDE, SIDE).numpy()


pd.DataFrame(
    [
        {
            "token": t,
            "mean in the face": grid(A, t)[inside].mean(),
            "mean outside": grid(A, t)[outside].mean(),
            "max": grid(A, t).max(),
        }
        for t in range(4)
    ]
).set_index("token")

# %% [markdown]
# The four transforms ([docs/method.md §7](../docs/method.md#7-the-transforms-and-their-constants)),
# applied to the target columns (norm = min-max over batch, heads and positions, per token;
# σ = logistic sigmoid):
#
# | transform | definition | constants, down / mid / up |
# |---|---|---|
# | `pow` | A^p | p = 1.3 / 1.0 / 1.3 |
# | `scale` | min(s A, 10) | s = 1.55 / 1.0 / 1.45 |
# | `softmask` | norm(σ(k (norm(A) - 0.5))) | k = 12.5 / 1.0 / 12.5 |
# | `adaptive_softmask` | norm(σ(k (norm(A) - τ))), τ = the q-quantile of A over positions | k = 12.5 / 1 / 12.5, q = 0.6 / 1.0 / 0.6 |
#
# They live in `fastface_lite.method.am` (`manipulate` applies a chain to chosen token columns,
# `minmax_norm`, `spatial_quantile`), the constants in `PartTable`:

# %%
import dataclasses

from fastface_lite.method import am as am
from fastface_lite.method.am_config import PartTable

pd.DataFrame({part: dataclasses.asdict(PartTable()[part]) for part in ("down", "mid", "up")})

# %% [markdown]
# Each transform alone with the `up` constants, then the two chains the variants use:
#
# * **AM1** (`am1`, `fastface-am1`): `pow` then `scale`, every step, same constants.
# * **AM2** (`am2`, `fastface-am2`): `adaptive_softmask` then `scale`, token 0 **inverted**
#   (flipped to 1 - A before the chain and mirrored to max_N(A) - A after it), with the per-step
#   **schedule** replacing the constants (shown at step 1: k = 5, q = 0.65, s = 1.55); FastFace-AM2
#   also blends the result back towards the raw map's statistics with **AdaIN** (adaptive instance
#   normalisation: give a tensor another's mean and std along one dimension; w = 0.7). AdaIN acts
#   twice: stage 1 on the map, over the J = 4 tokens of each position (shown here); stage 2 on the
#   attention *output* A''V, over the head dimension d (in the by-hand section below, and
#   [docs/method.md §10](../docs/method.md#10-adain-in-both-stages)).

# %%
up = PartTable().up
am2 = ff.FastFaceConfig.preset("fastface-am2").attention
step1 = am2.constants_at("up", 1)
tokens = (0, 1, 2, 3)
maps = {"raw": A}
for name in am.TRANSFORMS:  # pow, scale, softmask, adaptive_softmask
    maps[name] = am.manipulate(A, tokens, (name,), up)
maps["AM1: pow, scale"] = am.manipulate(A, tokens, ("pow", "scale"), up)
maps["AM2, step 1"] = am.manipulate(A, tokens, am2.transforms, step1, invert_token0=am2.invert_token0)
w = am2.adain_weight
maps["FastFace-AM2, step 1\n(+ AdaIN stage 1)"] = w * maps["AM2, step 1"] + (1 - w) * am.adain(maps["AM2, step 1"], A)
print(f"up constants {up}\nAM2 at step 1: {step1}")

# %%
fig, axes = plt.subplots(2, len(maps), figsize=(1.75 * len(maps) + 0.8, 4.1), layout="constrained")
for row, token in enumerate((1, 0)):
    top = max(grid(m, token).max() for m in maps.values())
    for col, (name, m) in enumerate(maps.items()):
        shown = axes[row, col].imshow(grid(m, token), cmap="viridis", vmin=0, vmax=top)
        axes[row, col].contour(face.numpy(), levels=[0.5], colors="white", linewidths=0.6)
        axes[row, col].set_title(name if row == 0 else "", fontsize=9)
        axes[row, col].set_xticks([])
        axes[row, col].set_yticks([])
    axes[row, 0].set_ylabel(f"token {token}" + (" (face)" if token else " (background)"), fontsize=10)
    fig.colorbar(shown, ax=axes[row, :].tolist(), shrink=0.9, label="attention weight")
fig.suptitle("AM on a synthetic ID attention map (white line: the face); one colour scale per row", fontsize=11)
wb.save(fig, "02_am_synthetic")
plt.show()

# %% [markdown]
# The same, as numbers and as a profile through the middle of the face (the face spans the
# middle third of the row). Every number is an attention weight (dimensionless, a probability
# before AM); "in face" and "outside" are means over the positions inside and outside the face
# mask, heads averaged. "row sum" is, for each position, the sum of its J = 4 token weights,
# averaged over the positions: exactly 1 for raw probabilities, anything after AM (a row sum of
# 3.5 means the ID tokens carry 3.5 times the weight the softmax gave them, before the adapter
# scale multiplies the output).


# %%
def summary(m):
    t1 = grid(m, 1)
    return {
        "token 1 in face": t1[inside].mean(),
        "token 1 outside": t1[outside].mean(),
        "in / out": t1[inside].mean() / t1[outside].mean(),
        "token 0 in face": grid(m, 0)[inside].mean(),
        "token 0 outside": grid(m, 0)[outside].mean(),
        "row sum": float(m[0].sum(-1).mean()),
    }


pd.DataFrame({name.replace("\n", " "): summary(m) for name, m in maps.items()}).T

# %%
centre_row = int(face.sum(1).argmax())
fig, axes = plt.subplots(1, 2, figsize=(10, 3), layout="constrained")
for ax, token in zip(axes, (1, 0)):
    for name, m in maps.items():
        ax.plot(
            grid(m, token)[centre_row],
            label=name.replace("\n", " "),
            lw=2 if name == "raw" else 1.2,
            color="k" if name == "raw" else None,
        )
    ax.axvspan(*np.flatnonzero(face[centre_row].numpy() > 0.5)[[0, -1]], color="0.9", zorder=0)
    ax.set(title=f"token {token}, row {centre_row} (grey: the face)", xlabel="column", ylabel="attention weight")
axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
wb.save(fig, "02_am_profiles")
plt.show()

# %% [markdown]
# Reading it:
#
# * **`pow`** (p = 1.3) shrinks every weight, small ones relatively more (0.25 -> 0.165, 0.8 ->
#   0.75): more contrast between face and background, less total weight.
# * **`scale`** multiplies everything by s, background included: same contrast, more weight (the
#   clamp at 10 is never reached by probabilities). **AM1** combines the two: the face gets more
#   weight than raw, the background about the same.
# * **`softmask`** turns the map into a near-binary mask in [0, 1]: close to 1 on the face, close
#   to 0 elsewhere, whatever the raw level was.
# * **`adaptive_softmask`** does the same with its threshold at q, the 0.6-quantile of the **raw**
#   probabilities (about 0.3 here), subtracted from the **min-max normalised** map. That mixes two
#   scales (the reference does it, FastFace's numbers depend on it, we keep it): the mask edge sits
#   where the normalised map crosses q, lower than the plain softmask's 0.5, so the mask is wider
#   and the background keeps more weight; and how much of the picture it covers depends on each
#   token's range, not on the quantile level (next cell).
# * **AM2** flips token 0 (1 - A) before the chain, so its mask is computed on where it does *not*
#   attend, the face, then mirrors it back (max - A): token 0 ends as a strong background mask,
#   near 0 on the face. The scale then amplifies all of it (s = 1.55 at step 1), and the
#   schedule's gentler slope (k = 5) keeps the mask edges soft. **AdaIN** pulls each position's 4
#   weights part of the way back towards the raw map's mean and spread over the tokens.
# * **Why invert token 0?** The reference treats token 0 as a "negative" token: in a trained
#   adapter tokens 1-3 gather on the face while token 0 attends mostly off it. What the flip really
#   changes is only where the mask's edge falls: the adaptive threshold τ becomes a quantile of
#   1 − A_0, so token 0's edge is drawn around the face by the same rule as the face tokens'. With
#   the plain `softmask` (fixed centre 0.5) flip and mirror cancel up to a constant shift;
#   with `adaptive_softmask` the maps differ modestly. Whether token 0 really avoids the face for
#   your photo is something to look at (the recorded maps below), not assume
#   ([docs/method.md §8](../docs/method.md#8-inverse-token-0)).
#
# The quantile and the mismatch, in numbers (`spatial_quantile` works over the positions, per
# branch, head and token; all values are attention weights):

# %%
q = am.spatial_quantile(A, 0.6)  # (1, heads, 1, tokens)
normed = am.minmax_norm(A)
print("q = 0.6-quantile of raw A, per head and token:\n", q[0, :, 0].numpy())
print("share of positions with raw A > q:   ", (A > q).float().mean((0, 1, 2)).numpy(), "(0.4 by definition)")
print("share with normalised A > q (the mask):", (normed > q).float().mean((0, 1, 2)).numpy())

# %% [markdown]
# A quantile on one scale would mark 40 % of the positions for every token; the adaptive
# softmask's mask covers about a third of the picture for the strong face token 1 and three
# quarters or more for the others.

# %% [markdown]
# ### The per-step schedule
#
# AM2 replaces the part constants at each step (`AttentionSchedule`, for `down` and `up`): slope
# k = 7.5, 5, 5, 5; quantile level q = 0.65 at every step; scale s = 1.0, 1.55, 1.55, 1.55. Step 0 (the
# noisiest) gets a steep mask but no amplification. `AttentionConfig.constants_at(part, step)`
# gives what each layer uses; `active(part, step)` whether AM runs there at all:

# %%
rows = []
for name in ("fastface-am1", "fastface-am2"):
    attention = ff.FastFaceConfig.preset(name).attention
    for part in ("down", "mid", "up"):
        for step in range(4):
            part_constants = attention.constants_at(part, step)
            rows.append(
                {
                    "variant": name,
                    "part": part,
                    "step": step,
                    "AM on": attention.active(part, step),
                    "pow p": part_constants.pow,
                    "scale s": part_constants.scale,
                    "slope k": part_constants.softmask_k,
                    "quantile q": part_constants.quantile,
                }
            )
constants = pd.DataFrame(rows).set_index(["variant", "part", "step"])
constants.unstack("step")[["AM on", "scale s", "slope k"]]

# %% [markdown]
# ### Why the softmask ties the branches together
#
# `minmax_norm` runs over dim 0 too, and dim 0 holds **all three guidance branches**. So the mask
# of the text+id branch depends on the maps of the other two. Three synthetic branches: the
# unconditional one (no identity: its ID tokens carry nothing, modelled with no face, gain 0), the
# id branch and the text+id branch (gain 1 and 0.8). The text+id mask, normalised over the batch as
# the reference does, and within its own branch (`groups=3`, what
# `AttentionConfig(normalize_per_branch=True)` does):

# %%
batch = synthetic_face_attention(size=SIDE, heads=2, branches=3, branch_gain=(0.0, 1.0, 0.8), seed=wb.seed).probs
consts = am2.constants_at("up", 1)
joint = am.manipulate(batch, tokens, am2.transforms, consts, invert_token0=True)
alone = am.manipulate(batch, tokens, am2.transforms, consts, invert_token0=True, groups=3)
from fastface_lite.inspect.plots import map_row

fig = map_row(
    {
        "normalised over the batch": grid(joint, 1, branch=2),
        "within the branch": grid(alone, 1, branch=2),
    },
    difference=("batch − within", grid(joint, 1, branch=2) - grid(alone, 1, branch=2)),
    label="attention weight after AM",
    title="AM2 (step 1) on the text+id branch, token 1",
)
wb.save(fig, "02_am_batch_coupling")
plt.show()
print(
    "max |difference| on the text+id branch:", round(float((joint[2] - alone[2]).abs().max()), 3), "(attention weight)"
)

# %% [markdown]
# The two maps look alike at a glance; the difference panel (its own diverging scale, centred at
# 0, limits from the data) shows where the batch changes the mask: at the face's edge, where the
# threshold falls. A branch's AM result depends on which other branches are in the batch. To reproduce the
# reference exactly, `FastFacePipeline` therefore evaluates all three branches at every step where
# a softmask runs (12 UNet evaluations for AM2, notebook 01), even where guidance reads one.
# `normalize_per_branch=True` removes the coupling and the extra evaluations, at the price of
# numbers that are not the reference's. `pow` and `scale` act on each value alone: AM1 has no
# coupling.
#
# ## The math by hand
#
# Each transform is a line or two. Below they are written out with plain torch and compared with
# the package's `am.manipulate` on the same tensor (the synthetic map A, `up` constants). Same
# float32 arithmetic, but the package sorts to get its quantile where `torch.quantile` is used
# here, so the comparison allows 1e-5 relative and 1e-6 absolute error.


# %%
def norm(x):
    """Min-max over batch, heads and positions, per token: (B, H, N, J) -> same, in [0, 1]."""
    lo, hi = x.amin(dim=(0, 1, 2), keepdim=True), x.amax(dim=(0, 1, 2), keepdim=True)
    return (x - lo) / (hi - lo)


def pow_(x, c):
    return x**c.pow


def scale(x, c):
    return torch.clamp(c.scale * x, max=10.0)


def softmask(x, c):
    return norm(torch.sigmoid(c.softmask_k * (norm(x) - 0.5)))


def adaptive_softmask(x, c):
    tau = torch.quantile(x, c.quantile, dim=-2, keepdim=True).clamp_min(1e-6)  # over positions
    return norm(torch.sigmoid(c.softmask_k * (norm(x) - tau)))  # τ on A's scale, used on norm(A)'s


TOL = {"rtol": 1e-5, "atol": 1e-6}
for name, fn in {"pow": pow_, "scale": scale, "softmask": softmask, "adaptive_softmask": adaptive_softmask}.items():
    torch.testing.assert_close(fn(A, up), am.manipulate(A, tokens, (name,), up), **TOL)
print("pow, scale, softmask, adaptive_softmask: hand-written = package (rtol 1e-5, atol 1e-6)")

# %% [markdown]
# And the whole of FastFace-AM2 inside one layer, from queries to output: softmax, flip token 0,
# adaptive softmask, scale, mirror token 0, AdaIN stage 1 on the map (over the J tokens), then the
# values, then AdaIN stage 2 on the output (over the head dimension d). Random Q, K, V stand for a
# layer of the up blocks at step 1 (3 branches, 2 heads, 64 positions, head dimension 8), compared
# with `am.ip_attention_maps`, the function the pipeline's attention processor calls.


# %%
def adain(x, ref, eps=1e-6):
    """x with the mean and (unbiased) std of ref along the last dimension."""
    return (x - x.mean(-1, keepdim=True)) * ref.std(-1, keepdim=True) / (x.std(-1, keepdim=True) + eps) + ref.mean(
        -1, keepdim=True
    )


gen = torch.Generator().manual_seed(0)
Q = torch.randn(3, 2, 64, 8, generator=gen)  # (B, H, N, d)
K, V = torch.randn(2, 3, 2, 4, 8, generator=gen)  # (B, H, J, d) each
c1, w = am2.constants_at("up", 1), am2.adain_weight  # k = 5, q = 0.65, s = 1.55; w = 0.7

raw = torch.softmax(Q @ K.transpose(-2, -1) / 8**0.5, dim=-1)  # (B, H, N, J), rows sum to 1
x = raw.clone()
x[..., 0] = 1 - x[..., 0]  # flip token 0: its mask is computed on where it does not attend
x = scale(adaptive_softmask(x, c1), c1)
x[..., 0] = x[..., 0].amax(dim=-1, keepdim=True) - x[..., 0]  # mirror token 0 against its max over N
used = w * x + (1 - w) * adain(x, raw)  # AdaIN stage 1: over the J tokens of each position
out = used @ V
out = w * out + (1 - w) * adain(out, raw @ V)  # AdaIN stage 2: over the head dimension d

package = am.ip_attention_maps(Q, K, V, "up", 1, am2, branches=3)
torch.testing.assert_close(used, package.used, **TOL)
torch.testing.assert_close(out, package.output, **TOL)
print(
    f"FastFace-AM2, up block, step 1: used map and output by hand = package; row sum {float(used.sum(-1).mean()):.2f}"
)

# %% [markdown]
# ## Recorded maps
#
# Now the real thing, on the tiny pipeline: a FastFace-AM2 run, recorded. `ff.trace(pipe)` is a
# context manager (in the style of DAAM): inside it the pipeline's attention processors report
# every `attn2`'s text probabilities and ID probabilities (before AM: "raw", after: "used"). They
# are aggregated on the fly (heads averaged, images of a branch averaged, layers grouped by block,
# all resized to one grid), so the store is small.
#
# **Tiny mode, again**: these maps come from random weights. Shapes, blocks, steps, branches and
# what AM changes are real; where the maps are bright is not meaningful.

# %%
pipe = wb.pipeline()
inputs, photo = wb.identity_inputs(pipe, "astronaut")  # the face model and crop of notebook 01
prompt = "a photo of a person reading in a park"
cfg = ff.FastFaceConfig.preset("fastface-am2")
with ff.trace(pipe) as tr:
    out = pipe(prompt=prompt, fastface=cfg, generator=wb.generator(), **inputs.call_kwargs())
image = out.images[0]
print("words:", tr.words)
print("ID tokens:", tr.id_tokens, "| blocks:", tr.blocks)
print("steps:", tr.steps, "| timesteps:", [round(t) for t in tr.timesteps.values()], "| branches:", tr.branches)
print("common grid:", tr.resolution, f"| store {tr.nbytes / 2**20:.3f} MiB")

# %% [markdown]
# `tr.maps(...)` returns a `HeatMap`: the mean over what is selected (tokens, blocks, steps) for
# one branch and, for ID maps, one stage. Its `plot_overlay(image)` draws it over the picture.
# Words are looked up in the prompt (all their BPE pieces); ID tokens are indices 0-3.

# %%
person = tr.maps(kind="text", token="person", block="up_blocks.0", step=1)
id_raw = tr.maps(kind="id", token=1, block="up_blocks.0", step=1, stage="raw")
print(person, "\n", id_raw)
fig, axes = plt.subplots(1, 3, figsize=(9, 3), layout="constrained")
axes[0].imshow(image)
axes[0].set_title(f"generated ({wb.mode} mode)", fontsize=10)
axes[0].axis("off")
person.plot_overlay(image, ax=axes[1], colorbar=True)
id_raw.plot_overlay(image, ax=axes[2], colorbar=True)
wb.save(fig, "02_overlay")
plt.show()

# %% [markdown]
# Mind the colour scales (each map's own; values are attention weights): with random weights the text map stays close to 1/77 = 0.013 (uniform
# over the 77 text positions) and the ID map close to 1/4 everywhere; the patterns are small
# ripples. With real weights a word's map peaks on its object and the ID maps on the face.
#
# Grids put many maps on one colour scale. `token_step_grid`: tokens by step; `block_step_grid`:
# blocks by step for one token. They draw over the image when given one; in tiny mode the image is
# noise, so we pass `None` and the maps are shown alone. Three words over the 4 steps, in the first
# up block:

# %%
from fastface_lite.inspect.plots import block_step_grid, raw_vs_used, token_step_grid

backdrop = None if wb.tiny else image  # noise adds nothing under a map
fig = token_step_grid(tr, ["person", "reading", "park"], backdrop, kind="text", block="up_blocks.0")
wb.save(fig, "02_text_tokens")
fig

# %% [markdown]
# ID token 1 in every block with attention, by step ("used": after AM). In the tiny UNet (latents
# 32 x 32) `down_blocks.1` and `up_blocks.1` run at 16 x 16, `down_blocks.2`, `mid_block` and
# `up_blocks.0` at 8 x 8 (SDXL at 1024 px: 64 x 64 and 32 x 32); all are resized to the finest
# grid. One thing here is real even with random weights: step 0 is darker than steps 1-3 in the
# down and up blocks, because AM2's schedule does not amplify at step 0 (s = 1.0), and `mid_block`
# stays low at every step because AM leaves it alone.

# %%
fig = block_step_grid(tr, 1, backdrop, kind="id", stage="used")
wb.save(fig, "02_id_blocks")
fig

# %% [markdown]
# ### Raw vs used
#
# `raw_vs_used` puts, per block (rows), the ID map before AM, after AM (one shared colour scale),
# and their signed difference (a diverging scale centred at 0, limits from the data: red where AM
# added weight, blue where it removed some). In `mid_block` AM is off, so used equals raw there
# and the difference is zero; in the down and up blocks the adaptive softmask and the scale have
# rewritten the map. In tiny mode the pattern is noise, and the difference is red at every
# position of the AM blocks: at step 1 the scale s = 1.55 multiplies every weight, so AM adds
# weight everywhere, more where the mask is high. In full mode the difference should be deepest
# red on the face for tokens 1-3 and, for token 0, on the background.

# %%
fig = raw_vs_used(tr, token=1, image=backdrop, step=1)
wb.save(fig, "02_id_raw_vs_used")
fig

# %%
rows = []
for block in tr.blocks:
    raw = tr.maps(kind="id", token=1, block=block, step=1, stage="raw").values
    used = tr.maps(kind="id", token=1, block=block, step=1, stage="used").values
    rows.append(
        {
            "block": block,
            "raw mean": float(raw.mean()),
            "raw max": float(raw.max()),
            "used mean": float(used.mean()),
            "used max": float(used.max()),
            "max |used - raw|": float((used - raw).abs().max()),
        }
    )
pd.DataFrame(rows).set_index("block")

# %% [markdown]
# The raw probabilities of the 4 ID tokens sum to 1 at every position, so their mean is exactly
# 1/4 everywhere (in any block, step or branch); after AM that no longer holds. AM2 also ran on all
# three branches (the unconditional one too, as in the reference), which the trace recorded:

# %%
all_raw = tr.maps(kind="id", token=None, stage="raw").values
all_used = tr.maps(kind="id", token=None, block="up", stage="used").values
print(f"mean of the 4 raw ID maps: min {all_raw.min():.3f}, max {all_raw.max():.3f}")
print(f"mean of the 4 used ID maps (up blocks): min {all_used.min():.3f}, max {all_used.max():.3f}")
for branch in tr.branches:
    raw = tr.maps(kind="id", token=1, block="up", step=1, branch=branch, stage="raw").values
    used = tr.maps(kind="id", token=1, block="up", step=1, branch=branch, stage="used").values
    print(f"branch {branch:8s} token 1, up blocks, step 1: raw max {raw.max():.3f} -> used max {used.max():.3f}")

# %% [markdown]
# ## The attention inspector
#
# `fastface_lite.workbook.widgets.AttentionInspector(trace, image)` browses a recorded run: token kind
# (text or ID), token, block, step, branch and, for ID tokens, the stage (raw or used). It shows the
# map over the image and its numbers. Its controls are ordinary ipywidgets, so a cell can set them
# too; `query()` returns the `Trace.maps` arguments they select and `last` the map shown:

# %%
from fastface_lite.workbook.widgets import AttentionInspector

inspector = AttentionInspector(tr, image)
inspector.token.value = "person"
inspector.block.value = "up_blocks.0"
inspector.step.value = 1
print(inspector.query())
print(inspector.last.title, "| max", round(float(inspector.last.values.max()), 3))
inspector.kind.value = "id"
inspector.token.value = 1
inspector.stage.value = "raw"
print(inspector.query())
print(inspector.last.title, "| max", round(float(inspector.last.values.max()), 3))

# %% [markdown]
# Change the controls below (in a live notebook: the map redraws on every change). In full mode,
# try the word tokens of your prompt, then the ID tokens raw vs used.

# %%
inspector

# %% [markdown]
# ## Exercises
#
# **1.** The raw probabilities of a position sum to 1 over the 4 ID tokens. After `scale` alone with
# the `up` constants (s = 1.45), what is the mean row sum?

# %%
my_row_sum = None  # your prediction, a number

# %%
from fastface_lite.workbook.exercises import check

check(
    my_row_sum,
    round(float(am.manipulate(A, tokens, ("scale",), up)[0].sum(-1).mean()), 3),
    "mean row sum after scale (s = 1.45)",
    why="scale multiplies every weight by s (the clamp at 10 is never reached), so each row sums to s.",
    abs_tol=0.01,
)

# %% [markdown]
# **2.** In the recorded FastFace-AM2 run, what is the largest |used − raw| of token 1 in
# `mid_block` at step 1 (an attention weight)?

# %%
my_mid_change = None  # your prediction, a number

# %%
mid_raw = tr.maps(kind="id", token=1, block="mid_block", step=1, stage="raw").values
mid_used = tr.maps(kind="id", token=1, block="mid_block", step=1, stage="used").values
check(
    my_mid_change,
    round(float((mid_used - mid_raw).abs().max()), 6),
    "max |used − raw| in mid_block",
    why="AM targets the down and up blocks only: mid_block's map is left as the softmax made it.",
    abs_tol=1e-6,
)

# %% [markdown]
# ## What to try next
#
# * Set `invert_token0=False` in the AM2 cell and compare token 0's map and the row sums.
# * In the synthetic section, raise the softmask slope k to 25 and watch the mask edge sharpen.
# * In full mode, open the inspector on the ID tokens and check the claim of §8: does token 0
#   avoid the face for *your* photo?
#
# **Next**: notebook 03 sweeps the guidance schedule (DCG's a, b and rescale) interactively.
