"""Find faces, their five keypoints, an identity embedding and an aligned crop.

Two backends give the same `Face` record:

* ``insightface`` -- `insightface.app.FaceAnalysis(name="buffalo_l")`: SCRFD detector plus a
  512-d ArcFace embedding. This is what conditions the IP-Adapter FaceID model and what the
  evaluation protocol scores with (full mode, docs/method.md §3 and §14).
* ``dlib`` -- the offline default: a HOG detector (weak boxes double-checked by dlib's CNN
  detector), the 68-point landmark model and dlib's 128-d ResNet descriptor, all shipped in the
  ``face_recognition_models`` wheel (tiny mode, and an independent second opinion on identity
  in full mode).

Keypoint convention (both backends): five (x, y) points in image pixels, ordered as insightface
orders them: the eye on the image's left, the eye on the image's right, the nose tip, the mouth
corner on the image's left, the mouth corner on the image's right. insightface calls these
"left eye" etc., meaning image-left, i.e. the *subject's* right eye. This is fixed by its
`norm_crop` template (`face_align.arcface_dst`), whose first point sits at x=38 of 112: feeding
the points in another order makes the crop mirrored or skewed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastface_lite.errors import NoFaceError, WeightsUnavailable
from fastface_lite.faces.images import ImageInput, describe, load_rgb

__all__ = [
    "Face",
    "FaceAnalyzer",
    "insightface_weights_available",
    "insightface_root",
    "INSIGHTFACE_ROOT_ENV",
    "DET_SIZES",
    "DLIB_SAME_PERSON_DISTANCE",
]

# docs/method.md §14: detection is retried at smaller detector input sizes until a face is found.
DET_SIZES = (640, 576, 512, 448, 384, 320)
# dlib's documented decision threshold, on the euclidean distance of raw 128-d descriptors.
DLIB_SAME_PERSON_DISTANCE = 0.6
# dlib 68-point indices (iBUG 300-W layout) for the five insightface keypoints. 36-41 is the
# eye that appears on the image's left in an upright face, 42-47 the one on the right.
_DLIB_LEFT_EYE = slice(36, 42)
_DLIB_RIGHT_EYE = slice(42, 48)
_DLIB_NOSE_TIP, _DLIB_MOUTH_LEFT, _DLIB_MOUTH_RIGHT = 30, 48, 54

_NO_FACE_ADVICE = (
    "Use a frontal, well-lit photo in which the face is at least ~80 px wide and not cut off by the frame."
)


def _frozen_array(values, dtype=np.float32) -> np.ndarray:
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face. Arrays are read-only copies.

    Attributes:
        bbox: (x0, y0, x1, y1) in image pixels.
        kps: (5, 2) float32 keypoints in insightface's order (see the module docstring).
        det_score: detector confidence (SCRFD probability, or dlib's HOG SVM margin).
        embedding: (D,) float32, L2-normalised identity embedding; D = 512 for insightface
            buffalo_l (ArcFace), 128 for dlib.
        raw_embedding: (D,) float32 embedding as the model returned it. dlib's 0.6 threshold
            is defined on euclidean distances of these raw descriptors.
        backend: "insightface" or "dlib".
        det_size: the detector input size that found the face (insightface only).
        crop: (S, S, 3) uint8 RGB aligned crop when `analyze(..., crops=True)` asked for it.
    """

    bbox: tuple[float, float, float, float]
    kps: np.ndarray
    det_score: float
    embedding: np.ndarray
    raw_embedding: np.ndarray
    backend: str
    det_size: int | None = None
    crop: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "bbox", tuple(float(v) for v in self.bbox))
        object.__setattr__(self, "kps", _frozen_array(self.kps).reshape(5, 2))
        object.__setattr__(self, "embedding", _frozen_array(self.embedding).reshape(-1))
        object.__setattr__(self, "raw_embedding", _frozen_array(self.raw_embedding).reshape(-1))
        object.__setattr__(self, "det_score", float(self.det_score))
        if self.crop is not None:
            object.__setattr__(self, "crop", _frozen_array(self.crop, np.uint8))

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def aligned_crop(self, image: ImageInput, size: int = 112, bgr: bool = False) -> np.ndarray:
        """Warp the face onto insightface's ArcFace template (`face_align.norm_crop`).

        Args:
            image: the image this face was found in (anything `load_rgb` reads).
            size: output side in pixels, a multiple of 112 (or of 128): 112 is what ArcFace
                sees, 224 is the crop IP-Adapter FaceID Plus feeds to CLIP ViT-H.
            bgr: return BGR instead of RGB. The reference implementation (and the IP-Adapter
                FaceID demo) hand the *BGR* crop to the CLIP image processor; pass bgr=True to
                reproduce that exactly.

        Returns:
            (size, size, 3) uint8 array, eyes level and upright, not mirrored.
        """
        return _align(load_rgb(image), self.kps, size, bgr)

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.0f}" for v in self.bbox)
        return (
            f"Face(backend={self.backend!r}, bbox=({box}), det_score={self.det_score:.2f}, "
            f"embedding={self.embedding.shape[0]}-d)"
        )


