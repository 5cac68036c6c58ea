"""Metrics (docs/method.md §14): identity similarity, face size, CLIP alignment, bootstrap aggregation.
Offline, CPU. (The shipped prompt sets are tested in tests/faces/test_photos.py.)"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from fastface_lite.errors import UnreadableImageError
from fastface_lite.evaluation.metrics import (
    ClipScorer,
    aggregate,
    clip_pixels,
    cosine_similarity,
    face_size_ratio,
    identity_similarity,
)
from fastface_lite.faces.analyzer import Face, FaceAnalyzer
from fastface_lite.faces.photos import face_path


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer("dlib")


def make_face(raw, backend="dlib", bbox=(0, 0, 10, 10)):
    raw = np.asarray(raw, dtype=np.float32)
    return Face(
        bbox=bbox,
        kps=np.zeros((5, 2)),
        det_score=1.0,
        embedding=raw / np.linalg.norm(raw),
        raw_embedding=raw,
        backend=backend,
    )


def unit(*values, dim=128):
    vector = np.zeros(dim, np.float32)
    vector[: len(values)] = values
    return vector


# ------------------------------------------------------------------------------------ identity


def test_cosine_hand_values():
    assert cosine_similarity([1, 0], [0, 1]) == 0.0
    assert cosine_similarity([1, 2, 2], [2, 1, 2]) == pytest.approx(8 / 9)  # 8 / (3 * 3)
    assert cosine_similarity([3, 4], [-6, -8]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        cosine_similarity(np.ones(128), np.ones(512))


def test_identity_similarity_hand_values_dlib(analyzer):
    # raw descriptors (0.3, 0, ...) and (0.3, 0.4, ...): distance 0.4, cosine 0.3 / 0.5
    score = identity_similarity(make_face(unit(0.3)), make_face(unit(0.3, 0.4)), analyzer)
    assert not score.detection_failure and score.failed == ()
    assert score.similarity == pytest.approx(0.6)
    assert score.distance == pytest.approx(0.4)
    assert score.same_person is True
    assert score.distance_similarity == pytest.approx(0.6)
    # (0.3, 0) vs (0, 0.7): distance sqrt(0.09 + 0.49) = 0.7616 > 0.6, cosine 0
    far = identity_similarity(make_face(unit(0.3)), make_face(unit(0.0, 0.7)), analyzer)
    assert far.similarity == pytest.approx(0.0, abs=1e-7)
    assert far.distance == pytest.approx(math.sqrt(0.58), rel=1e-6)
    assert far.same_person is False


def test_identity_similarity_insightface_faces_have_no_dlib_fields(analyzer):
    score = identity_similarity(
        make_face(unit(1, 2, 2, dim=512), "insightface"), make_face(unit(2, 1, 2, dim=512), "insightface"), analyzer
    )
    assert score.similarity == pytest.approx(8 / 9)
    assert score.distance is None and score.same_person is None
    assert score.backend == "insightface"


def test_identity_similarity_on_photos(analyzer):
    astronaut = analyzer.largest(face_path("astronaut"))
    flipped = Image.open(face_path("astronaut")).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    same = identity_similarity(astronaut, flipped, analyzer)
    assert same.same_person and same.similarity > 0.95
    other = identity_similarity(face_path("astronaut"), face_path("grace_hopper"), analyzer)
    assert other.same_person is False and other.distance > 0.6
    hopper = analyzer.largest(face_path("grace_hopper"))
    assert other.similarity == pytest.approx(float(astronaut.embedding @ hopper.embedding), abs=1e-6)


def test_detection_failure_is_flagged_not_scored(analyzer, tmp_path):
    astronaut = analyzer.largest(face_path("astronaut"))
    score = identity_similarity(astronaut, skdata.coffee(), analyzer)
    assert score.detection_failure and score.similarity is None
    assert score.failed == ("generated",) and "No face found" in score.reason
    both = identity_similarity(skdata.chelsea(), np.zeros((8, 8, 3), np.uint8), analyzer)
    assert both.failed == ("reference", "generated") and "too small" in both.reason
    record = score.as_record()
    assert math.isnan(record["id_similarity"]) and record["id_detection_failure"] is True
    missing = tmp_path / "missing.png"
    with pytest.raises(UnreadableImageError):  # a broken file is an error, not a failure
        identity_similarity(astronaut, missing, analyzer)


# ----------------------------------------------------------------------------------- face size


def test_face_size_ratio(analyzer):
    face = analyzer.largest(face_path("grace_hopper"))
    result = face_size_ratio(face_path("grace_hopper"), analyzer)
    assert not result.detection_failure
    assert result.ratio == pytest.approx(face.area / (512 * 600))  # box fully inside
    missing = face_size_ratio(skdata.coffee(), analyzer)
    assert missing.ratio is None and missing.detection_failure


def test_face_size_ratio_clips_box_to_image():
    class OneBox:  # stands in for an analyzer: a box hanging 20 px over the left edge
        def analyze(self, image, name=None):
            return [make_face(unit(1.0), bbox=(-20, 0, 30, 50))]

    result = face_size_ratio(np.zeros((100, 100, 3), np.uint8), OneBox())
    assert result.ratio == pytest.approx(30 * 50 / (100 * 100))


# ------------------------------------------------------------------------------------ aggregate


def records_table():
    return pd.DataFrame(
        {
            "variant": ["baseline"] * 3 + ["fastface"] * 4,
            "model": ["hyper"] * 7,
            "prompt_set": ["realistic"] * 7,
            "id_similarity": [0.5, 0.7, np.nan, 0.1, 0.2, 0.3, 0.4],
            "clip_score": [0.2, 0.3, 0.25, 0.3, None, 0.3, 0.3],
        }
    )


def test_aggregate_means_counts_and_failures():
    table = aggregate(records_table(), n_boot=200)
    assert list(table.columns) == [
        "variant",
        "model",
        "prompt_set",
        "metric",
        "mean",
        "n",
        "failures",
        "ci_low",
        "ci_high",
    ]
    row = table.set_index(["variant", "metric"])
    assert row.loc[("baseline", "id_similarity"), "mean"] == pytest.approx(0.6)
    assert row.loc[("baseline", "id_similarity"), "n"] == 2
    assert row.loc[("baseline", "id_similarity"), "failures"] == 1
    assert row.loc[("fastface", "id_similarity"), "mean"] == pytest.approx(0.25)
    assert row.loc[("fastface", "id_similarity"), "failures"] == 0
    assert row.loc[("fastface", "clip_score"), "failures"] == 1
    assert row.loc[("fastface", "clip_score"), "ci_low"] == pytest.approx(0.3)  # constant
    assert row.loc[("fastface", "clip_score"), "ci_high"] == pytest.approx(0.3)


def test_bootstrap_interval_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    records = pd.DataFrame(
        {
            "variant": np.repeat(["a", "b"], 50),
            "model": "hyper",
            "prompt_set": "stylistic",
            "id_similarity": rng.normal(0.5, 0.1, 100),
        }
    )
    first = aggregate(records, seed=3)
    assert (first["ci_low"] <= first["mean"]).all() and (first["mean"] <= first["ci_high"]).all()
    assert (first["ci_low"] < first["ci_high"]).all()
    pd.testing.assert_frame_equal(first, aggregate(records, seed=3))
    assert not first["ci_low"].equals(aggregate(records, seed=4)["ci_low"])
    # a group's interval does not depend on the other groups in the table
    alone = aggregate(records[records.variant == "b"], seed=3)
    assert alone["ci_low"].iloc[0] == first["ci_low"].iloc[1]
    # the definition: percentiles 2.5 / 97.5 of the means of n_boot resamples
    values = records.loc[records.variant == "a", "id_similarity"].to_numpy()
    idx = np.random.default_rng(3).integers(0, 50, size=(1000, 50))
    expected = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    np.testing.assert_allclose(first[["ci_low", "ci_high"]].iloc[0], expected)


def test_aggregate_edge_cases():
    records = pd.DataFrame(
        {"variant": ["x", "y", "y"], "same": [True, False, True], "id_similarity": [np.nan, 0.4, np.nan]}
    )
    table = aggregate(records, by=["variant"], metrics=["id_similarity", "same"])
    row = table.set_index(["variant", "metric"])
    assert math.isnan(row.loc[("x", "id_similarity"), "mean"])  # all failed: no number
    assert row.loc[("x", "id_similarity"), "n"] == 0
    assert row.loc[("x", "id_similarity"), "failures"] == 1
    assert row.loc[("y", "id_similarity"), "ci_low"] == row.loc[("y", "id_similarity"), "ci_high"]
    assert row.loc[("y", "same"), "mean"] == pytest.approx(0.5)  # booleans become a rate
    with pytest.raises(KeyError, match="prompt_set"):
        aggregate(records, metrics=["id_similarity"])
    with pytest.raises(KeyError, match="clip_score"):
        aggregate(records, by=["variant"], metrics=["clip_score"])


# ----------------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def tiny_clip():
    return ClipScorer.tiny(seed=0)


def test_tiny_clip_uses_the_real_clip_tokenizer(tiny_clip):
    ids = tiny_clip.tokenizer("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # OpenAI CLIP's ids


def test_clip_preprocessing_matches_transformers(tiny_clip):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil()  # OpenAI CLIP defaults: 224, bicubic, centre crop
    images = [
        Image.open(face_path("grace_hopper")),
        skdata.chelsea(),
        np.random.default_rng(0).integers(0, 256, (257, 333, 3), dtype=np.uint8),
    ]
    for image in images:
        ours = clip_pixels([image])
        theirs = torch.as_tensor(np.asarray(processor(images=image)["pixel_values"]))
        assert ours.shape == (1, 3, 224, 224)
        torch.testing.assert_close(ours, theirs.reshape(ours.shape), rtol=0, atol=1e-6)


def test_tiny_clip_scores_are_cosines_and_deterministic(tiny_clip):
    images = [face_path("astronaut"), face_path("grace_hopper"), skdata.coffee()]
    prompts = [
        "a photo of a person in a space suit",
        "watercolor painting; a person reading in a park",
        "a cup of coffee",
    ]
    scores = tiny_clip.scores(images, prompts)
    assert scores.shape == (3,) and np.all(np.abs(scores) <= 1.0)
    # the same batch through the same model twice: the same kernels in the same order, so bit-equal
    np.testing.assert_array_equal(scores, tiny_clip.scores(images, prompts))
    np.testing.assert_array_equal(scores, ClipScorer.tiny(seed=0).scores(images, prompts))
    assert not np.allclose(scores, ClipScorer.tiny(seed=1).scores(images, prompts))
    # one image alone vs the same image in a batch of three: BLAS kernels may split and sum float32
    # products differently per batch shape (MKL does on AMD, or with MKL_CBWR=COMPATIBLE), so the
    # cosine may move in the 7th digit (seen: 3e-8); 1e-6 allows that and nothing a bug would give
    assert tiny_clip(images[0], prompts[0]) == pytest.approx(scores[0], abs=1e-6)
    # by hand: cosine of the model's own projected features, no x100, no clipping
    with torch.no_grad():
        model = tiny_clip.model
        image_features = model.get_image_features(pixel_values=clip_pixels(images[:1]))
        tokens = tiny_clip.tokenizer(prompts[:1], return_tensors="pt")
        text_features = model.get_text_features(**tokens)
    image_features = getattr(image_features, "pooler_output", image_features)[0]
    text_features = getattr(text_features, "pooler_output", text_features)[0]
    expected = torch.nn.functional.cosine_similarity(image_features, text_features, dim=0)
    assert scores[0] == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        tiny_clip.scores(images[:2], prompts[:1])


def test_tiny_clip_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ClipScorer.tiny(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_clip_scorer_loads_with_from_pretrained(tiny_clip, tmp_path):
    # The full-mode path (from_pretrained of a model id) on a local folder, offline.
    tiny_clip.model.save_pretrained(tmp_path)
    tiny_clip.tokenizer.save_pretrained(tmp_path)
    loaded = ClipScorer(str(tmp_path), device="cpu")
    image, prompt = face_path("astronaut"), "a portrait of an astronaut"
    assert loaded(image, prompt) == pytest.approx(tiny_clip(image, prompt), abs=1e-6)
