# %% [markdown]
# # 01 · Loading adapters
#
# What a FastFace pipeline is made of, and what one call of it computes.
#
# FastFace (S. Karpukhin, V. Titov, A. Kuznetsov, A. Alanov, 2025): paper
# [arXiv 2505.21144](https://arxiv.org/abs/2505.21144), reference code
# [github.com/ControlGenAI/FastFace](https://github.com/ControlGenAI/FastFace). Why the method
# exists and a diagram of it: notebook 00. Every term used here (ArcFace, perceiver resampler,
# h94, LoRA, UNet evaluation, ...) is defined in the [glossary, docs/method.md §16](../docs/method.md#16-glossary).
#
# * **The distilled presets**: SDXL base and four few-step versions of it (Hyper-SD, Lightning,
#   LCM, Turbo), each with its scheduler, step counts, image size and default guidance.
# * **Loading**: what `load_pipeline(model, steps, adapter)` reads from the hub in full mode, and
#   the tiny offline twin `wb.pipeline()` builds in tiny mode (same classes, random weights).
# * **The identity adapters**: IP-Adapter FaceID and FaceID Plus v2, from a real photo to the 4 ID
#   tokens; the FaceID LoRA; the decoupled cross-attention where the ID tokens enter the UNet.
# * **DCG's three branches**, and how many UNet evaluations each of the six FastFace variants
#   needs, and why.
#
# **Mode.** Tiny mode (offline, CPU, the default here) builds every pipeline from random weights
# in seconds: the shapes, tokens, branches and evaluation counts are real, **the images are
# noise**. Full mode (Colab, GPU) loads the real weights from the hub (over 10 GB on the first
# run): the same cells then print SDXL's real sizes (512-d ArcFace identity, 2048-d tokens) and
# the images show the person.
#
# **Runtime.** About 30 s in tiny mode on a 2-core CPU. Full mode: the first run downloads the
# weights (over 10 GB: several minutes on Colab), then the notebook generates a dozen 4-step
# images; at SDXL's size one takes 0.6-1.0 s of UNet time on an H200 (README's benchmark), well
# under a minute for the notebook there. No T4 was measured: an estimated 5-10 s per image (8-10x
# the H200's, see `fastface_lite.workbook.runtimes`), 1-2 minutes for the notebook after the
# download; `wb.describe()` below says whether model CPU offload (about 3x slower) is on.

# %%
import fastface_lite as ff
from fastface_lite.workbook.session import setup

wb = setup(seed=0)
print(wb.describe())

# %% [markdown]
# ## The distilled presets
#
# Distilled SDXL models sample in 1 to 8 steps instead of 25 to 50. They keep SDXL's architecture
# and noise schedule and change the weights and the sampler. `fastface_lite.method.checkpoints.CHECKPOINTS`
# holds one entry per model (the table of [docs/method.md §3](../docs/method.md#3-the-setting-models-adapters-and-id-inputs)):
#
# * **how** the weights enter the SDXL base pipeline: a distillation LoRA fused into the UNet
#   (`lora`: Hyper-SD, LCM), a whole UNet state dict in one file (`unet_file`: Lightning), a
#   diffusers UNet folder (`unet_folder`: Turbo), or nothing (`base`);
# * the **scheduler** and its timestep spacing: "trailing" starts at the last training timestep
#   (999), which few-step models need, where SDXL's "leading" would start at 751;
# * the step counts that have a checkpoint (Hyper-SD and Lightning ship one file per count);
# * the image **size** (Turbo was distilled at 512 px, the others at 1024 px) and the guidance
#   weight **a = b** used when no DCG schedule is given (1.0 means no classifier-free guidance:
#   the distilled models are meant to run without it, LCM with a little).

# %%
import pandas as pd

from fastface_lite.method.checkpoints import CHECKPOINTS
from fastface_lite.sdxl.loading import model_timesteps

pd.DataFrame(
    [
        {
            "preset": p.name,
            "how": p.how,
            "repo": p.repo,
            "file (4 steps)": p.weight_name(4) or "-",
            "scheduler": p.scheduler,
            "spacing": p.timestep_spacing or "config's",
            "steps with a file": list(p.steps) or "any",
            "size": p.default_size,
            "a = b": p.default_guidance,
            "4-step timesteps": model_timesteps(p.name, 4),
        }
        for p in CHECKPOINTS.values()
    ]
).set_index("preset")

