"""MediaPipe's three custom TFLite operators as standard ONNX subgraphs (set-up time only).

The attention face mesh (``face_landmark_with_attention.tflite``) refines its lips, eyes and
irises inside the network: from the mesh's first guess it builds one crop transform per
region (``Landmarks2TransformMatrix``), samples a 16 x 16 patch of a feature map through it
(``TransformTensorBilinear``) and maps the region's points back (``TransformLandmarks``).
Each is written here from MediaPipe's reference kernels (``mediapipe/util/tflite/operations``,
version 2 of each, the version the model uses) with ONNX operators only, for any batch, so
ONNX Runtime runs the whole model without custom operators.

Conventions of the kernels: a 4 x 4 matrix ``M`` maps a point ``(x, y)`` of the crop to
``(M00 x + M01 y + M03, M10 x + M11 y + M13)`` of the source; ``atan2`` and a rotation become
the unit vector between the two rotation landmarks (ONNX has no ``atan2``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tflite
from flatbuffers import flexbuffers

from fitter_backend.model_setup.errors import ModelSetupError

if TYPE_CHECKING:
    from fitter_backend.model_setup.tflite_to_onnx import _Graph


def custom_options(operator: tflite.Operator) -> dict:
    """A custom operator's options (a FlexBuffers map; empty when it has none)."""
    if not operator.CustomOptionsLength():
        return {}
    return flexbuffers.Loads(bytes(operator.CustomOptionsAsNumpy()))


def _io(graph: _Graph, operator: tflite.Operator) -> tuple[list[int], int]:
    """The operator's input and output tensors, after checking it is version 2 (the kernels here)."""
    code = graph.model.OperatorCodes(operator.OpcodeIndex())
    if code.Version() != 2:
        raise ModelSetupError(f"{graph.path}: {code.CustomCode().decode()} version {code.Version()} is not "
                              "supported (version 2 is)")
    (out,) = operator.OutputsAsNumpy()
    return [int(i) for i in operator.InputsAsNumpy()], int(out)


def _const(graph: _Graph, values, dtype=np.float32) -> str:
    return graph.initializer(np.asarray(values, dtype=dtype))


def _op(graph: _Graph, op: str, *inputs: str, **attributes) -> str:
    name = graph.fresh(op.lower())
    graph.node(op, list(inputs), [name], **attributes)
    return name


def _column(graph: _Graph, points: str, axis_index: int) -> str:
    """points (B, K, D) -> (B, K, 1), coordinate ``axis_index``."""
    return _op(graph, "Gather", points, _const(graph, [axis_index], np.int64), axis=2)


def landmarks_to_transform_matrix(graph: _Graph, operator: tflite.Operator) -> None:
    """Landmarks (B, N, 3) -> (B, 4, 4): the crop of a region's points, turned so the two
    rotation landmarks lie at ``target_rotation_radians``, sized by the points' extent times
    ``scale_x``/``scale_y``, mapping output pixels (``output_width`` x ``output_height``) to
    landmark coordinates."""
    (landmarks,), out = _io(graph, operator)
    options = custom_options(operator)
    x = graph.value(landmarks, "nhwc")
    pair = _op(graph, "Gather", x, _const(graph, [options["left_rotation_idx"], options["right_rotation_idx"]],
                                          np.int64), axis=1)
    delta = _op(graph, "Sub", *(_op(graph, "Gather", pair, _const(graph, [k], np.int64), axis=1) for k in (1, 0)))
    dx, dy = _column(graph, delta, 0), _column(graph, delta, 1)                    # (B, 1, 1)
    length = _op(graph, "Sqrt", _op(graph, "Add", _op(graph, "Mul", dx, dx), _op(graph, "Mul", dy, dy)))
    cos0, sin0 = _op(graph, "Div", dx, length), _op(graph, "Div", dy, length)     # the pair's direction
    target = float(options["target_rotation_radians"])
    ct, st = _const(graph, np.cos(target)), _const(graph, np.sin(target))
    # r = target - atan2(dy, dx)
    c = _op(graph, "Add", _op(graph, "Mul", ct, cos0), _op(graph, "Mul", st, sin0))
    s = _op(graph, "Sub", _op(graph, "Mul", st, cos0), _op(graph, "Mul", ct, sin0))
    subset = _op(graph, "Gather", x, _const(graph, options["subset_idxs"], np.int64), axis=1)
    px, py = _column(graph, subset, 0), _column(graph, subset, 1)                 # (B, K, 1)
    rx = _op(graph, "Sub", _op(graph, "Mul", c, px), _op(graph, "Mul", s, py))
    ry = _op(graph, "Add", _op(graph, "Mul", s, px), _op(graph, "Mul", c, py))
    low = [_op(graph, "ReduceMin", v, axes=[1], keepdims=1) for v in (rx, ry)]
    high = [_op(graph, "ReduceMax", v, axes=[1], keepdims=1) for v in (rx, ry)]
    half = _const(graph, 0.5)
    size = [_op(graph, "Sub", h, lo) for h, lo in zip(high, low)]
    middle = [_op(graph, "Mul", _op(graph, "Add", h, lo), half) for h, lo in zip(high, low)]
    centre_x = _op(graph, "Add", _op(graph, "Mul", c, middle[0]), _op(graph, "Mul", s, middle[1]))
    centre_y = _op(graph, "Sub", _op(graph, "Mul", c, middle[1]), _op(graph, "Mul", s, middle[0]))
    width, height = float(options["output_width"]), float(options["output_height"])
    scale_x = _op(graph, "Mul", size[0], _const(graph, options["scale_x"] / width))
    scale_y = _op(graph, "Mul", size[1], _const(graph, options["scale_y"] / height))
    # rotation by -r, then the scale: [[c sx, s sy], [-s sx, c sy]]
    a00, a01 = _op(graph, "Mul", c, scale_x), _op(graph, "Mul", s, scale_y)
    a10, a11 = _op(graph, "Neg", _op(graph, "Mul", s, scale_x)), _op(graph, "Mul", c, scale_y)
    half_w, half_h = _const(graph, width / 2), _const(graph, height / 2)
    tx = _op(graph, "Sub", centre_x, _op(graph, "Add", _op(graph, "Mul", a00, half_w), _op(graph, "Mul", a01, half_h)))
    ty = _op(graph, "Sub", centre_y, _op(graph, "Add", _op(graph, "Mul", a10, half_w), _op(graph, "Mul", a11, half_h)))
    zero = _op(graph, "Mul", c, _const(graph, 0.0))
    one = _op(graph, "Add", zero, _const(graph, 1.0))
    rows = _op(graph, "Concat", a00, a01, zero, tx, a10, a11, zero, ty, zero, zero, one, zero, zero, zero, zero, one,
               axis=2)
    graph.finish("Reshape", [rows, _const(graph, [-1, 4, 4], np.int64)], out, 0, "nhwc")


