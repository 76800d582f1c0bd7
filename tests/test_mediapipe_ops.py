"""MediaPipe's custom operators in the converted attention mesh against the kernels' definitions.

No TFLite interpreter runs MediaPipe's custom operators outside MediaPipe, so each ONNX subgraph
is checked on the activations it meets inside the real model (the attention mesh from the
set-up wheel, on a real face): the operator's ONNX inputs and output are read from the converted
graph, and the output is recomputed by plain loops written from the reference kernels
(``mediapipe/util/tflite/operations``, version 2). The model set-up builds from it (the plain
mesh with the attention mesh's lids) is then checked point by point.
"""
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import tflite

from fitter_backend.model_setup import ModelSetupError
from fitter_backend.model_setup.attention_mesh import LID_OUTPUTS, OUTPUT, PREFIX, face_mesh_with_attention_lids
from fitter_backend.model_setup.mediapipe_models import MESH_IO
from fitter_backend.model_setup.mediapipe_ops import custom_options
from fitter_backend.model_setup.tflite_to_onnx import _operator_name, convert

onnxruntime = pytest.importorskip("onnxruntime")

MEMBER = "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite"
MESH_MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
FACE_IMAGE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "images" / "astronaut.png"


@pytest.fixture(scope="module")
def face_input(detector) -> np.ndarray:
    """A real face in the face mesh's square crop (the detector's box grown by 1.5), 192 px in [0, 1]."""
    from fitter_backend.roi.regions import SquareRoi

    if not FACE_IMAGE.is_file():
        pytest.skip(f"{FACE_IMAGE} is absent")
    image = cv2.cvtColor(cv2.imread(str(FACE_IMAGE)), cv2.COLOR_BGR2RGB)
    (face, *_) = detector.detect(image)
    box = face.box_px
    crop, _ = SquareRoi(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), 1.5 * face.size_px).crop(image, 192)
    return (crop.astype(np.float32) / 255.0)[None]


@pytest.fixture(scope="module")
def attention(wheel) -> tuple[bytes, tflite.Model]:
    with zipfile.ZipFile(wheel) as bundle:
        payload = bundle.read(MEMBER)
    return payload, tflite.Model.GetRootAs(payload, 0)


def _activations(payload: bytes, names: list[str], face: np.ndarray) -> dict[str, np.ndarray]:
    model = convert(payload, Path(MEMBER))
    known = {node_output for node in model.graph.node for node_output in node.output}
    for name in names:
        assert name in known, name
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"input_1": face})))


def _nhwc(array: np.ndarray, shape: list[int]) -> np.ndarray:
    """A 4-D activation as TFLite holds it (the converter may keep it NCHW)."""
    return array if list(array.shape[1:]) == shape[1:] else array.transpose(0, 2, 3, 1)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def reference_landmarks_to_transform_matrix(landmarks: np.ndarray, options: dict) -> np.ndarray:
    left, right = landmarks[options["left_rotation_idx"], :2], landmarks[options["right_rotation_idx"], :2]
    rotation = options["target_rotation_radians"] - np.arctan2(right[1] - left[1], right[0] - left[0])
    turned = landmarks[options["subset_idxs"], :2] @ _rotation(rotation).T
    low, high = turned.min(axis=0), turned.max(axis=0)
    centre = _rotation(-rotation) @ ((low + high) / 2)
    width, height = options["output_width"], options["output_height"]
    matrix = np.eye(4)
    matrix[:2, :2] = _rotation(-rotation) @ np.diag([options["scale_x"] * (high - low)[0] / width,
                                                     options["scale_y"] * (high - low)[1] / height])
    matrix[:2, 3] = centre - matrix[:2, :2] @ [width / 2, height / 2]
    return matrix


def reference_transform_tensor_bilinear(features: np.ndarray, matrix: np.ndarray, height: int, width: int
                                        ) -> np.ndarray:
    rows, cols, channels = features.shape
    shift = matrix[:2, 3] + 0.5 * (matrix[:2, 0] + matrix[:2, 1]) - 0.5   # the kernel's pixel-centre correction
    out = np.zeros((height, width, channels))
    for y in range(height):
        for x in range(width):
            sx, sy = matrix[:2, :2] @ [x, y] + shift
            if sx < 0 or sx > cols - 1 or sy < 0 or sy > rows - 1:
                continue
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))

            def read(r: int, c: int) -> np.ndarray:
                return features[r, c] if r < rows and c < cols else np.zeros(channels)

            fx, fy = sx - x0, sy - y0
            upper = (1 - fx) * read(y0, x0) + fx * read(y0, x0 + 1)
            lower = (1 - fx) * read(y0 + 1, x0) + fx * read(y0 + 1, x0 + 1)
            out[y, x] = fy * lower + (1 - fy) * upper
    return out


