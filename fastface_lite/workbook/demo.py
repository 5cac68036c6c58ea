"""`fastface demo`: the six FastFace variants side by side on the offline tiny pipeline.

The tiny generator has random weights, so its pictures are noise; what the demo shows is the
mechanics: a real identity (dlib's descriptor of a real photo) drives the adapter, and each
variant's UNet evaluations, time and distance from the baseline are measured on one seed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fastface_lite.faces.photos import face_path
from fastface_lite.method.config import VARIANTS, FastFaceConfig


def identity_inputs(pipe, face: str, backend: str = "dlib", bgr: bool = False):
    """(ID inputs for ``pipe``, photo path) from a shipped face name or a photo path.

    backend: the face model ("dlib", 128-d, offline; "insightface", 512-d). bgr: hand the Plus v2
    CLIP crop in BGR channel order, as the reference does.
    """
    from fastface_lite.faces.analyzer import FaceAnalyzer
    from fastface_lite.sdxl.adapter import face_id_inputs

    photo = _photo(face)
    found = FaceAnalyzer(backend=backend).largest(photo)
    return face_id_inputs(pipe, found, photo, bgr=bgr), photo


def _photo(face: str) -> Path:
    return Path(face) if Path(face).is_file() else face_path(face)


def run_variants(pipe, inputs, prompt: str, seed: int, model: str = "hyper") -> list[dict]:
    """Run every preset once on the same seed; returns one row per variant (latents included)."""
    rows = []
    for name in VARIANTS:
        cfg = FastFaceConfig.preset(name, model=model)
        start = time.perf_counter()
        out = pipe(
            prompt=prompt,
            fastface=cfg,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
            **inputs.call_kwargs(),
        )
        rows.append(
            {
                "variant": name,
                "unet_evaluations": out.unet_evaluations,
                "seconds": time.perf_counter() - start,
                "latents": out.images,
            }
        )
    baseline = rows[0]["latents"]
    for row in rows:
        row["max_diff_vs_baseline"] = float((row["latents"] - baseline).abs().max())
    return rows


def run_demo(
    out_dir="runs/demo",
    prompt="a photo of a person reading in a park",
    face="astronaut",
    seed=0,
    adapter="faceid-plusv2",
) -> list[dict]:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone
    from PIL import Image

    from fastface_lite.inspect.plots import save_figure
    from fastface_lite.sdxl.tiny import tiny_pipeline

    _photo(face)  # a wrong name fails here, before anything is built
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print("mode: tiny (offline, random weights: the images are noise; the mechanics are real)")
    pipe = tiny_pipeline(adapter=adapter, seed=seed)
    pipe.set_progress_bar_config(disable=True)
    inputs, photo = identity_inputs(pipe, face)
    rows = run_variants(pipe, inputs, prompt, seed)

    header = "| variant | UNet evaluations (all branches: 12) | seconds | max |latent - baseline| |"
    lines = [header, "|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['unet_evaluations']} | {r['seconds']:.2f} | {r['max_diff_vs_baseline']:.4f} |"
        )
    table = "\n".join(lines)
    print(f"identity: {photo.name}; prompt: {prompt!r}; seed {seed}; adapter {adapter}\n{table}")
    (out_dir / "demo_variants.md").write_text(table + "\n")
    with open(out_dir / "demo_variants.csv", "w") as f:
        f.write("variant,unet_evaluations,seconds,max_diff_vs_baseline\n")
        for r in rows:
            f.write(f"{r['variant']},{r['unet_evaluations']},{r['seconds']:.4f},{r['max_diff_vs_baseline']:.6f}\n")

    # constrained layout keeps the suptitle above the two-line column titles (tight_layout did not)
    fig = Figure(figsize=(2.2 * (len(rows) + 1), 3.0), layout="constrained")
    axes = fig.subplots(1, len(rows) + 1)
    axes[0].imshow(Image.open(photo).convert("RGB"))
    axes[0].set_title("identity", fontsize=10)
    for ax, r in zip(axes[1:], rows, strict=True):
        ax.imshow(pipe.latents_to_images(r["latents"])[0])
        ax.set_title(f"{r['variant']}\n{r['unet_evaluations']} UNet evals", fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"tiny pipeline (random weights) - {prompt}", fontsize=11)
    save_figure(fig, out_dir / "demo_variants.png")
    attention_figures(pipe, inputs, prompt, seed, out_dir)
    print(f"wrote {out_dir / 'demo_variants.png'}, {out_dir / 'demo_variants.md'}, {out_dir / 'demo_variants.csv'}")
    return rows


def attention_figures(pipe, inputs, prompt: str, seed: int, out_dir: Path) -> list[Path]:
    """Record a FastFace-AM2 run and save where text and ID tokens attend, raw vs AM."""
    from fastface_lite.inspect.plots import raw_vs_used, token_step_grid
    from fastface_lite.inspect.trace import trace

    with trace(pipe) as tr:
        image = pipe(
            prompt=prompt,
            fastface=FastFaceConfig.preset("fastface-am2"),
            generator=torch.Generator().manual_seed(seed),
            **inputs.call_kwargs(),
        ).images[0]
    words = [w for w in ("person", "park") if w in tr.words] or tr.words[:2]
    paths = [out_dir / "demo_text_tokens.png", out_dir / "demo_id_raw_vs_am.png"]
    token_step_grid(tr, words, image, kind="text", block="up_blocks.0", path=paths[0])
    raw_vs_used(tr, token=1, image=image, step=1, path=paths[1])
    print("attention maps: " + ", ".join(str(p) for p in paths))
    return paths