def _matrix_entries(graph: _Graph, matrix: str, entries: list[int], shape: list[int]) -> str:
    """(B, 4, 4) -> the row-major ``entries`` of each matrix, reshaped to (B, *shape)."""
    flat = _op(graph, "Reshape", matrix, _const(graph, [-1, 16], np.int64))
    picked = _op(graph, "Gather", flat, _const(graph, entries, np.int64), axis=1)
    return _op(graph, "Reshape", picked, _const(graph, [-1, *shape], np.int64))


def transform_tensor_bilinear(graph: _Graph, operator: tflite.Operator) -> None:
    """Feature map (B, H, W, C) and matrix (B, 4, 4) -> (B, h, w, C): each output pixel's centre
    mapped through the matrix, sampled bilinearly; samples outside the map are zero."""
    (features, matrix), out = _io(graph, operator)
    _, height_in, width_in, _ = graph.shape(features)
    _, height, width, _ = graph.shape(out)
    # [x + 0.5, y + 0.5, 1] . [[M00, M10], [M01, M11], [M03, M13]] - 0.5: the kernel's
    # pixel-centre (align corners) correction.
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.ones(height * width)], axis=1)[None]
    linear = _matrix_entries(graph, graph.value(matrix, "nhwc"), [0, 4, 1, 5, 3, 7], [3, 2])
    coords = _op(graph, "Sub", _op(graph, "MatMul", _const(graph, base), linear), _const(graph, 0.5))  # (B, hw, 2)
    limit = _const(graph, [[[width_in - 1, height_in - 1]]])
    inside = _op(graph, "And", _op(graph, "GreaterOrEqual", coords, _const(graph, 0.0)),
                 _op(graph, "LessOrEqual", coords, limit))
    mask = _op(graph, "ReduceMin", _op(graph, "Cast", inside, to=1), axes=[2], keepdims=0)
    mask = _op(graph, "Reshape", mask, _const(graph, [-1, 1, height, width], np.int64))
    grid = _op(graph, "Sub", _op(graph, "Mul", coords, _const(graph, [[[2 / (width_in - 1), 2 / (height_in - 1)]]])),
               _const(graph, 1.0))
    grid = _op(graph, "Reshape", grid, _const(graph, [-1, height, width, 2], np.int64))
    sampled = _op(graph, "GridSample", graph.value(features, "nchw"), grid, align_corners=1, mode="bilinear",
                  padding_mode="zeros")
    graph.finish("Mul", [sampled, mask], out, 0, "nchw")


def transform_landmarks(graph: _Graph, operator: tflite.Operator) -> None:
    """Points (B, N, 2) and matrix (B, 4, 4) -> (B, N, 2) mapped through the matrix."""
    (points, matrix), out = _io(graph, operator)
    m = graph.value(matrix, "nhwc")
    linear = _matrix_entries(graph, m, [0, 4, 1, 5], [2, 2])
    shift = _matrix_entries(graph, m, [3, 7], [1, 2])
    graph.finish("Add", [_op(graph, "MatMul", graph.value(points, "nhwc"), linear), shift], out, 0, "nhwc")


CUSTOM_CONVERTERS = {
    "CUSTOM:Landmarks2TransformMatrix": landmarks_to_transform_matrix,
    "CUSTOM:TransformTensorBilinear": transform_tensor_bilinear,
    "CUSTOM:TransformLandmarks": transform_landmarks,
}
