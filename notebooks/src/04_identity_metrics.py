# %% [markdown]
# # 04 · Identity metrics
#
# How do we measure whether a generated image still shows *the* person? This notebook takes the
# metrics of the evaluation protocol apart on real photos, before notebook 05 runs the protocol.
#
# * **Two face models.** dlib's 128-d descriptor (offline default) and insightface `buffalo_l`
#   (512-d ArcFace, full mode), and why scoring with a model *other* than the one the adapter is
#   conditioned on matters.
# * **Same vs different identity** on the shipped public-domain photos: what the numbers look like,
#   and why a cosine from one face model cannot be compared with a cosine from another.
# * **How the score degrades** when the face gets blurrier or smaller, and where detection fails.
# * **Detection failures**: the clear errors, and how the metrics record a failure (counted and
#   excluded, never turned into a number).
# * **The other metrics**: face size ratio and CLIP text alignment.
#
# Face-model terms (ArcFace, buffalo_l, SCRFD, HOG, det_size) are defined in the
# [glossary, docs/method.md §16](../docs/method.md#16-glossary). Every identity score here is a
# **cosine similarity** between two face embeddings: 1 for the same vector, about 0 for unrelated
# ones; what counts as "the same person" depends on the face model (below).
#
# **Runtime.** About 30 s in tiny mode on a 2-core CPU; in full mode a minute or two (insightface
# and CLIP ViT-L/14 are downloaded once, then score photos in well under a second each on any GPU).
#
# **Mode.** Everything here runs on real photos with a real face model, so the identity numbers are
# real in both modes. Tiny mode (offline, CPU, the default here) scores with dlib only and uses a
# tiny random CLIP; full mode (Colab, GPU) adds insightface `buffalo_l` as the primary face model
# and loads the real CLIP ViT-L/14.

# %%
from fastface_lite.workbook.session import setup

wb = setup(seed=0)
print(wb.describe())

# %% [markdown]
# ## Two face models
#
# A face model does two jobs: it **detects** the face (a box and five keypoints: the two eyes, the
# nose tip, the mouth corners) and it **embeds** the aligned face into a vector, so that photos of
# one person land close together.
#
# | | dlib (`face_recognition_models`) | insightface `buffalo_l` |
# |---|---|---|
# | detector | HOG + linear SVM (weak boxes double-checked by dlib's CNN detector) | SCRFD |
# | embedding | ResNet, 128-d | ArcFace ResNet-50, 512-d |
# | "same person" rule | euclidean distance of the raw descriptors < 0.6 | no official one; compare cosines |
# | role here | offline default; independent second opinion in full mode | conditions the FaceID adapter; the protocol's primary score |
#
# **Why a second, independent face model.** IP-Adapter FaceID is conditioned on the ArcFace
# embedding of the reference photo. A generator that learned to reproduce whatever ArcFace
# attends to (including its blind spots and quirks) scores well on ArcFace similarity, even where
# a person would not recognise the face. Scoring with the same model that produced the
# conditioning is like grading an exam with the answer key the student was shown. dlib's network
# was trained separately, on other data, with another loss; when both models agree that identity
# went up, that is much stronger evidence than ArcFace alone. The runner of notebook 05 stores
# both (`id_similarity` and `id_dlib_similarity`) in full mode.

# %%
from fastface_lite.faces.analyzer import FaceAnalyzer

analyzers = {"dlib": FaceAnalyzer("dlib")}
if not wb.tiny:  # full mode: ArcFace first (the protocol's number), dlib as the second opinion
    analyzers = {"insightface": FaceAnalyzer("insightface"), **analyzers}
primary = next(iter(analyzers.values()))
for name, analyzer in analyzers.items():
    print(f"{name}: {analyzer.embedding_dim}-d embedding")

# %% [markdown]
# The shipped photos (`fastface_lite/data/faces`, public domain): astronaut Eileen Collins and Grace Hopper.
# `largest()` returns the largest face as a `Face` record: box, keypoints, detector score, and the
# L2-normalised embedding.

# %%
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from fastface_lite.faces.images import load_rgb
from fastface_lite.faces.photos import face_names, face_path