# %% [markdown]
# The paper evaluates everything at 4 steps. Hyper-SD, Lightning and Turbo visit 999, 749, 499, 249
# (trailing spacing); LCM's scheduler picks 999, 759, 499, 259. SDXL base with its own leading
# spacing starts at 751 at 4 steps: it never visits the noisiest end of the schedule, where
# sampling from pure noise begins (harmless at 25+ steps, not at 4).
#
# ## Loading a pipeline
#
# **Full mode.** `ff.load_pipeline(model, steps, adapter, device, dtype)` assembles the pipeline
# from these hub files, in this order (nothing is downloaded here, the table is built from the
# presets):

# %%
from fastface_lite.workbook.anatomy import hub_files

for model in ("hyper", "lightning", "turbo"):
    print(f"load_pipeline({model!r}, steps=4, adapter='faceid-plusv2'):")
    print(pd.DataFrame(hub_files(model, steps=4, adapter="faceid-plusv2")).to_string(index=False), "\n")

# %% [markdown]
# After these, `load_pipeline` sets the default image size to the preset's and, for Plus v2, turns
# on the v2 shortcut of the ID projection (below). The FaceID LoRA is **not** fused: its weight is
# chosen per call. Arguments are checked before anything is read, so a step count without a
# checkpoint fails at once, with the counts that exist:

# %%
for kwargs in ({"model": "hyper", "steps": 3}, {"model": "lightning", "steps": 1}, {"model": "sd15"}):
    try:
        ff.load_pipeline(**kwargs)
    except ValueError as err:
        print(f"{kwargs}: {err}")

# %% [markdown]
# **Tiny mode.** `wb.pipeline()` calls `ff.tiny_pipeline(adapter, seed, model)` instead: the same
# diffusers/transformers classes, SDXL's layout (attention in `down_blocks.1/2`, `mid_block`,
# `up_blocks.0/1`, two text encoders, a VAE that downsamples 8x), the real CLIP tokenizers, the
# preset's scheduler, and a FaceID file in h94's original layout loaded through diffusers'
# `load_ip_adapter`, but every width is tiny and every weight random. Images are a quarter of the
# preset's size (256 px). In full mode the same cell loads the real weights.

# %%
pipe = wb.pipeline(model="hyper", adapter="faceid-plusv2")
modules = ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder")
print(
    pd.DataFrame(
        [
            {
                "component": name,
                "class": type(getattr(pipe, name)).__name__,
                "parameters (M)": round(sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6, 3),
            }
            for name in modules
        ]
    ).to_string(index=False)
)
print(
    f"\npipeline {type(pipe).__name__}; scheduler {type(pipe.scheduler).__name__} "
    f"(timestep_spacing {pipe.scheduler.config.timestep_spacing!r}); tokenizers {type(pipe.tokenizer).__name__}"
)
print(
    f"default image {pipe.default_sample_size * pipe.vae_scale_factor} px; "
    f"cross_attention_dim {pipe.unet.config.cross_attention_dim}"
)

