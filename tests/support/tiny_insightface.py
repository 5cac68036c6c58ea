"""Tiny ONNX models that insightface 2.1 loads as a buffalo_l pack (no download, no real weights).

insightface's model_zoo routes an ONNX file by its shapes (``model_zoo.ModelRouter``):

* >= 5 outputs -> SCRFD detector. Ours has SCRFD's 9-output layout (strides 8/16/32, 2 anchors,
  with keypoints); only the stride-32 branch can fire. Two triggers:
  - ``"red"``: a face where a stride-32 cell of the input is red, and only while the detector
    input is at most `max_det_width` wide (so the det-size retry is observable). insightface swaps
    BGR->RGB before the network, so a red square is only seen as red if it was fed BGR.
  - ``"fixed"``: exactly one face in any image, at the stride-32 cell one third down and one third
    across the detector input (inside the letterboxed photo for aspect ratios under 3): what a
    full-mode run on tiny weights needs to find "a face" in every photo and generated image.
* square input >= 112, multiple of 16 -> ArcFaceONNX recognizer: an 8x8 average pool and a random
  (3*14*14, dim) projection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# keypoint offsets from the anchor, in strides: eyes, nose, mouth corners (image-left first)
KPS_OFFSETS = np.array([-0.9, -0.6, 0.9, -0.6, 0.0, 0.3, -0.7, 1.2, 0.7, 1.2], np.float32)
STRIDES = (8, 16, 32)


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _save(nodes, inputs, outputs, inits, path: Path) -> None:
    graph = helper.make_graph(nodes, Path(path).stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _red_logit(pool: str, out: str, max_det_width: int):
    """logit = 10 * (R - (G + B) / 2 - 1.2) on the normalised input, -100 more when the input is wider
    than `max_det_width`: (nodes, initializers) writing `out` of shape (1, 2, h, w)."""
    nodes = [
        helper.make_node("Shape", ["input.1"], ["red_shape"]),
        helper.make_node("Gather", ["red_shape", "red_axis3"], ["red_width"], axis=0),
        helper.make_node("Cast", ["red_width"], ["red_width_f"], to=TensorProto.FLOAT),
        helper.make_node("Less", ["red_width_f", "red_limit"], ["red_open"]),
        helper.make_node("Cast", ["red_open"], ["red_open_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["red_open_f", "red_one"], ["red_closed"]),
        helper.make_node("Mul", ["red_closed", "red_hundred"], ["red_gate"]),
        helper.make_node("Conv", [pool, "red_w", "red_b"], ["red_logit"]),
        helper.make_node("Add", ["red_logit", "red_gate"], [out]),
    ]
    inits = [
        _const("red_axis3", np.array(3, np.int64)),
        _const("red_limit", np.array(max_det_width + 0.5, np.float32)),
        _const("red_one", np.array(1.0, np.float32)),
        _const("red_hundred", np.array(100.0, np.float32)),
        _const("red_w", np.tile(np.array([10.0, -5.0, -5.0], np.float32), (2, 1)).reshape(2, 3, 1, 1)),
        _const("red_b", np.full(2, -12.0, np.float32)),
    ]
    return nodes, inits


def _fixed_logit(pool: str, out: str):
    """logit = 10 - 100 * ((row - h // 3)^2 + (col - w // 3)^2) over the (h, w) cells of `pool`:
    one cell fires whatever the image holds. (nodes, initializers) writing `out` of shape (1, 2, h, w)."""
    nodes = [helper.make_node("Shape", [pool], ["fix_shape"])]
    inits = [
        _const("fix_zero", np.array(0, np.int64)),
        _const("fix_step", np.array(1, np.int64)),
        _const("fix_three", np.array(3, np.int64)),
        _const("fix_ten", np.array(10.0, np.float32)),
        _const("fix_hundred", np.array(100.0, np.float32)),
        _const("fix_col_axis", np.array([0], np.int64)),
        _const("fix_row_axis", np.array([1], np.int64)),
        _const("fix_batch_axes", np.array([0, 1], np.int64)),
    ]
    for axis, name, unsqueeze in ((2, "row", "fix_row_axis"), (3, "col", "fix_col_axis")):
        inits.append(_const(f"fix_{name}_index", np.array(axis, np.int64)))
        nodes += [
            helper.make_node("Gather", ["fix_shape", f"fix_{name}_index"], [f"fix_{name}_n"], axis=0),
            helper.make_node("Range", ["fix_zero", f"fix_{name}_n", "fix_step"], [f"fix_{name}s"]),
            helper.make_node("Div", [f"fix_{name}_n", "fix_three"], [f"fix_{name}_at"]),
            helper.make_node("Sub", [f"fix_{name}s", f"fix_{name}_at"], [f"fix_{name}_d"]),
            helper.make_node("Cast", [f"fix_{name}_d"], [f"fix_{name}_df"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"fix_{name}_df", f"fix_{name}_df"], [f"fix_{name}_sq"]),
            # rows -> (h, 1), cols -> (1, w): their sum broadcasts to (h, w)
            helper.make_node("Unsqueeze", [f"fix_{name}_sq", unsqueeze], [f"fix_{name}_2d"]),
        ]
    nodes += [
        helper.make_node("Add", ["fix_row_2d", "fix_col_2d"], ["fix_dist"]),
        helper.make_node("Mul", ["fix_dist", "fix_hundred"], ["fix_penalty"]),
        helper.make_node("Sub", ["fix_ten", "fix_penalty"], ["fix_map"]),
        helper.make_node("Unsqueeze", ["fix_map", "fix_batch_axes"], ["fix_map4"]),
        helper.make_node("Concat", ["fix_map4", "fix_map4"], [out], axis=1),  # both anchors
    ]
    return nodes, inits


def write_tiny_scrfd(path, max_det_width: int = 10_000, box_half: float = 7.0, trigger: str = "red") -> Path:
    """An SCRFD-shaped detector (see the module docstring); boxes reach `box_half` strides each
    side of the anchor. `trigger`: "red" or "fixed"."""
    if trigger not in ("red", "fixed"):
        raise ValueError(f"trigger={trigger!r}; use 'red' or 'fixed'")
    nodes, inits = [], []
    for stride in STRIDES:
        p = f"s{stride}"
        nodes.append(
            helper.make_node("AveragePool", ["input.1"], [f"{p}_pool"], kernel_shape=[stride] * 2, strides=[stride] * 2)
        )
        if stride == 32:
            if trigger == "red":
                made = _red_logit(f"{p}_pool", f"{p}_logit", max_det_width)
            else:
                made = _fixed_logit(f"{p}_pool", f"{p}_logit")
            nodes += made[0]
            inits += made[1]
        else:  # silent branches with the right shapes
            silent = np.zeros((2, 3, 1, 1), np.float32), np.full(2, -20.0, np.float32)
            inits += [_const(f"{p}_sw", silent[0]), _const(f"{p}_sb", silent[1])]
            nodes.append(helper.make_node("Conv", [f"{p}_pool", f"{p}_sw", f"{p}_sb"], [f"{p}_logit"]))
        nodes.append(helper.make_node("Sigmoid", [f"{p}_logit"], [f"{p}_prob"]))
        heads = (("score", 1, f"{p}_prob"), ("bbox", 4, None), ("kps", 10, None))
        for kind, width, source in heads:
            if source is None:  # constant per anchor: a zero conv with the values as bias
                bias = np.full(4, box_half, np.float32) if kind == "bbox" else KPS_OFFSETS
                inits += [
                    _const(f"{p}_{kind}_w", np.zeros((2 * width, 3, 1, 1), np.float32)),
                    _const(f"{p}_{kind}_b", np.tile(bias, 2)),
                ]
                nodes.append(helper.make_node("Conv", [f"{p}_pool", f"{p}_{kind}_w", f"{p}_{kind}_b"], [f"{p}_{kind}"]))
                source = f"{p}_{kind}"
            # (1, 2*width, h, w) -> (h*w*2, width): anchors vary fastest, as SCRFD expects
            inits.append(_const(f"{p}_{kind}_shape", np.array([-1, width], np.int64)))
            nodes += [
                helper.make_node("Transpose", [source], [f"{p}_{kind}_t"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{p}_{kind}_t", f"{p}_{kind}_shape"], [f"{kind}_{stride}"]),
            ]
    outputs = [
        helper.make_tensor_value_info(f"{kind}_{s}", TensorProto.FLOAT, [f"n{s}", width])
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10))
        for s in STRIDES
    ]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])]
    _save(nodes, inputs, outputs, inits, Path(path))
    return Path(path)


def write_tiny_arcface(path, dim: int = 512, seed: int = 0) -> Path:
    """An ArcFace-shaped recognizer: (N, 3, 112, 112) -> (N, dim), a pool and a random projection."""
    rng = np.random.default_rng(seed)
    projection = (rng.standard_normal((3 * 14 * 14, dim)) / np.sqrt(3 * 14 * 14)).astype(np.float32)
    # Node names must not start with "Sub"/"Mul": ArcFaceONNX would take it for an mxnet
    # export with built-in normalisation and skip its (x - 127.5) / 127.5.
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool", kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "projection"], ["embedding"], name="project"),
    ]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])]
    _save(nodes, inputs, outputs, [_const("projection", projection)], Path(path))
    return Path(path)


def write_pack(root, name: str = "buffalo_l", dim: int = 512, **detector) -> Path:
    """An insightface root holding ``models/<name>/`` with a tiny detector and recognizer; returns
    the root (what ``FaceAnalyzer(root=...)`` and ``$FASTFACE_INSIGHTFACE_ROOT`` take)."""
    pack = Path(root) / "models" / name
    pack.mkdir(parents=True, exist_ok=True)
    write_tiny_scrfd(pack / "det_tiny.onnx", **detector)
    write_tiny_arcface(pack / "w600k_tiny.onnx", dim=dim)
    return Path(root)
