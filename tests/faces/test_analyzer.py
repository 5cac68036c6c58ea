"""Face analysis: the dlib backend on real photos, the insightface glue on tiny ONNX models, and
every kind of bad input. Offline, CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image, ImageEnhance
from skimage import data as skdata
from support.tiny_insightface import write_pack

from fastface_lite.errors import FaceError, ImageTooSmallError, NoFaceError, UnreadableImageError
from fastface_lite.faces.analyzer import DLIB_SAME_PERSON_DISTANCE, Face, FaceAnalyzer
from fastface_lite.faces.images import load_rgb
from fastface_lite.faces.photos import face_path, insightface_group_photo

THRESHOLD = DLIB_SAME_PERSON_DISTANCE


def distance(a: Face, b: Face) -> float:
    return float(np.linalg.norm(a.raw_embedding - b.raw_embedding))


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer("dlib")


@pytest.fixture(scope="module")
def photos():
    return {name: Image.open(face_path(name)).convert("RGB") for name in ("astronaut", "grace_hopper")}


@pytest.fixture(scope="module")
def reference(analyzer, photos):
    return {name: analyzer.largest(image) for name, image in photos.items()}


# ------------------------------------------------------------------------------- dlib, photos


def test_auto_falls_back_to_dlib_without_buffalo_weights(tmp_path):
    auto = FaceAnalyzer("auto", root=str(tmp_path))
    assert auto.backend == "dlib" and auto.embedding_dim == 128
    assert "backend='dlib'" in repr(auto) and "no buffalo_l weights" in repr(auto)


TRANSFORMS = {
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.6),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.4),
    "half_size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
    "1.5x_size": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC),
}


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_same_person_stays_under_dlib_threshold(analyzer, photos, reference, name, transform):
    face = analyzer.largest(TRANSFORMS[transform](photos[name]))
    assert distance(face, reference[name]) < THRESHOLD


def test_different_people_are_over_dlib_threshold(reference):
    assert distance(reference["astronaut"], reference["grace_hopper"]) > THRESHOLD


def test_collage_gives_one_face_per_photo_largest_first(analyzer, photos, reference):
    left, right = photos["astronaut"], photos["grace_hopper"]
    canvas = Image.new("RGB", (left.width + 40 + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 40, 0))
    faces = analyzer.analyze(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    hopper, astronaut = faces  # Hopper's face is twice the size of the astronaut's
    assert (hopper.bbox[0] + hopper.bbox[2]) / 2 > left.width + 40
    assert (astronaut.bbox[0] + astronaut.bbox[2]) / 2 < left.width
    assert distance(hopper, reference["grace_hopper"]) < THRESHOLD
    assert distance(astronaut, reference["astronaut"]) < THRESHOLD
    assert distance(hopper, reference["astronaut"]) > THRESHOLD
    with pytest.warns(UserWarning, match="2 faces found"):
        assert analyzer.largest(canvas).bbox == hopper.bbox


def test_group_photo_finds_six_faces_sorted_by_size(analyzer):
    faces = analyzer.analyze(insightface_group_photo())
    assert len(faces) == 6
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    boxes = [f.bbox for f in faces]
    assert all(iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_astronaut_suit_is_not_a_face(analyzer, photos):
    # HOG alone reports a second "face" on the suit (margin ~0.1-0.3); the CNN check drops it.
    assert len(analyzer.analyze(photos["astronaut"])) == 1
    assert len(analyzer.analyze(TRANSFORMS["flip"](photos["astronaut"]))) == 1
    hog_only = FaceAnalyzer("dlib", confirm_below=None)
    assert len(hog_only.analyze(photos["astronaut"])) == 2


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_keypoints_follow_insightface_convention(reference, name):
    face = reference[name]
    x0, y0, x1, y1 = face.bbox
    kps = face.kps
    assert kps.shape == (5, 2) and kps.dtype == np.float32
    assert ((kps[:, 0] > x0) & (kps[:, 0] < x1) & (kps[:, 1] > y0) & (kps[:, 1] < y1)).all()
    left_eye, right_eye, nose, mouth_left, mouth_right = kps
    # insightface's "left" is image-left: its ArcFace template puts point 0 at x=38 of 112.
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_aligned_crop_matches_template_upright_and_unmirrored(reference, photos, name):
    from insightface.utils.face_align import arcface_dst, estimate_norm

    face = reference[name]

    def template_error(kps):
        matrix = estimate_norm(kps, 112)
        return np.abs(kps @ matrix[:, :2].T + matrix[:, 2] - arcface_dst).max()

    # Our order fits the template with a rotation+scale; swapping left/right needs a mirror,
    # which a similarity transform cannot do, so the fit gets far worse.
    assert template_error(face.kps) < 8.0
    assert template_error(face.kps[[1, 0, 2, 4, 3]]) > 2 * template_error(face.kps)
    crop = face.aligned_crop(photos[name], size=224)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert np.array_equal(face.aligned_crop(photos[name], size=224, bgr=True), crop[:, :, ::-1])
    assert face.aligned_crop(photos[name]).shape == (112, 112, 3)
    with pytest.raises(ValueError, match="multiple of 112"):
        face.aligned_crop(photos[name], size=100)


def test_flip_mirrors_keypoints(analyzer, photos, reference):
    image = photos["grace_hopper"]
    flipped = analyzer.largest(TRANSFORMS["flip"](image)).kps
    mirrored = reference["grace_hopper"].kps.copy()
    mirrored[:, 0] = image.width - mirrored[:, 0]
    width = reference["grace_hopper"].width
    # the image-left eye of the flip is the mirrored image-right eye of the original (within
    # the landmark model's own left/right asymmetry of a few pixels)
    assert np.abs(flipped - mirrored[[1, 0, 2, 4, 3]]).max() < 0.1 * width
    assert np.abs(flipped - mirrored).max() > 0.3 * width


def test_analyze_with_crops_and_face_record(analyzer, photos):
    (face,) = analyzer.analyze(photos["grace_hopper"], crops=True)
    assert np.array_equal(face.crop, face.aligned_crop(photos["grace_hopper"], size=224))
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.det_score = 0.0
    with pytest.raises(ValueError):
        face.embedding[0] = 0.0  # arrays are read-only
    assert face.backend == "dlib" and face.det_size is None and face.det_score > 0
    assert face.embedding.shape == (128,) and np.isclose(np.linalg.norm(face.embedding), 1.0)
    np.testing.assert_allclose(face.embedding, face.raw_embedding / np.linalg.norm(face.raw_embedding), rtol=1e-6)
    assert not np.isclose(np.linalg.norm(face.raw_embedding), 1.0)  # raw dlib scale kept


# --------------------------------------------------------------------------------- bad inputs


def test_missing_file(analyzer, tmp_path):
    path = tmp_path / "nobody.jpg"
    with pytest.raises(UnreadableImageError, match="nobody.jpg.*no such file"):
        analyzer.largest(path)


def test_text_file_renamed_jpg(analyzer, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(UnreadableImageError, match="notes.jpg.*not a readable image"):
        analyzer.largest(str(path))


def test_folder_is_unreadable(analyzer, tmp_path):
    with pytest.raises(UnreadableImageError, match="folder"):
        analyzer.largest(tmp_path)


def test_tiny_image(analyzer, tmp_path):
    with pytest.raises(ImageTooSmallError, match="8x8"):
        analyzer.largest(np.zeros((8, 8, 3), np.uint8))
    path = tmp_path / "dot.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ImageTooSmallError, match="dot.png"):
        analyzer.largest(path)


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_photo_without_face(analyzer, name):
    image = getattr(skdata, name)()
    assert analyzer.analyze(image) == []
    with pytest.raises(NoFaceError, match=f"No face found in {name}.*frontal, well-lit.*80 px"):
        analyzer.largest(image, name=name)


def test_errors_share_a_base_class():
    for error in (NoFaceError, UnreadableImageError, ImageTooSmallError):
        assert issubclass(error, FaceError) and issubclass(error, ValueError)


def test_bad_arrays_and_types(analyzer):
    with pytest.raises(UnreadableImageError, match=r"\[0, 1\]"):
        load_rgb(np.full((64, 64, 3), 200.0))
    with pytest.raises(UnreadableImageError, match="channels-first"):
        load_rgb(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(TypeError, match="file path, a PIL image or a numpy array"):
        analyzer.largest([1, 2, 3])


# ----------------------------------------------------------------------------- input formats


@pytest.fixture(scope="module")
def hopper_array(photos):
    return np.asarray(photos["grace_hopper"])


def _same_face(face, ref, max_distance=THRESHOLD):
    assert iou(face.bbox, ref.bbox) > 0.8
    assert distance(face, ref) < max_distance


def test_grayscale_inputs(analyzer, reference, hopper_array, tmp_path):
    gray = np.asarray(Image.fromarray(hopper_array).convert("L"))
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    for image in (gray, gray[:, :, None], path):
        _same_face(analyzer.largest(image), reference["grace_hopper"])


def test_rgba_inputs(analyzer, reference, hopper_array, tmp_path):
    rgba = np.dstack([hopper_array, np.full(hopper_array.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0  # a transparent band at the top is composited onto white
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert (load_rgb(path)[:40] == 255).all()
    for image in (rgba, path, Image.open(path)):
        face = analyzer.largest(image)
        _same_face(face, reference["grace_hopper"], max_distance=0.1)


def test_16_bit_and_float_inputs(analyzer, reference, hopper_array, tmp_path):
    wide = hopper_array.astype(np.uint16) * 257
    assert np.array_equal(load_rgb(wide), hopper_array)
    assert np.array_equal(load_rgb(hopper_array / 255.0), hopper_array)
    gray16 = np.asarray(Image.fromarray(hopper_array).convert("L")).astype(np.uint16) * 257
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    _same_face(analyzer.largest(path), reference["grace_hopper"])
    float_face = analyzer.largest(hopper_array.astype(np.float32) / 255.0)
    assert np.array_equal(float_face.raw_embedding, reference["grace_hopper"].raw_embedding)


def test_exif_rotated_jpeg_gives_the_upright_face(analyzer, photos, tmp_path):
    upright = photos["grace_hopper"]
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    assert np.asarray(Image.open(path)).shape[:2] == (upright.width, upright.height)  # stored sideways
    assert load_rgb(path).shape[:2] == (upright.height, upright.width)
    face = analyzer.largest(path)
    ref = analyzer.largest(upright)
    _same_face(face, ref, max_distance=0.15)


# --------------------------------------------------------------- insightface glue, tiny ONNX
#
# A real buffalo_l pack is not available offline: tests/support/tiny_insightface.py writes tiny ONNX
# files that insightface's model_zoo routes as an SCRFD detector (firing on red stride-32 cells,
# only while the detector input is at most `max_det_width` wide) and an ArcFace recognizer.


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory):
    """make(max_det_width) -> insightface root holding models/buffalo_l with tiny models."""
    made = {}

    def make(max_det_width: int):
        if max_det_width not in made:
            root = tmp_path_factory.mktemp(f"insightface_{max_det_width}")
            made[max_det_width] = write_pack(root, max_det_width=max_det_width)
        return made[max_det_width]

    return make


def marker_image(color=(255, 0, 0)):
    """A gray 400x400 RGB image with an 80 px square 'face' marker."""
    image = np.full((400, 400, 3), 128, np.uint8)
    image[100:180, 100:180] = color
    return image


def test_tiny_models_are_routed_as_detector_and_recognizer(tiny_pack):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

    auto = FaceAnalyzer("auto", root=str(tiny_pack(640)))
    assert auto.backend == "insightface" and auto.embedding_dim == 512
    assert "backend='insightface'" in repr(auto) and "buffalo_l found" in repr(auto)
    models = auto._impl.app.models
    assert isinstance(models["detection"], SCRFD) and isinstance(models["recognition"], ArcFaceONNX)
    assert models["recognition"].input_mean == 127.5
    by_folder = FaceAnalyzer("insightface", name=str(tiny_pack(640) / "models" / "buffalo_l"))
    assert by_folder.largest(marker_image()).det_size == 640


@pytest.mark.parametrize("max_det_width, expected", [(640, 640), (576, 576), (512, 512), (400, 384), (320, 320)])
def test_det_size_retry_finds_face_at_first_size_that_works(tiny_pack, max_det_width, expected):
    analyzer = FaceAnalyzer("insightface", root=str(tiny_pack(max_det_width)))
    detector = analyzer._impl.app.det_model
    tried = []
    original = detector.detect

    def spy(img, *args, **kwargs):  # record the size each detection ran at
        tried.append(detector.input_size[0])
        return original(img, *args, **kwargs)

    detector.detect = spy
    for _ in range(2):  # the second image starts again from 640
        tried.clear()
        face = analyzer.largest(marker_image())
        assert face.det_size == expected
        assert tried == [s for s in (640, 576, 512, 448, 384, 320) if s >= expected]


def test_no_face_at_any_det_size(tiny_pack):
    analyzer = FaceAnalyzer("insightface", root=str(tiny_pack(300)))
    with pytest.raises(NoFaceError, match="det sizes \\[640, 576, 512, 448, 384, 320\\]"):
        analyzer.largest(marker_image(), name="marker")


def test_insightface_is_fed_bgr(tiny_pack):
    analyzer = FaceAnalyzer("insightface", root=str(tiny_pack(640)))
    assert len(analyzer.analyze(marker_image((255, 0, 0)))) == 1
    # a blue square is only "red" to the network if we (wrongly) passed RGB
    assert analyzer.analyze(marker_image((0, 0, 255))) == []


def test_insightface_face_fields_and_embedding(tiny_pack):
    root = tiny_pack(640)
    analyzer = FaceAnalyzer("insightface", root=str(root))
    image = marker_image()
    image[120:140, 110:170] = (255, 200, 0)  # texture, so the crop's channels differ
    (face,) = analyzer.analyze(image, crops=True, crop_size=112)
    assert face.backend == "insightface" and face.det_size == 640
    assert 0.5 < face.det_score <= 1.0
    assert face.kps.shape == (5, 2) and face.kps[0, 0] < face.kps[1, 0]
    x0, y0, x1, y1 = face.bbox
    assert x0 < face.kps[:, 0].min() and face.kps[:, 0].max() < x1
    assert np.isclose(np.linalg.norm(face.embedding), 1.0, atol=1e-5)
    np.testing.assert_allclose(face.embedding, face.raw_embedding / np.linalg.norm(face.raw_embedding), rtol=1e-5)
    # Independent check: our RGB aligned crop through the ONNX file by hand. insightface swaps
    # BGR->RGB before its network, so this only matches if it was given BGR.
    crop = face.aligned_crop(image, size=112)
    assert np.array_equal(crop, face.crop)
    blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    session = onnxruntime.InferenceSession(
        str(root / "models/buffalo_l/w600k_tiny.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, {"input.1": blob})[0][0]
    np.testing.assert_allclose(face.raw_embedding, expected, rtol=1e-4, atol=1e-5)
    assert face.embedding.shape == (512,)


def test_insightface_root_comes_from_the_environment(tiny_pack, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTFACE_INSIGHTFACE_ROOT", str(tiny_pack(640)))
    assert FaceAnalyzer("auto").backend == "insightface"  # no root given: the variable's
    assert FaceAnalyzer("auto", root=str(tmp_path)).backend == "dlib"  # an explicit root wins
    monkeypatch.delenv("FASTFACE_INSIGHTFACE_ROOT")
    from fastface_lite.faces.analyzer import insightface_root

    assert insightface_root() == Path("~/.insightface").expanduser()


def test_fixed_trigger_pack_finds_one_face_in_any_image(tmp_path, photos):
    """The pack `make test-full` runs on: one face in every photo (whatever its aspect) and in noise,
    so full mode's conditioning and scoring run end to end on tiny weights."""
    root = write_pack(tmp_path, dim=128, trigger="fixed", box_half=3.0)
    analyzer = FaceAnalyzer("insightface", root=str(root))
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    wide = np.full((300, 700, 3), 90, np.uint8)
    for image in (photos["astronaut"], noise, wide, wide.transpose(1, 0, 2).copy()):
        (face,) = analyzer.analyze(image)
        height, width = load_rgb(image).shape[:2]
        assert face.embedding.shape == (128,) and face.det_size == 640
        assert (0 <= face.kps[:, 0]).all() and (face.kps[:, 0] < width).all()
        assert (0 <= face.kps[:, 1]).all() and (face.kps[:, 1] < height).all()