@contextlib.contextmanager
def _quiet_skimage_estimate():
    """Silence the FutureWarning scikit-image 0.26 raises inside insightface's face_align
    (`SimilarityTransform.estimate` is deprecated): it is insightface's to fix, and notebooks
    would show it for every face."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*estimate.*deprecated", category=FutureWarning)
        yield


def _align(rgb: np.ndarray, kps: np.ndarray, size: int, bgr: bool) -> np.ndarray:
    from insightface.utils.face_align import norm_crop

    if size <= 0 or (size % 112 and size % 128):
        raise ValueError(f"Aligned crop size must be a multiple of 112 or 128 (e.g. 112, 224), got {size}.")
    with _quiet_skimage_estimate():
        crop = norm_crop(rgb, landmark=np.asarray(kps, dtype=np.float32), image_size=size)
    return np.ascontiguousarray(crop[:, :, ::-1] if bgr else crop)


# ----------------------------------------------------------------------------------- backends


# insightface keeps its packs under ~/.insightface/models/<name>; this variable moves that root (a
# shared or pre-filled folder, e.g. the tiny pack of `make test-full`) without code changes.
INSIGHTFACE_ROOT_ENV = "FASTFACE_INSIGHTFACE_ROOT"


def insightface_root(root: str | os.PathLike | None = None) -> Path:
    """insightface's model root: `root` if given, else ``$FASTFACE_INSIGHTFACE_ROOT``, else ``~/.insightface``."""
    chosen = root if root is not None else os.environ.get(INSIGHTFACE_ROOT_ENV) or "~/.insightface"
    return Path(chosen).expanduser()


def insightface_weights_available(name: str = "buffalo_l", root: str | os.PathLike | None = None) -> bool:
    """True when an insightface model pack (e.g. buffalo_l) is already on disk; never downloads."""
    folder = _insightface_model_dir(name, root)
    return folder.is_dir() and any(folder.glob("*.onnx"))


def _insightface_model_dir(name: str, root: str | os.PathLike | None) -> Path:
    direct = Path(str(name)).expanduser()
    if direct.is_dir():
        return direct
    return insightface_root(root) / "models" / str(name)


FACES_EXTRA = "the face models come with the `faces` extra: pip install 'fastface_lite[faces]'"