# %% [markdown]
# In full mode SDXL's own UNet has 2.6 billion parameters; the `unet` row above then counts
# **3.3 billion**, because loading the adapter adds its modules to the UNet (the ID projection and
# resampler, `to_k_ip`/`to_v_ip` in every `attn2`, and the FaceID LoRA): 3.311 B measured at full
# size (`bench/results/h200_full_size_memory.md`). `cross_attention_dim` is 2048 (the two text
# encoders' 768 + 1280 hidden states side by side); the tiny UNet has about 9 million parameters
# and 64.
#
# **GPU memory (full mode).** Measured on full-size shapes in fp16 at 1024 px (`bench/full_size.py`):
# the weights of SDXL + Plus v2 (UNet with the adapter, both text encoders, ViT-H, VAE) take
# 9.2 GiB; the denoising steps peak at about 10.3 GiB, and decoding at 14.75 GiB, because SDXL's VAE
# decodes in float32. A Colab T4 has about 15 GiB, too tight for that, so there `wb.pipeline()`
# loads the fp16-fix VAE (`madebyollin/sdxl-vae-fp16-fix`), which decodes in float16 (about 12 GiB,
# estimated from the numbers above) and keeps everything on the GPU; only a GPU too small even for
# that gets `pipe.enable_model_cpu_offload()`: each module sits on the GPU only while it runs (peak
# 9.9 GiB, about 3x slower). `wb.describe()` printed which was chosen and why
# (`fastface_lite/sdxl/gpu_plan.py`). VAE slicing and tiling do not help a single 1024 px image
# (tiling starts above the VAE's 1024 px sample size).
#
# ## IP-Adapter FaceID and FaceID Plus v2
#
# Both adapters condition SDXL on a face **without training on the person**: a face model embeds
# the photo, and the adapter turns that embedding into **4 ID tokens** that every cross-attention
# layer of the UNet attends to, next to the 77 text tokens.
#
# | | FaceID (`ip-adapter-faceid_sdxl.bin`) | FaceID Plus v2 (`ip-adapter-faceid-plusv2_sdxl.bin`) |
# |---|---|---|
# | input | ArcFace ID embedding (512-d) | the same, plus CLIP ViT-H/14 hidden states of the aligned face crop (257 x 1280) |
# | projection | MLP 512 -> 1024 -> 4 x 2048, LayerNorm | the same MLP, whose 4 tokens are the queries of a 4-layer perceiver resampler over the CLIP states; v2 adds the MLP tokens back (shortcut) |
# | UNet | `to_k_ip`, `to_v_ip` in every `attn2`, and a LoRA on the UNet's attention layers | the same |
#
# The identity comes from a face model run on a real photo: insightface `buffalo_l` (512-d
# ArcFace, what the adapters were trained on) in full mode, dlib's 128-d descriptor in tiny mode
# (the tiny adapter takes 128-d). Plus v2 also needs the face **aligned** to ArcFace's template (the
# five reference points of an aligned face: eye centres, nose tip, mouth corners; a similarity
# transform maps the detected face's five keypoints onto them) at 224 px for CLIP. A *perceiver
# resampler* (table above) is a small stack of cross-attention layers in which a fixed number of
# query tokens, here the 4 ID tokens, read from a longer sequence, here CLIP's 257 hidden states. Like the reference implementation we pass CLIP the crop in **BGR** channel
# order (what insightface works in): a quirk, kept for fidelity.

# %%
import matplotlib.pyplot as plt
from PIL import Image

from fastface_lite.faces.analyzer import FaceAnalyzer
from fastface_lite.faces.photos import face_path
from fastface_lite.sdxl.adapter import id_inputs

analyzer = FaceAnalyzer("dlib" if wb.tiny else "insightface")
photo = Image.open(face_path("astronaut")).convert("RGB")
face = analyzer.largest(photo)
crop = face.aligned_crop(photo, size=224, bgr=True)
inputs = id_inputs(pipe, face.embedding, crop)
print(face)
print("ip_adapter_image_embeds:", [tuple(e.shape) for e in inputs.image_embeds], " (negative/positive, images, D)")
print("id_clip_embeds:", tuple(inputs.clip_embeds.shape), " (negative/positive, images, CLIP tokens, CLIP width)")
print("negative ID embedding all zeros:", bool((inputs.image_embeds[0][0] == 0).all()))

# %%
fig, axes = plt.subplots(1, 2, figsize=(5.4, 2.8), gridspec_kw={"width_ratios": [1, 0.5]})
axes[0].imshow(photo)
x0, y0, x1, y1 = face.bbox
axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
axes[0].set_title(f"astronaut.jpg: {analyzer.backend}, {face.embedding.shape[0]}-d", fontsize=9)
axes[1].imshow(crop[..., ::-1])  # shown as RGB; CLIP receives the BGR array
axes[1].set_title("aligned 224 px crop\n(for CLIP, Plus v2)", fontsize=9)
for ax in axes:
    ax.axis("off")
wb.save(fig, "01_identity")
plt.show()

# %% [markdown]
# Every input comes as a **(negative, positive)** pair, diffusers' convention: "no ID" is the
# all-zero embedding and the CLIP hidden states of an all-zero image. The pipeline hands the
# negative to the guidance branches that must not see the identity (below).
#
# ### From the embedding to 4 ID tokens
#
# `anatomy.id_token_parts` runs the pipeline's projection layer
# (`unet.encoder_hid_proj.image_projection_layers[0]`) step by step. The MLP maps the embedding to
# 4 tokens of `cross_attention_dim`; Plus v2's perceiver resampler lets those 4 tokens attend over
# the CLIP hidden states of the crop, and the v2 **shortcut** adds the MLP tokens back:
# `tokens = mlp + shortcut_scale * resampler` (scale 1.0). Without the shortcut (Plus v1) the
# identity would reach the UNet only through what the resampler keeps of it.

