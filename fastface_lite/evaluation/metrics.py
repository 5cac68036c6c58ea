"""The evaluation metrics of docs/method.md §14: identity similarity, CLIP text alignment, face size, and a
bootstrap summary per group.

Every per-image metric returns a small record that says whether it could be computed. An image
without a detectable face is a *detection failure*: it is counted and excluded from means, never
turned into a number (a similarity of 0 would silently drag averages down).

Caveat worth teaching: in full mode the identity metric (insightface buffalo_l, ArcFace) belongs
to the same model family that conditions the adapter, so it is not an independent judge. The
dlib backend (`FaceAnalyzer("dlib")`) gives a second opinion from an unrelated network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fastface_lite.errors import ImageTooSmallError, NoFaceError
from fastface_lite.faces.analyzer import DLIB_SAME_PERSON_DISTANCE, Face, FaceAnalyzer
from fastface_lite.faces.images import ImageInput, describe, load_rgb

__all__ = [
    "IdentityScore",
    "identity_similarity",
    "FaceSizeRatio",
    "face_size_ratio",
    "ClipScorer",
    "aggregate",
    "DEFAULT_METRICS",
]

FaceOrImage = Face | ImageInput

# ------------------------------------------------------------------------------------ identity


@dataclass(frozen=True)
class IdentityScore:
    """Identity similarity between a reference face and a generated image.

    Attributes:
        similarity: cosine of the two L2-normalised embeddings, in [-1, 1]; None on failure.
        detection_failure: True when either image had no detectable face.
        failed: which side(s) failed: () or a subset of ("reference", "generated").
        reason: the error message(s) behind a failure, else "".
        backend: the analyzer's backend ("insightface" or "dlib").
        distance: dlib only: euclidean distance of the raw 128-d descriptors.
        same_person: dlib only: distance < 0.6, dlib's own decision rule.
        distance_similarity: dlib only: 1 - distance (1 for identical descriptors; below 0.4
            means "different people" by dlib's rule).
    """

    similarity: float | None
    detection_failure: bool
    failed: tuple[str, ...] = ()
    reason: str = ""
    backend: str = ""
    distance: float | None = None
    same_person: bool | None = None
    distance_similarity: float | None = None

    def as_record(self, prefix: str = "id_") -> dict:
        """Flat columns for a results table; failures become NaN so `aggregate` counts them."""
        nan = float("nan")
        return {
            f"{prefix}similarity": nan if self.similarity is None else self.similarity,
            f"{prefix}detection_failure": self.detection_failure,
            f"{prefix}distance": nan if self.distance is None else self.distance,
            f"{prefix}same_person": nan if self.same_person is None else float(self.same_person),
            f"{prefix}distance_similarity": (nan if self.distance_similarity is None else self.distance_similarity),
        }


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two (D,) vectors, computed in float64 after L2-normalising both."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"Embeddings differ in length ({a.shape[0]} vs {b.shape[0]}): were they made by different face backends?"
        )
    return float(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)))


def _face_or_failure(image: FaceOrImage, analyzer: FaceAnalyzer) -> tuple[Face | None, str]:
    if isinstance(image, Face):
        return image, ""
    try:
        return analyzer.largest(image), ""
    except (NoFaceError, ImageTooSmallError) as err:  # no face to score; unreadable files raise
        return None, str(err)


def identity_similarity(reference: FaceOrImage, generated: FaceOrImage, analyzer: FaceAnalyzer) -> IdentityScore:
    """Identity similarity (docs/method.md §14) of the largest face in each image.

    Args:
        reference: the identity photo, or its `Face` (pass the Face to detect it only once).
        generated: the generated image, or its `Face`.
        analyzer: buffalo_l in full mode (512-d ArcFace, the protocol's number); dlib gives
            128-d descriptors plus dlib's distance and 0.6 decision rule.

    Returns:
        An `IdentityScore`; on a detection failure `similarity` is None and the failed side(s)
        are named. Unreadable files still raise `UnreadableImageError`.
    """
    faces, reasons, failed = [], [], []
    for side, image in (("reference", reference), ("generated", generated)):
        face, reason = _face_or_failure(image, analyzer)
        faces.append(face)
        if face is None:
            failed.append(side)
            reasons.append(f"{side}: {reason}")
    if failed:
        return IdentityScore(None, True, tuple(failed), "; ".join(reasons), analyzer.backend)
    ref, gen = faces
    score = cosine_similarity(ref.embedding, gen.embedding)
    if ref.backend != "dlib" or gen.backend != "dlib":
        return IdentityScore(score, False, backend=ref.backend)
    distance = float(np.linalg.norm(ref.raw_embedding.astype(np.float64) - gen.raw_embedding.astype(np.float64)))
    return IdentityScore(
        score,
        False,
        backend="dlib",
        distance=distance,
        same_person=distance < DLIB_SAME_PERSON_DISTANCE,
        distance_similarity=1.0 - distance,
    )


# ----------------------------------------------------------------------------------- face size


@dataclass(frozen=True)
class FaceSizeRatio:
    """Area of the largest face box over the image area (box clipped to the image).

    `ratio` is None and `detection_failure` True when no face was found.
    """

    ratio: float | None
    detection_failure: bool
    reason: str = ""


def face_size_ratio(image: ImageInput, analyzer: FaceAnalyzer) -> FaceSizeRatio:
    """How much of `image` the largest face covers, in [0, 1]; a failure record if no face.

    Like `identity_similarity`, an image too small to hold a face counts as a detection failure;
    an unreadable file raises `UnreadableImageError`.
    """
    try:
        rgb = load_rgb(image)
    except ImageTooSmallError as err:
        return FaceSizeRatio(None, True, str(err))
    height, width = rgb.shape[:2]
    faces = analyzer.analyze(rgb, name=describe(image))
    if not faces:
        return FaceSizeRatio(None, True, f"No face found in {describe(image)}.")
    x0, y0, x1, y1 = faces[0].bbox
    # Detector boxes may run past the border; the ratio is about the visible picture.
    w = max(0.0, min(x1, width) - max(x0, 0.0))
    h = max(0.0, min(y1, height) - max(y0, 0.0))
    return FaceSizeRatio(w * h / float(width * height), False)


# ---------------------------------------------------------------------------------------- CLIP

# OpenAI CLIP's image normalisation (shared by ViT-B/32, ViT-L/14 and the tiny model).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(images: Sequence[ImageInput], size: int = 224) -> torch.Tensor:
    """CLIP preprocessing: shortest side to `size` (bicubic), centre crop, CLIP mean/std.

    This is what `CLIPImageProcessor` does for the OpenAI checkpoints, written out so tiny and
    full mode share one path that does not depend on which image backend transformers picks.

    Returns:
        (N, 3, size, size) float32 tensor.
    """
    batch = []
    for image in images:
        pil = Image.fromarray(load_rgb(image))
        scale = size / min(pil.width, pil.height)
        # int() truncates like transformers' get_resize_output_image_size
        new_w, new_h = (size, int(pil.height * scale)) if pil.width <= pil.height else (int(pil.width * scale), size)
        pil = pil.resize((new_w, new_h), Image.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        pil = pil.crop((left, top, left + size, top + size))
        array = np.asarray(pil, dtype=np.float32) / 255.0
        array = (array - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
        batch.append(torch.from_numpy(array.transpose(2, 0, 1).copy()))
    return torch.stack(batch)


def _pooled(output) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding;
    # older versions return that tensor directly.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """CLIP text alignment (docs/method.md §14): cosine of L2-normalised image and text embeddings.

    No x100 scaling and no clipping at 0, so the values are plain cosines in [-1, 1].

    Args:
        model_id: a CLIP checkpoint on the Hugging Face hub; the protocol uses
            "openai/clip-vit-large-patch14" and "openai/clip-vit-base-patch32".
        device: where the model runs; default CUDA when available.
        model, tokenizer: ready objects instead of `model_id` (used by `ClipScorer.tiny`).

    Example:
        >>> scorer = ClipScorer.tiny(seed=0)            # offline, random weights
        >>> scorer(face_path("astronaut"), "a photo of an astronaut")
    """

    def __init__(
        self,
        model_id: str = "openai/clip-vit-large-patch14",
        *,
        device: str | torch.device | None = None,
        model=None,
        tokenizer=None,
        batch_size: int = 16,
    ):
        from transformers import CLIPModel, CLIPTokenizer

        if model is None:
            model = CLIPModel.from_pretrained(model_id, dtype=torch.float32)
        if tokenizer is None:
            tokenizer = CLIPTokenizer.from_pretrained(model_id)
        self.model_id = model_id
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device, torch.float32).eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.batch_size = batch_size

    @classmethod
    def tiny(cls, seed: int = 0) -> ClipScorer:
        """A tiny random CLIP (built in ~1 s, CPU) with the real CLIP BPE tokenizer.

        The numbers mean nothing about the images; they exercise the exact code path of the
        real scorer (tokenization, preprocessing, pooling, normalisation).
        """
        from transformers import CLIPConfig, CLIPModel

        tokenizer = _clip_tokenizer()
        text = dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        vision = dict(
            image_size=224,
            patch_size=32,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
        # Seed a forked RNG so building the scorer neither depends on nor disturbs global state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        return cls(f"tiny-clip(seed={seed})", device="cpu", model=model, tokenizer=tokenizer)

    def __repr__(self) -> str:
        return f"ClipScorer({self.model_id!r}, device={str(self.device)!r})"

    @torch.no_grad()
    def image_embeds(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """(N, D) L2-normalised image embeddings."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = clip_pixels(images[start : start + self.batch_size], self.image_size)
            feats = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
            chunks.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(chunks)

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N, D) L2-normalised text embeddings of the full prompts (truncated at 77 tokens)."""
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(
                list(prompts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=77,
                return_tensors="pt",
            )
            feats = _pooled(
                self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            )
            chunks.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(chunks)

    def scores(self, images: Sequence[ImageInput], prompts: Sequence[str]) -> np.ndarray:
        """(N,) float64 cosines between images[i] and prompts[i]."""
        if len(images) != len(prompts):
            raise ValueError(
                f"Got {len(images)} images but {len(prompts)} prompts; CLIP alignment pairs image i with prompt i."
            )
        if not len(images):
            return np.zeros(0)
        pairs = self.image_embeds(images) * self.text_embeds(prompts)
        return pairs.sum(dim=-1).double().numpy()

    def __call__(self, image: ImageInput, prompt: str) -> float:
        """Cosine between one image and one prompt."""
        return float(self.scores([image], [prompt])[0])


def _clip_tokenizer():
    """OpenAI CLIP's tokenizer rebuilt offline from the BPE file in the open_clip wheel."""
    from transformers import CLIPTokenizer

    from fastface_lite.sdxl.tokenizer import MODEL_MAX_LENGTH, clip_vocab_and_merges

    tokens, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab={t: i for i, t in enumerate(tokens)}, merges=list(merges), model_max_length=MODEL_MAX_LENGTH
    )