def import_face_library(name: str):
    """Import a face library of the `faces` extra, saying how to install it when it is missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{err.name} is not installed; {FACES_EXTRA}") from err


def _onnx_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class _InsightfaceBackend:
    """buffalo_l through `insightface.app.FaceAnalysis`, with the det-size retry of docs/method.md §14."""

    name = "insightface"

    def __init__(
        self,
        name: str,
        root: str | os.PathLike | None,
        ctx_id: int | None,
        det_sizes: Sequence[int],
        det_thresh: float,
        providers: Sequence[str] | None,
    ):
        FaceAnalysis = import_face_library("insightface.app").FaceAnalysis

        self.ctx_id = (0 if _onnx_has_cuda() else -1) if ctx_id is None else ctx_id
        if providers is None:
            providers = (
                ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.ctx_id >= 0 else ["CPUExecutionProvider"]
            )
        folder = _insightface_model_dir(name, root)
        # A folder path loads as is; a pack name is looked up under root (and downloaded by
        # insightface if missing, which needs the network).
        on_disk = folder.is_dir()
        try:
            self.app = FaceAnalysis(
                name=str(folder) if on_disk else name,
                root=str(insightface_root(root)),
                allowed_modules=["detection", "recognition"],
                providers=list(providers),
            )
        except Exception as err:
            if on_disk:
                raise
            raise WeightsUnavailable(
                f"The insightface pack {name!r} is not in {folder} and could not be downloaded "
                f"({type(err).__name__}: {err}). Unzip {name}.zip there, or use "
                "FaceAnalyzer('dlib') offline."
            ) from err
        if "recognition" not in self.app.models:
            raise RuntimeError(
                f"No recognition model was found in the insightface pack "
                f"{name!r} ({folder}); buffalo_l ships w600k_r50.onnx."
            )
        self.det_sizes = tuple(int(s) for s in det_sizes)
        if not self.det_sizes:
            raise ValueError("det_sizes must list at least one detector input size.")
        self.det_thresh = det_thresh
        self.app.prepare(ctx_id=self.ctx_id, det_thresh=det_thresh, det_size=(self.det_sizes[0], self.det_sizes[0]))
        self._det_size = self.det_sizes[0]
        recognizer = self.app.models["recognition"]
        self.embedding_dim = int(recognizer.output_shape[-1])
        self.detail = f"pack {folder}, det sizes {list(self.det_sizes)}"

    def _use_det_size(self, size: int) -> None:
        # Only the detector depends on the size; re-preparing the whole app would also rebuild
        # the recognizer's session on CPU.
        if size != self._det_size:
            self.app.det_model.prepare(self.ctx_id, input_size=(size, size), det_thresh=self.det_thresh)
            self._det_size = size

    def detect(self, rgb: np.ndarray) -> list[Face]:
        # insightface expects OpenCV's BGR order (its models swap to RGB internally).
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        for size in self.det_sizes:
            self._use_det_size(size)
            with _quiet_skimage_estimate():  # the recognizer aligns with face_align too
                found = self.app.get(bgr)
            if found:
                return [self._to_face(f, size) for f in found]
        return []

    def _to_face(self, found, size: int) -> Face:
        if found.kps is None:
            raise RuntimeError(
                "The insightface detector returned no keypoints; use a detector with landmarks (buffalo_l's det_10g)."
            )
        return Face(
            bbox=found.bbox[:4],
            kps=found.kps,
            det_score=found.det_score,
            embedding=found.normed_embedding,
            raw_embedding=found.embedding,
            backend=self.name,
            det_size=size,
        )


def dlib_models_dir() -> Path:
    """Folder of the dlib weights in the face_recognition_models wheel.

    Found without importing the package: its __init__ imports pkg_resources, which recent
    setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"face_recognition_models is not installed; {FACES_EXTRA}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@functools.lru_cache(maxsize=1)
def _dlib_models():
    """Load the dlib models once per process (about a second)."""
    dlib = import_face_library("dlib")

    folder = dlib_models_dir()
    return (
        dlib.get_frontal_face_detector(),
        dlib.cnn_face_detection_model_v1(str(folder / "mmod_human_face_detector.dat")),
        dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )


class _DlibBackend:
    """HOG detector (weak boxes confirmed by dlib's CNN) + 68 landmarks + 128-d ResNet."""

    name = "dlib"
    embedding_dim = 128
    # dlib's CNN detector finds faces from about 80 px; a weak box is rescaled to this width.
    _CONFIRM_WIDTH = 120.0

    def __init__(self, upsample: int, min_score: float, confirm_below: float | None):
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        # The HOG detector also fires on folds of clothing (margin ~0.1-0.3 on the astronaut's
        # suit) while real frontal faces mostly score > 1, small or turned ones down to ~0.4.
        # No margin separates the two, so boxes under `confirm_below` are kept only if dlib's
        # CNN face detector agrees on a crop around them (~0.3 s each on CPU).
        self.confirm_below = -np.inf if confirm_below is None else float(confirm_below)
        self.detector, self.cnn, self.predictor, self.encoder = _dlib_models()
        self.detail = (
            f"HOG upsample {self.upsample}, min score {self.min_score}, CNN-confirmed below {self.confirm_below}"
        )

    def detect(self, rgb: np.ndarray) -> list[Face]:
        rects, scores, _ = self.detector.run(rgb, self.upsample, self.min_score)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            # dlib rectangles are inclusive; +1 makes x1 - x0 the width in pixels.
            bbox = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            if score < self.confirm_below and not self._confirmed_by_cnn(rgb, bbox):
                continue
            shape = self.predictor(rgb, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            raw = np.array(self.encoder.compute_face_descriptor(rgb, shape), dtype=np.float32)
            faces.append(
                Face(
                    bbox=bbox,
                    kps=_five_from_68(points),
                    det_score=score,
                    embedding=raw / np.linalg.norm(raw),
                    raw_embedding=raw,
                    backend=self.name,
                )
            )
        return faces

    def _confirmed_by_cnn(self, rgb: np.ndarray, bbox) -> bool:
        """Run dlib's CNN detector on the box plus half a box of context on each side."""
        import cv2

        x0, y0, x1, y1 = bbox
        side = max(x1 - x0, 1)
        left, top = int(max(0, x0 - side / 2)), int(max(0, y0 - side / 2))
        right = int(min(rgb.shape[1], x1 + side / 2))
        bottom = int(min(rgb.shape[0], y1 + side / 2))
        scale = self._CONFIRM_WIDTH / side
        size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
        crop = cv2.resize(
            rgb[top:bottom, left:right], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
        for found in self.cnn(np.ascontiguousarray(crop), 0):
            r = found.rect
            box = (
                left + r.left() / scale,
                top + r.top() / scale,
                left + (r.right() + 1) / scale,
                top + (r.bottom() + 1) / scale,
            )
            if _iou(box, bbox) >= 0.3:
                return True
        return False


def _iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _five_from_68(points: np.ndarray) -> np.ndarray:
    """(68, 2) dlib landmarks -> (5, 2) keypoints in insightface's order."""
    return np.stack(
        [
            points[_DLIB_LEFT_EYE].mean(axis=0),
            points[_DLIB_RIGHT_EYE].mean(axis=0),
            points[_DLIB_NOSE_TIP],
            points[_DLIB_MOUTH_LEFT],
            points[_DLIB_MOUTH_RIGHT],
        ]
    )


# ----------------------------------------------------------------------------------- analyzer


class FaceAnalyzer:
    """Detect faces and compute identity embeddings with insightface or dlib.

    Args:
        backend: "insightface", "dlib", or "auto" (insightface when the `name` pack is already
            on disk under `root`, else dlib; nothing is downloaded).
        name: insightface model pack name, or a folder holding its .onnx files.
        root: insightface's model root; packs live in `root/models/<name>`. Default
            ``$FASTFACE_INSIGHTFACE_ROOT``, else ``~/.insightface``.
        ctx_id: insightface device, 0 for the first GPU, -1 for CPU; default 0 when
            onnxruntime offers CUDA, else -1.
        det_sizes: insightface detector input sizes, tried in order until a face is found.
        det_thresh: insightface detection threshold.
        providers: onnxruntime providers for insightface (default follows ctx_id).
        upsample: dlib HOG upsampling (1 finds faces down to ~40 px).
        min_score: dlib HOG margin below which boxes are dropped (0 is dlib's own default).
        confirm_below: dlib HOG boxes with a margin under this are kept only if dlib's CNN
            face detector confirms them (HOG alone reports false faces on clothing); None
            turns the check off.

    Example:
        >>> analyzer = FaceAnalyzer()                 # dlib offline, buffalo_l when present
        >>> face = analyzer.largest(face_path("grace_hopper"))
        >>> face.embedding.shape                      # (128,) with dlib, (512,) with buffalo_l
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        name: str = "buffalo_l",
        root: str | os.PathLike | None = None,
        ctx_id: int | None = None,
        det_sizes: Sequence[int] = DET_SIZES,
        det_thresh: float = 0.5,
        providers: Sequence[str] | None = None,
        upsample: int = 1,
        min_score: float = 0.0,
        confirm_below: float | None = 1.0,
    ):
        if backend not in ("auto", "insightface", "dlib"):
            raise ValueError(f"backend must be 'auto', 'insightface' or 'dlib', got {backend!r}.")
        self.requested = backend
        if backend == "auto":
            found = insightface_weights_available(name, root)
            backend = "insightface" if found else "dlib"
            self.reason = (
                f"auto: {name} found" if found else f"auto: no {name} weights in {_insightface_model_dir(name, root)}"
            )
        else:
            self.reason = "requested"
        if backend == "insightface":
            self._impl = _InsightfaceBackend(name, root, ctx_id, det_sizes, det_thresh, providers)
        else:
            self._impl = _DlibBackend(upsample, min_score, confirm_below)

    @property
    def backend(self) -> str:
        """ "insightface" or "dlib": the backend actually in use."""
        return self._impl.name

    @property
    def embedding_dim(self) -> int:
        """Length D of `Face.embedding`: 512 for buffalo_l, 128 for dlib."""
        return self._impl.embedding_dim

    def __repr__(self) -> str:
        return (
            f"FaceAnalyzer(backend={self.backend!r}, embedding_dim={self.embedding_dim}, "
            f"{self._impl.detail}; {self.reason})"
        )

    def analyze(
        self, image: ImageInput, *, crops: bool = False, crop_size: int = 224, name: str | None = None
    ) -> list[Face]:
        """All faces in `image`, largest box first; an empty list when there is none.

        Args:
            image: path, PIL image or (H, W[, 3|4]) RGB(A) array; see `images.load_rgb`.
            crops: also store each face's aligned RGB crop in `Face.crop`.
            crop_size: side of those crops (224 for IP-Adapter's CLIP input).
            name: how to call the image in error messages.

        Raises:
            UnreadableImageError, ImageTooSmallError: the image itself is unusable.
        """
        rgb = load_rgb(image, name=name)
        faces = self._impl.detect(rgb)
        faces.sort(key=lambda f: (f.area, f.det_score), reverse=True)
        if crops:
            faces = [_with_crop(f, _align(rgb, f.kps, crop_size, bgr=False)) for f in faces]
        return faces

    def largest(self, image: ImageInput, *, crops: bool = False, crop_size: int = 224, name: str | None = None) -> Face:
        """The largest face in `image`; warns when there are several.

        Raises:
            NoFaceError: no face was detected.
            UnreadableImageError, ImageTooSmallError: the image itself is unusable.
        """
        label = name or describe(image)
        faces = self.analyze(image, crops=crops, crop_size=crop_size, name=label)
        if not faces:
            raise NoFaceError(
                f"No face found in {label} (backend {self.backend}: {self._impl.detail}). {_NO_FACE_ADVICE}"
            )
        if len(faces) > 1:
            warnings.warn(
                f"{len(faces)} faces found in {label}; using the largest "
                f"({faces[0].width:.0f}x{faces[0].height:.0f} px). Crop the image to "
                "one face to choose another.",
                stacklevel=2,
            )
        return faces[0]


def _with_crop(face: Face, crop: np.ndarray) -> Face:
    from dataclasses import replace

    return replace(face, crop=crop)