photos = {name: Image.fromarray(load_rgb(face_path(name))) for name in face_names()}
faces = {name: primary.largest(photo) for name, photo in photos.items()}
for name, face in faces.items():
    print(f"{name:13s} {photos[name].width}x{photos[name].height}  {face}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 3), gridspec_kw={"width_ratios": [1, 1, 0.45, 0.45]})
for ax, (name, face) in zip(axes[:2], faces.items()):
    ax.imshow(photos[name])
    x0, y0, x1, y1 = face.bbox
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
    ax.scatter(face.kps[:, 0], face.kps[:, 1], s=10, c=["red", "red", "yellow", "cyan", "cyan"])
    ax.set_title(f"{name}: face {face.width:.0f} px wide", fontsize=9)
for ax, (name, face) in zip(axes[2:], faces.items()):
    ax.imshow(face.aligned_crop(photos[name], size=112))  # what the embedding network sees
    ax.set_title("aligned 112 px", fontsize=9)
for ax in axes:
    ax.axis("off")
wb.save(fig, "04_faces")
plt.show()

# %% [markdown]
# ## Same person vs different people
#
# We only ship one photo per person, so "same person" pairs compare a photo with a changed copy of
# itself (mirrored, darker, grayscale); "different people" compares the two photos with each other
# and the six people of insightface's sample group photo with one another (15 pairs; read in place
# from the installed package, not shown: its licence is unstated). `identity_similarity` is the
# protocol's metric: the cosine of the two L2-normalised embeddings. With dlib it also reports the
# euclidean distance of the raw descriptors, on which dlib's own 0.6 rule is defined.

# %%
import itertools

import pandas as pd
from PIL import ImageEnhance, ImageOps

from fastface_lite.evaluation.metrics import cosine_similarity, identity_similarity
from fastface_lite.faces.photos import insightface_group_photo

changes = {
    "mirrored": ImageOps.mirror,
    "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.6),
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
}
group = insightface_group_photo()
rows = []
for model, analyzer in analyzers.items():
    refs = {name: analyzer.largest(photo) for name, photo in photos.items()}
    for (name, ref), (change, edit) in itertools.product(refs.items(), changes.items()):
        score = identity_similarity(ref, edit(photos[name]), analyzer)
        rows.append((model, "same person", f"{name} vs {change}", score.similarity, score.distance))
    score = identity_similarity(refs["astronaut"], refs["grace_hopper"], analyzer)
    rows.append((model, "different people", "astronaut vs grace_hopper", score.similarity, score.distance))
    for i, (a, b) in enumerate(itertools.combinations(analyzer.analyze(group), 2)):
        distance = float(np.linalg.norm(a.raw_embedding - b.raw_embedding)) if model == "dlib" else None
        rows.append(
            (
                model,
                "different people",
                f"group photo pair {i + 1}",
                cosine_similarity(a.embedding, b.embedding),
                distance,
            )
        )
pairs = pd.DataFrame(rows, columns=["model", "kind", "pair", "cosine", "dlib_distance"])
pairs[~pairs["pair"].str.startswith("group")]

# %%
pairs.groupby(["model", "kind"], sort=False)[["cosine", "dlib_distance"]].agg(["min", "mean", "max"])

# %%
fig, axes = plt.subplots(1, len(analyzers) + 1, figsize=(3.6 * (len(analyzers) + 1), 3), squeeze=False)
colors = {"same person": "tab:green", "different people": "tab:red"}
for ax, model in zip(axes[0], analyzers):
    for y, (kind, sel) in enumerate(pairs[pairs["model"] == model].groupby("kind", sort=False)):
        ax.scatter(
            sel["cosine"], np.full(len(sel), y) + np.linspace(-0.15, 0.15, len(sel)), c=colors[kind], s=18, label=kind
        )
    ax.set_yticks([0, 1], list(colors))
    ax.set_ylim(-0.5, 1.5)
    ax.set_title(f"{model}: cosine similarity", fontsize=9)
dlib_pairs = pairs[pairs["model"] == "dlib"]
ax = axes[0, -1]
for y, (kind, sel) in enumerate(dlib_pairs.groupby("kind", sort=False)):
    ax.scatter(sel["dlib_distance"], np.full(len(sel), y) + np.linspace(-0.15, 0.15, len(sel)), c=colors[kind], s=18)
ax.axvline(0.6, color="k", ls="--", lw=1)
ax.text(0.61, 1.35, "dlib's rule: same person below 0.6", fontsize=7)
ax.set_yticks([0, 1], list(colors))
ax.set_ylim(-0.5, 1.5)
ax.set_title("dlib: euclidean distance (raw 128-d)", fontsize=9)
fig.tight_layout()
wb.save(fig, "04_same_vs_different")
plt.show()

# %% [markdown]
# What to read from this:
#
# * Both numbers separate the two groups, but **on dlib's scale the cosines of different people
#   are high** (about 0.8-0.9): dlib's descriptors all sit in a narrow cone, so a dlib cosine of
#   0.9 is *not* "90 % the same person". Its distance with the 0.6 threshold is the scale dlib was
#   trained for.
# * ArcFace (full mode) spreads them out: unrelated people land near 0 and photos of one person
#   usually well above that. **Never compare a cosine from one face model with a cosine from
#   another**, and never compare an identity score across papers that used different face models;
#   compare variants scored by the same model on the same images.
# * Edits that keep the person (mirroring, lighting, colour) move the embedding a little, not to
#   zero distance: real photos of one person vary more than this, so "same person" scores of
#   generated images are lower still.

# %% [markdown]
# ## How the score degrades: blur and face size
#
# Generated faces are often small (a person in a landscape) or soft. Two experiments on each
# photo, scored against the face of the untouched photo:
#
# * **downscale** the whole photo step by step (the detector sees a smaller face);
# * **blur** it with a Gaussian of growing radius (sigma in pixels of the full-size photo).
#
# A detection failure (no face found, so no score) is marked with an x on its own strip under
# each plot, never inside the similarity axis: it is not a low score. The grey line is the mean
# similarity of *different* people from the section above.

# %%
from PIL import ImageFilter


def downscale(im, s):
    return im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)