def _custom_operators(model: tflite.Model) -> list[tuple[str, list[int], int, dict]]:
    graph = model.Subgraphs(0)
    found = []
    for i in range(graph.OperatorsLength()):
        operator = graph.Operators(i)
        name = _operator_name(model, operator)
        if name.startswith("CUSTOM:"):
            found.append((name, [int(t) for t in operator.InputsAsNumpy()], int(operator.OutputsAsNumpy()[0]),
                          custom_options(operator)))
    return found


def test_custom_operators_match_the_reference_kernels_inside_the_model(attention, face_input):
    payload, model = attention
    graph = model.Subgraphs(0)
    operators = _custom_operators(model)
    assert sorted({name for name, *_ in operators}) == ["CUSTOM:Landmarks2TransformMatrix",
                                                        "CUSTOM:TransformLandmarks", "CUSTOM:TransformTensorBilinear"]
    tensors = sorted({t for _, inputs, out, _ in operators for t in (*inputs, out)})
    values = _activations(payload, [f"t{t}" for t in tensors], face_input)
    shape = {t: [int(d) for d in graph.Tensors(t).ShapeAsNumpy()] for t in tensors}
    checked = 0
    for name, inputs, out, options in operators:
        got = values[f"t{out}"]
        if name == "CUSTOM:Landmarks2TransformMatrix":
            expected = reference_landmarks_to_transform_matrix(values[f"t{inputs[0]}"][0], options)
            scale = 1.0
        elif name == "CUSTOM:TransformTensorBilinear":
            features = _nhwc(values[f"t{inputs[0]}"], shape[inputs[0]])[0]
            expected = reference_transform_tensor_bilinear(features, values[f"t{inputs[1]}"][0], *shape[out][1:3])
            got = _nhwc(got, shape[out])
            scale = float(np.abs(features).max())
            assert np.count_nonzero(expected) > expected.size // 2  # the crop lies on the feature map
        else:
            matrix = values[f"t{inputs[1]}"][0]
            expected = values[f"t{inputs[0]}"][0] @ matrix[:2, :2].T + matrix[:2, 3]
            scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got[0], expected, atol=1e-4 * max(scale, 1.0), err_msg=name)
        checked += 1
    assert checked == 11


def test_the_lids_of_the_combined_model_are_the_attention_meshs_and_all_else_the_plain_meshs(
        wheel, attention, face_input):
    payload, _ = attention
    with zipfile.ZipFile(wheel) as bundle:
        mesh_payload = bundle.read(MESH_MEMBER)
    mesh_output = MESH_IO["face_mesh_468"]["mu"]
    model = face_mesh_with_attention_lids(convert(mesh_payload, Path(MESH_MEMBER)), mesh_output,
                                          convert(payload, Path(MEMBER)))
    names = [OUTPUT, mesh_output, *(PREFIX + output for output in LID_OUTPUTS)]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in names[2:])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip(names, session.run(names, {"input_1": np.repeat(face_input, 2, axis=0)})))
    combined = outputs[OUTPUT].reshape(2, 468, 3)
    mesh = outputs[mesh_output].reshape(2, 468, 3)
    np.testing.assert_array_equal(combined[0], combined[1])                    # a batch of 2
    lids = []
    for output, indices in LID_OUTPUTS.items():
        points = outputs[PREFIX + output].reshape(2, -1, 2)[0, :len(indices)]
        np.testing.assert_array_equal(combined[0, list(indices), :2], points)
        # an open face: the attention mesh's lids lie on the plain mesh's, a few pixels of 192 away
        assert np.median(np.linalg.norm(points - mesh[0, list(indices), :2], axis=1)) < 3.0, output
        assert not np.array_equal(points, mesh[0, list(indices), :2])
        lids.extend(indices)
    others = [i for i in range(468) if i not in lids]
    np.testing.assert_array_equal(combined[0, others], mesh[0, others])
    np.testing.assert_array_equal(combined[0, :, 2], mesh[0, :, 2])


def test_an_unknown_custom_operator_is_named_in_the_refusal(attention):
    payload, _ = attention
    renamed = payload.replace(b"TransformLandmarks", b"TransformLandmarkz")  # same length: still a flatbuffer
    with pytest.raises(ModelSetupError, match=r"face_landmark_with_attention\.tflite: .*does not support "
                                              r"CUSTOM:TransformLandmarkz"):
        convert(renamed, Path("face_landmark_with_attention.tflite"))