# %%
import torch

from fastface_lite.sdxl.adapter import adapter_info
from fastface_lite.workbook.anatomy import id_token_parts

parts = id_token_parts(pipe, inputs)
print(f"adapter_info: {adapter_info(pipe)}  (ID tokens, ID embedding size)")
print(f"ID embedding {tuple(inputs.image_embeds[0][1].shape)} -> MLP -> {tuple(parts.mlp.shape)}")
print(f"CLIP hidden states {tuple(parts.clip_states.shape)} -> resampler (4 queries) -> {tuple(parts.resampler.shape)}")
print(
    f"shortcut {parts.shortcut}, scale {parts.shortcut_scale}: tokens {tuple(parts.tokens.shape)}"
    f" = mlp + scale * resampler: {torch.allclose(parts.tokens, parts.mlp + parts.shortcut_scale * parts.resampler)}"
)
print("norm per token, MLP part:      ", parts.mlp.float().norm(dim=-1).squeeze(0).numpy().round(3))
print("norm per token, resampler part:", parts.resampler.float().norm(dim=-1).squeeze(0).numpy().round(3))

# %% [markdown]
# Plain FaceID has the MLP only: the 4 tokens are a function of the embedding alone, so only what
# the face model keeps of the photo reaches the UNet; Plus v2 adds CLIP's view of the face crop.
# (Tiny twin shown; in full mode `wb.pipeline(adapter="faceid")` loads the real file, another
# pipeline's worth of GPU memory, so the cell skips it.)

# %%
if wb.tiny:
    faceid_pipe = ff.tiny_pipeline(adapter="faceid", seed=wb.seed)
    faceid_inputs = id_inputs(faceid_pipe, face.embedding)  # no crop needed
    plain = id_token_parts(faceid_pipe, faceid_inputs)
    print(
        f"FaceID: ID embedding {tuple(faceid_inputs.image_embeds[0][1].shape)} -> MLP -> {tuple(plain.mlp.shape)}; "
        f"resampler: {plain.resampler}; tokens = MLP tokens: {torch.equal(plain.tokens, plain.mlp)}"
    )
else:
    print("full mode: skipped, it would load a second SDXL; wb.pipeline(adapter='faceid') loads the real file")

# %% [markdown]
# ### The FaceID LoRA
#
# Both FaceID files also carry a LoRA (rank 128 in the real files, 4 in the tiny ones) that
# diffusers loads as the peft adapter `faceid_0`. It sits on the query, key, value and output
# projections of **every** attention layer of the UNet: the self-attentions (`attn1`) and the
# cross-attentions (`attn2`), not on the adapter's own `to_k_ip`/`to_v_ip`. (SDXL has 70 of each.)
# It lives in the UNet, so it is active in all three guidance branches, the "no ID" ones included.

# %%
from fastface_lite.workbook.anatomy import lora_layers

lora = pipe.unet.peft_config["faceid_0"]
print(f"peft adapter 'faceid_0': rank {lora.r}, alpha {lora.lora_alpha}")
pd.DataFrame(lora_layers(pipe.unet)).rename_axis("projection")

# %% [markdown]
# Its weight is a per-call value, `FastFaceConfig.faceid_lora_scale` (default 1.0; the reference
# uses 0.8 or 0.6 in places). The pipeline passes it to the UNet as `cross_attention_kwargs["scale"]`
# for that call only, so the pipeline keeps no hidden LoRA state: a call at 1.0 after a call at 0.0
# gives exactly what the first call at 1.0 gave. Setting it through `cross_attention_kwargs`
# yourself is refused, so there is one place for it.

# %%
prompt = "a photo of a person reading in a park"
baseline = ff.FastFaceConfig.preset("baseline")
latents = {}
for label, scale in (("1.0", 1.0), ("0.0", 0.0), ("1.0 again", 1.0)):
    out = pipe(
        prompt=prompt,
        fastface=baseline.replace(faceid_lora_scale=scale),
        generator=wb.generator(),
        output_type="latent",
        **inputs.call_kwargs(),
    )
    latents[label] = out.images