scales = [1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1]
sigmas = [0, 1, 2, 3, 4, 6, 8, 12]
rows = []
for model, analyzer in analyzers.items():
    for name, photo in photos.items():
        ref = analyzer.largest(photo)
        for s in scales:
            score = identity_similarity(ref, downscale(photo, s), analyzer)
            rows.append((model, name, "downscale", s, ref.width * s, score.similarity, score.detection_failure))
        for sigma in sigmas:
            score = identity_similarity(ref, photo.filter(ImageFilter.GaussianBlur(sigma)), analyzer)
            rows.append((model, name, "blur", sigma, ref.width, score.similarity, score.detection_failure))
curves = pd.DataFrame(rows, columns=["model", "photo", "degradation", "amount", "face_px", "similarity", "failed"])
curves.set_index(["degradation", "amount", "model", "photo"])["similarity"].unstack(["model", "photo"])

# %%
different = pairs[pairs["kind"] == "different people"].groupby("model")["cosine"].mean()
fig, grid_axes = plt.subplots(
    2, 2, figsize=(9.5, 4.2), sharex="col", gridspec_kw={"height_ratios": [4, 1]}, layout="constrained"
)
axes, strips = grid_axes[0], grid_axes[1]  # similarity on top, failures on their own strip below
series = list(curves.groupby(["model", "photo"], sort=False))
for row, ((model, name), sel) in enumerate(series):
    style = dict(marker="o", ms=4, ls="-" if model == "dlib" else "--", label=f"{name} ({model})")
    down, blur = sel[sel["degradation"] == "downscale"], sel[sel["degradation"] == "blur"]
    (line,) = axes[0].plot(down["face_px"], down["similarity"], **style)
    axes[1].plot(blur["amount"], blur["similarity"], **style)
    for strip, part, x in ((strips[0], down, "face_px"), (strips[1], blur, "amount")):
        failed = part[part["failed"]]  # no score: an x on this series' line of the strip
        strip.scatter(failed[x], np.full(len(failed), row), marker="x", color=line.get_color())