# ----------------------------------------------------------------------------------- aggregate

DEFAULT_METRICS = ("id_similarity", "clip_score", "face_size_ratio")


def aggregate(
    records: pd.DataFrame,
    by: Sequence[str] = ("variant", "model", "prompt_set"),
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Mean and percentile-bootstrap interval of each metric per group.

    Args:
        records: one row per generated image; metric columns hold numbers, with NaN/None for
            a failure (e.g. `IdentityScore.as_record()` writes NaN when no face was found).
            Boolean metrics (e.g. id_same_person) are averaged as rates.
        by: grouping columns.
        metrics: metric columns; default: those of DEFAULT_METRICS present in `records`.
        n_boot: bootstrap resamples.
        seed: every (group, metric) cell resamples with a fresh `default_rng(seed)`, so a
            cell's interval does not depend on which other groups are in the table.
        ci: interval mass (0.95 gives the 2.5th and 97.5th percentiles).

    Returns:
        Long table, one row per (group, metric), columns: *by, metric, mean, n (values used),
        failures (NaN values, excluded from the mean), ci_low, ci_high.
    """
    by = [by] if isinstance(by, str) else list(by)
    metrics = _pick_metrics(records, metrics)
    missing = [c for c in by if c not in records.columns]
    if missing:
        raise KeyError(
            f"Grouping column(s) {missing} are not in the records; columns are "
            f"{list(records.columns)}. Pass by=[...] with existing names."
        )
    rows = []
    groups = records.groupby(by, dropna=False, sort=True) if by else [((), records)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            values = _as_float(group[metric])
            ok = values[~np.isnan(values)]
            low, high = _bootstrap_interval(ok, n_boot, seed, ci)
            rows.append(
                {
                    **dict(zip(by, key, strict=True)),
                    "metric": metric,
                    "mean": float(ok.mean()) if ok.size else math.nan,
                    "n": int(ok.size),
                    "failures": int(values.size - ok.size),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=[*by, "metric", "mean", "n", "failures", "ci_low", "ci_high"])


def _pick_metrics(records: pd.DataFrame, metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        chosen = [m for m in DEFAULT_METRICS if m in records.columns]
        if not chosen:
            raise KeyError(
                f"None of the default metrics {list(DEFAULT_METRICS)} are in the "
                f"records (columns: {list(records.columns)}); pass metrics=[...]."
            )
        return chosen
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    missing = [m for m in metrics if m not in records.columns]
    if missing:
        raise KeyError(f"Metric column(s) {missing} are not in the records; columns are {list(records.columns)}.")
    return metrics


def _as_float(column: pd.Series) -> np.ndarray:
    """Numbers, booleans and None/NaN -> float64 array with NaN for missing values."""
    return np.array([math.nan if pd.isna(v) else float(v) for v in column], dtype=np.float64)


def _bootstrap_interval(values: np.ndarray, n_boot: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of (n,) values."""
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)