print("LoRA 0.0 vs 1.0, max |latent difference|:", round(float((latents["0.0"] - latents["1.0"]).abs().max()), 3))
print("second call at 1.0 identical to the first:", torch.equal(latents["1.0 again"], latents["1.0"]))
try:
    pipe(prompt=prompt, fastface=baseline, cross_attention_kwargs={"scale": 0.5}, **inputs.call_kwargs())
except ValueError as err:
    print("cross_attention_kwargs={'scale': 0.5}:", err)

# %% [markdown]
# ### Decoupled cross-attention
#
# Inside every `attn2` the image features ask **one** query and get **two** answers: one from the
# text tokens (the layer's own `to_k`/`to_v` on the 77 prompt states) and one from the ID tokens
# (the adapter's `to_k_ip`/`to_v_ip` on the 4 tokens). Each is a softmax attention of its own, and
# the outputs are **added**, the ID one weighted by the adapter scale s (0.8 by default,
# `FastFaceConfig.ip_adapter_scale`):
#
# `out = to_out( softmax(Q K_text^T / sqrt(d)) V_text + s * softmax(Q K_ip^T / sqrt(d)) V_ip )`
#
# The ID probabilities, shape (batch, heads, positions, 4), are what FastFace's attention
# manipulation rewrites (notebook 02). `anatomy.decoupled_attention` computes one layer by hand;
# it matches diffusers' processor (scale 1.0 in the stock processor):

# %%
from fastface_lite.workbook.anatomy import decoupled_attention

attn = pipe.unet.get_submodule("up_blocks.0.attentions.0.transformer_blocks.0.attn2")
weight = next(attn.parameters())
text_states = pipe.encode_prompt(prompt, device=weight.device, do_classifier_free_guidance=False)[0]
features = torch.randn(1, 64, attn.to_q.in_features, generator=wb.generator()).to(weight)  # an 8 x 8 grid, random
id_tokens = parts.tokens.to(weight)
halves = decoupled_attention(attn, features, text_states, id_tokens, ip_scale=1.0)
with torch.no_grad():
    stock = attn(features, encoder_hidden_states=(text_states, [id_tokens[:, None]]))
print(f"{attn.heads} heads; text K/V from {tuple(text_states.shape)}, ID K/V from {tuple(id_tokens.shape)}")
print(
    f"text part {tuple(halves.text.shape)} + s * ID part {tuple(halves.id.shape)}; "
    f"ID probabilities {tuple(halves.id_probs.shape)}, "
    f"rows sum to 1: {torch.allclose(halves.id_probs.sum(-1), torch.ones(1).to(weight))}"
)
print(
    "equals diffusers' IPAdapterAttnProcessor2_0:", torch.allclose(halves.output, stock, atol=1e-5 if wb.tiny else 1e-2)
)

# %% [markdown]
# ## DCG: three branches per step
#
# Classifier-free guidance evaluates the UNet with and without the condition and extrapolates.
# With two conditions (text and identity) FastFace's **decoupled** CFG evaluates three branches
# per step, batched together, and combines them with two weights: `a` and `b`. Which conditions
# each branch carries depends on `dcg_type`; FastFace uses type 3 (`guidance.BRANCH_NAMES`,
# `guidance.BRANCH_CONDITIONS`):

# %%
from fastface_lite.method import dcg as dcg

combination = {
    1: "e_u + a (e_t - e_u) + b (e_ti - e_t)",
    2: "e_u + a (e_t - e_u) + b (e_i - e_u)",
    3: "e_u + a (e_i - e_u) + b (e_ti - e_i)",
}
pd.DataFrame(
    [
        {
            "dcg_type": t,
            **{
                f"branch {k}": f"{name} (text {'yes' if text else 'no'}, ID {'yes' if has_id else 'no'})"
                for k, (name, (text, has_id)) in enumerate(zip(dcg.BRANCH_NAMES[t], dcg.BRANCH_CONDITIONS[t]))
            },
            "e =": combination[t],
        }
        for t in (1, 2, 3)
    ]
).set_index("dcg_type")