for strip in strips:
    strip.set_ylim(-0.7, len(series) - 0.3)
    strip.set_yticks([])
    strip.set_ylabel("no face\nfound", fontsize=9, rotation=0, ha="right", va="center")
for ax in axes:
    for model, level in different.items():
        ax.axhline(level, color="grey", lw=1, ls=":" if model == "dlib" else "-.")
        ax.annotate(
            f"{model}: mean of different people",
            (1.0, level),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=7,
            color="grey",
        )
    ax.set_ylim(min(different.min(), curves["similarity"].min()) - 0.05, 1.01)
axes[0].set_xscale("log")
strips[0].set_xticks([10, 20, 50, 100, 200], ["10", "20", "50", "100", "200"])
strips[0].minorticks_off()
axes[0].set_xlim(curves["face_px"].min() * 0.8, curves["face_px"].max() * 1.25)
axes[1].set_xlim(-0.5, max(sigmas) + 0.5)
strips[0].set_xlabel("face width after downscaling (px, log scale)")
axes[0].set_ylabel("identity similarity (cosine)")
strips[1].set_xlabel("Gaussian blur sigma (px)")
axes[0].set_title("smaller faces", fontsize=11)
axes[1].set_title("blurrier faces", fontsize=11)
axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
wb.save(fig, "04_degradation")
plt.show()

# %%
found = curves[(curves["degradation"] == "downscale") & ~curves["failed"]]
smallest = found.groupby(["model", "photo"], sort=False)["face_px"].min().round(0)
print("smallest face still found (px wide):", smallest.to_dict())
blur = curves[curves["degradation"] == "blur"]
print(
    "first blur sigma that loses the face:",
    blur[blur["failed"]].groupby(["model", "photo"], sort=False)["amount"].min().to_dict(),
)

# %% [markdown]
# What to read from this:
#
# * The score falls smoothly while the face is still found, then **drops off a cliff: detection
#   fails** (dlib's HOG detector, upsampling once, finds faces down to roughly 25 px; insightface's
#   SCRFD usually finds smaller ones). In an evaluation those images are failures, not low scores.
# * Before it is lost, a strongly blurred face already comes close to the level of two
#   *different* people (the grey line): a blurry generated face can look like "identity lost"
#   to the metric although nothing but sharpness changed.
# * **Blur is measured in pixels, so it hurts small faces first**: the astronaut's face (91 px)
#   is lost at a blur that Grace Hopper's face (187 px) survives.
# * Hence the protocol reports **face size** and the **failure count** beside the mean: a variant
#   that draws larger faces gets higher identity scores for free, and one whose faces are lost
#   can look fine on the mean of the few that were found.

# %% [markdown]
# ## Detection failures
#
# A face model can be handed images with no usable face: an empty background, noise (what the
# tiny pipeline generates), or an image too small to hold one. `FaceAnalyzer.largest` raises an
# error that says what was wrong and what to do; all of them derive from `FaceError`.

# %%
from fastface_lite.errors import FaceError

rng = np.random.default_rng(0)
bad_images = {
    "blank": np.full((256, 256, 3), 200, np.uint8),
    "noise": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
    "tiny": np.asarray(photos["astronaut"].resize((24, 24))),
}
for label, image in bad_images.items():
    try:
        primary.largest(image, name=f"the {label} image")
    except FaceError as err:
        print(f"{label}: {type(err).__name__}: {err}\n")

# %% [markdown]
# The metrics do not raise for these: they return a record that says the face was missing, and
# which side. In a results table the score becomes NaN and the failure flag True, so a summary
# **counts the failure and leaves it out of the mean** (a similarity of 0 would silently drag the
# mean down and mix "lost the face" with "drew someone else"). An unreadable file (wrong path,
# corrupt JPEG) still raises: that is a bug in the run, not a property of the image.

# %%
from fastface_lite.evaluation.metrics import aggregate, face_size_ratio

score = identity_similarity(faces["astronaut"], bad_images["noise"], primary)
print("detection_failure:", score.detection_failure, "| failed side:", score.failed)
print("as a table row:", {k: v for k, v in score.as_record().items() if k in ("id_similarity", "id_detection_failure")})
print(face_size_ratio(bad_images["blank"], primary))

