"""The project's TFLite -> ONNX converter against TFLite itself on the same inputs.

The reference is the TFLite interpreter from ai-edge-litert, a test-only package (the bench
environment); elsewhere these tests skip. ``pytest tests/test_tflite_conversion.py -s``
prints the largest difference per model output.
"""
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fitter_backend.model_setup.mediapipe_models import V2_BUNDLE
from fitter_backend.model_setup.tflite_to_onnx import convert

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="the TFLite reference needs ai-edge-litert "
                                                                   "(requirements/bench.txt)")
onnxruntime = pytest.importorskip("onnxruntime")

#: Relative to the largest reference value (as the set-up check before this converter).
RELATIVE_TOLERANCE = 1e-4
WHEEL_MODELS = {
    "face_detection_short_range": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "iris_landmark": "mediapipe/modules/iris_landmark/iris_landmark.tflite",
}


def _tflite(wheel: Path, name: str) -> tuple[bytes, Path]:
    if name == "face_landmarks_detector":
        if not V2_BUNDLE.is_file():
            pytest.skip(f"the v2 bundle {V2_BUNDLE} is absent")
        archive, member = V2_BUNDLE, "face_landmarks_detector.tflite"
    else:
        archive, member = wheel, WHEEL_MODELS[name]
    with zipfile.ZipFile(archive) as bundle:
        return bundle.read(member), Path(member)


@pytest.mark.parametrize("name", [*WHEEL_MODELS, "face_landmarks_detector"])
def test_onnx_matches_tflite_on_the_same_inputs(wheel, name, tmp_path):
    payload, member = _tflite(wheel, name)
    session = onnxruntime.InferenceSession(convert(payload, member).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    tflite_path = tmp_path / member.name
    tflite_path.write_bytes(payload)
    interpreter = litert.Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (model_input,) = interpreter.get_input_details()
    assert session.get_inputs()[0].name == model_input["name"]
    inputs = np.random.default_rng(0).uniform(-1.0, 1.0, size=(3, *model_input["shape"][1:])).astype(np.float32)
    onnx_outputs = dict(zip([o.name for o in session.get_outputs()],
                            session.run(None, {model_input["name"]: inputs})))  # one batch: dynamic batch too
    outputs = interpreter.get_output_details()
    assert sorted(onnx_outputs) == sorted(d["name"] for d in outputs)
    expected = {d["name"]: [] for d in outputs}
    for sample in inputs:
        interpreter.set_tensor(model_input["index"], sample[None])
        interpreter.invoke()
        for detail in outputs:
            expected[detail["name"]].append(interpreter.get_tensor(detail["index"])[0])
    for output, values in expected.items():
        reference = np.stack(values)
        assert onnx_outputs[output].shape == reference.shape, output
        difference = float(np.abs(onnx_outputs[output] - reference).max())
        scale = float(np.abs(reference).max())
        print(f"{name} {output}: max |ONNX - TFLite| {difference:.2e} (largest value {scale:.3g})")
        assert difference <= RELATIVE_TOLERANCE * max(1.0, scale), (output, difference)