# %% [markdown]
# "No text" is the negative prompt's embedding (all zeros for an empty negative prompt in SDXL);
# "no ID" is the negative ID input above. In type 3, `a` weighs the identity direction
# (e_i - e_u) and `b` the text direction given the identity (e_ti - e_i).
#
# Every combination is linear, `e = c0 e0 + c1 e1 + c2 e2`; for type 3, `(c0, c1, c2) = (1 - a,
# a - b, b)`. A branch whose coefficient is zero need not be evaluated, unless something else reads
# it. `FastFacePipeline` evaluates only what each step reads. The six variants on the tiny pipeline,
# one seed:

# %%
configs = {name: ff.FastFaceConfig.preset(name, model="hyper") for name in ff.VARIANTS}
outputs = {
    name: pipe(prompt=prompt, fastface=cfg, generator=wb.generator(), **inputs.call_kwargs())
    for name, cfg in configs.items()
}
names = dcg.BRANCH_NAMES[3]
pd.DataFrame(
    [
        {
            "variant": name,
            "UNet evaluations": out.unet_evaluations,
            **{
                f"step {i} (t={t:.0f})": ", ".join(names[k] for k in branches)
                for i, (t, branches) in enumerate(zip(out.timesteps, out.branches_per_step))
            },
        }
        for name, out in outputs.items()
    ]
).set_index("variant")

# %% [markdown]
# Why these numbers (evaluating all three branches at all 4 steps would be 12):


# %%
def why(cfg, timesteps):
    g = cfg.guidance
    steps = {
        f"(c0, c1, c2) step {i}": "({:g}, {:g}, {:g})".format(*dcg.coefficients(*dcg.weights_at(i, t, g), g.dcg_type))
        for i, t in enumerate(timesteps)
    }
    return {
        **steps,
        "rescale phi": g.rescale if g.rescale is not None else "off",
        "AM": " -> ".join(cfg.attention.transforms) or "off",
        "AM couples the batch": any(cfg.attention.couples_batch(i) for i in range(len(timesteps))),
    }


pd.DataFrame(
    [
        {"variant": name, **why(configs[name], out.timesteps), "evaluations": out.unet_evaluations}
        for name, out in outputs.items()
    ]
).set_index("variant")

# %% [markdown]
# * **baseline, AM1** (4): a = b = 1 gives (0, 0, 1): the guided prediction *is* the text+id
#   branch, so one evaluation per step, as a distilled model runs without CFG. AM1's `pow` and
#   `scale` act on each position alone, so they change nothing about which branches are needed.
# * **DCG, FastFace-AM1** (10): at steps 1 and 2 (a = 1.5, b = 3) all three coefficients are
#   non-zero: 3 evaluations. At steps 0 and 3 (a = b = 1) only text+id counts, but the **rescale**
#   (phi = 0.75) pulls the std of the result towards the mean std of branches 1 and 2, so it reads
#   the id branch too: 2 evaluations.
# * **AM2, FastFace-AM2** (12): the adaptive softmask **min-max normalises jointly over the whole
#   3-branch batch** (as the reference does), so a branch's maps depend on the other branches'
#   and all three are evaluated at every step where AM is on, even where guidance reads one.
#
# `AttentionConfig(normalize_per_branch=True)` normalises within each branch instead. That is not
# the reference's numbers, but it uncouples the branches, so AM2 falls back to what its guidance
# reads:

# %%
import dataclasses

for name in ("am2", "fastface-am2"):
    cfg = configs[name]
    per_branch = cfg.replace(attention=dataclasses.replace(cfg.attention, normalize_per_branch=True))
    out = pipe(
        prompt=prompt, fastface=per_branch, generator=wb.generator(), output_type="latent", **inputs.call_kwargs()
    )
    print(
        f"{name:13s} per-branch normalisation: {out.unet_evaluations} UNet evaluations (reference-exact: "
        f"{outputs[name].unet_evaluations}), branches per step {out.branches_per_step}"
    )

# %% [markdown]
# Skipping a branch changes nothing in the result: with `evaluate_all_branches=True` the pipeline
# evaluates all three at every step, as the reference does, and the image is the same up to float
# rounding.

# %%
for name in ("dcg", "fastface-am1"):
    skipped = pipe(
        prompt=prompt, fastface=configs[name], generator=wb.generator(), output_type="latent", **inputs.call_kwargs()
    )
    full = pipe(
        prompt=prompt,
        fastface=configs[name],
        generator=wb.generator(),
        output_type="latent",
        evaluate_all_branches=True,
        **inputs.call_kwargs(),
    )
    print(
        f"{name}: {skipped.unet_evaluations} vs {full.unet_evaluations} evaluations, "
        f"same latents (within 1e-5): {torch.allclose(skipped.images, full.images, atol=1e-5)}"
    )