generated = {
    "mirrored": changes["mirrored"](photos["astronaut"]),
    "darker": changes["darker"](photos["astronaut"]),
    "noise": bad_images["noise"],
}
table = pd.DataFrame(
    [{"image": k, **identity_similarity(faces["astronaut"], im, primary).as_record()} for k, im in generated.items()]
)
aggregate(table.assign(variant="demo"), by=["variant"], metrics=["id_similarity"])[["metric", "mean", "n", "failures"]]

# %% [markdown]
# ## The other metrics
#
# **Face size ratio**: the area of the largest face box over the image area. It is not a quality
# score; it explains identity scores (larger faces score higher, see above) and shows whether a
# variant changes the framing. Cropping closer to the face raises it:

# %%
astronaut = photos["astronaut"]
crop = astronaut.crop((100, 0, 356, 256))  # a 256 px square around the face
for label, image in {
    "astronaut, full photo": astronaut,
    "astronaut, cropped to the face": crop,
    "grace_hopper": photos["grace_hopper"],
}.items():
    print(f"{label:32s} face size ratio {face_size_ratio(image, primary).ratio:.3f}")

# %% [markdown]
# **CLIP score** (text alignment): the cosine between CLIP's embedding of the image and of the full
# prompt (no x100, no clipping), so it tells whether the picture still follows the prompt once the
# identity is pushed harder. The protocol uses **CLIP ViT-L/14** (and ViT-B/32) in full mode.
#
# In tiny mode `ClipScorer.tiny()` is a **tiny CLIP with random weights**: it runs exactly the
# same tokenisation, preprocessing and normalisation, but **its scores are meaningless numbers**,
# with nothing to say about the image or the prompt.

# %%
from fastface_lite.evaluation.metrics import ClipScorer

clip = ClipScorer.tiny(seed=0) if wb.tiny else ClipScorer("openai/clip-vit-large-patch14", device=wb.device)
prompts = ["a photo of an astronaut in front of a flag", "a watercolor painting of a cat"]
for prompt, value in zip(prompts, clip.scores([astronaut] * len(prompts), prompts)):
    print(f"{value:+.3f}  {prompt}")

# %% [markdown]
# With real CLIP ViT-L/14 the first prompt scores clearly higher than the second; with the tiny
# random model any order is chance.
#
# ## Exercises
#
# **1.** Blur the astronaut photo with a Gaussian of sigma = 2 px and score it with dlib against the
# untouched photo. Predict the cosine similarity (two decimals).

# %%
my_blur_score = None  # your prediction, a cosine between 0 and 1

# %%
from fastface_lite.workbook.exercises import check

blurred = identity_similarity(
    analyzers["dlib"].largest(photos["astronaut"]),
    photos["astronaut"].filter(ImageFilter.GaussianBlur(2)),
    analyzers["dlib"],
)
check(
    my_blur_score,
    round(float(blurred.similarity), 2),
    "dlib cosine of the astronaut blurred at sigma 2 px",
    why="a mild blur costs little while the face is still found; the table above has the whole curve.",
    abs_tol=0.05,
)

# %% [markdown]
# **2.** A group of 10 generated images has identity scores for 8 and 2 detection failures. How many
# images does its mean average over (`n` in the summary)?

# %%
my_n = None  # your prediction: a whole number

# %%
ten = pd.DataFrame({"variant": "demo", "id_similarity": [0.6] * 8 + [np.nan] * 2})
check(
    my_n,
    int(aggregate(ten, by=["variant"], metrics=["id_similarity"])["n"].iloc[0]),
    "images behind the mean",
    why="failures are counted (failures = 2) and left out of the mean, never scored as 0.",
)

# %% [markdown]
# ## What to try next
#
# * Score a photo of yourself against the shipped ones: where does your "different people" cosine
#   fall relative to the grey lines?
# * Repeat the downscale experiment with insightface in full mode: how much smaller a face does
#   SCRFD find than dlib's HOG detector?
# * Crop a generated image closer to the face and watch the face size ratio and the score move
#   together.
#
# **Next**: notebook 05 runs these metrics over a grid of identities x prompts x variants, with
# per-image seeds, failure counts and bootstrap intervals.