# %% [markdown]
# ## The six variants' images
#
# Same seed, same identity, same prompt. **In tiny mode these are noise**: random weights draw
# no person, and by eye the six panels look alike. The second row shows what each variant changed
# relative to the baseline, pixel by pixel. The tiny random UNet hardly responds to its
# conditions, so the branches differ little and the guidance variants (DCG) barely move the
# picture, while AM2's softmask, which rewrites the ID attention itself, moves it most. With the
# real weights the branches differ a lot and DCG changes the picture clearly; in full mode the
# first row shows the astronaut's identity under each variant.

# %%
import numpy as np

pixels = {name: np.asarray(out.images[0], dtype=np.float32) / 255 for name, out in outputs.items()}
change = {name: np.abs(p - pixels["baseline"]).mean(-1) for name, p in pixels.items()}
top = max(c.max() for c in change.values())
fig, axes = plt.subplots(2, len(outputs) + 1, figsize=(2.0 * (len(outputs) + 1) + 0.6, 4.8), layout="constrained")
axes[0, 0].imshow(photo)
axes[0, 0].set_title("identity", fontsize=9)
for col, (name, out) in enumerate(outputs.items(), start=1):
    axes[0, col].imshow(out.images[0])
    axes[0, col].set_title(f"{name}\n{out.unet_evaluations} UNet evals", fontsize=9)
    shown = axes[1, col].imshow(change[name], cmap="magma", vmin=0, vmax=top)
    axes[1, col].set_title(f"mean |change| {change[name].mean():.3f}", fontsize=8)
axes[1, 0].text(0.5, 0.5, "|variant - baseline|\nper pixel\n(0..1 scale)", ha="center", va="center", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
fig.colorbar(shown, ax=axes[1, :].tolist(), shrink=0.8)
fig.suptitle(
    f"{prompt!r} · hyper, 4 steps · {wb.mode} mode" + (" (random weights: noise)" if wb.tiny else ""), fontsize=9
)
wb.save(fig, "01_variants", dpi=80)
plt.show()

# %%
print("mean |change| from the baseline, per variant:", {name: round(float(c.mean()), 3) for name, c in change.items()})

# %% [markdown]
# ## Exercises
#
# **1.** AM2's adaptive softmask normalises over the whole three-branch batch, which is why `am2`
# needs 12 UNet evaluations on Hyper-SD. With `normalize_per_branch=True` each branch is normalised
# alone. How many evaluations per 4-step image then?

# %%
my_am2_per_branch = None  # your prediction: a whole number

# %%
from dataclasses import replace

from fastface_lite.method.branches import planned_evaluations
from fastface_lite.workbook.exercises import check

per_branch = configs["am2"].replace(attention=replace(configs["am2"].attention, normalize_per_branch=True))
check(
    my_am2_per_branch,
    planned_evaluations(per_branch, model_timesteps("hyper", 4)),
    "UNet evaluations of am2 with per-branch normalisation",
    why="Without the coupling only guidance decides, and at a = b = 1 it reads e_ti alone: 1 per step.",
)

# %% [markdown]
# **2.** The last comparison above ran FastFace-AM1 with `evaluate_all_branches=True`. How many
# UNet evaluations did that call report?

# %%
my_all_branches = None  # your prediction: a whole number

# %%
check(
    my_all_branches,
    full.unet_evaluations,
    "UNet evaluations of fastface-am1 with all branches",
    why="3 branches at each of 4 steps, what the reference always runs; the package's default skips 2.",
)

# %% [markdown]
# ## What to try next
#
# * Load `adapter="faceid"` instead of Plus v2 and compare the ID-token parts (no CLIP crop).
# * Try `model="lcm"` (default weight 1.5): the baseline then needs 8 evaluations, not 4. Why?
#   (Notebook 00's cheat sheet.)
# * In full mode, change the prompt of the six-variant cell and look at which variant keeps the
#   face best.
#
# **Next**: notebook 02 looks at where the text and ID tokens attend, and what attention
# manipulation does to the ID maps; notebook 03 sweeps the guidance schedule.
