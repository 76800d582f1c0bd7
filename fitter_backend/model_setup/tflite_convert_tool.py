"""Converts TFLite models to ONNX; runs INSIDE the throwaway conversion environment.

This file is executed as a script by that environment's Python (tensorflow-cpu, tf2onnx,
onnx); the backend never imports it. Usage::

    python tflite_convert_tool.py JOBS.json

JOBS.json is a list of ``{"tflite": path, "onnx": path, "reference": path}``. For each job:

1. ``python -m tf2onnx.convert --tflite X --output Y --opset 17``;
2. make the batch dimension dynamic: tf2onnx keeps TFLite's fixed batch of 1, so input and
   output dim 0 become the symbolic ``batch`` and constant Reshape targets whose first entry
   is 1 copy that dimension from their input instead (Reshape's 0);
3. run the TFLite interpreter on three seeded random inputs and save inputs and outputs to
   ``reference`` (.npz), so the backend can check the ONNX model against TFLite with
   onnxruntime (see :func:`fitter_backend.model_setup.verify.check_against_reference`).
"""
import json
import subprocess
import sys

import numpy as np
import onnx
import tensorflow as tf
from onnx import numpy_helper

OPSET = 17
REFERENCE_BATCH = 3


def convert(tflite_path: str, onnx_path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--tflite", tflite_path,
         "--output", onnx_path, "--opset", str(OPSET)],
        capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise SystemExit(f"tf2onnx could not convert {tflite_path}:\n{tail}")


def make_batch_dynamic(onnx_path: str) -> None:
    model = onnx.load(onnx_path)
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in initializers:
            shape = numpy_helper.to_array(initializers[node.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0  # copy the batch size from the input
                initializers[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.value_info[:]  # stale fixed-batch intermediate shapes
    onnx.checker.check_model(model)
    onnx.save(model, onnx_path)


def tflite_reference(tflite_path: str, reference_path: str) -> None:
    interpreter = tf.lite.Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1.0, 1.0, size=(REFERENCE_BATCH, *input_detail["shape"][1:])).astype(np.float32)
    outputs: dict[str, list[np.ndarray]] = {d["name"]: [] for d in interpreter.get_output_details()}
    for sample in inputs:
        interpreter.set_tensor(input_detail["index"], sample[None])
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            outputs[detail["name"]].append(interpreter.get_tensor(detail["index"])[0])
    np.savez(reference_path, input=inputs,
             **{f"output:{name}": np.stack(values) for name, values in outputs.items()})


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        jobs = json.load(handle)
    for job in jobs:
        convert(job["tflite"], job["onnx"])
        make_batch_dynamic(job["onnx"])
        tflite_reference(job["tflite"], job["reference"])


if __name__ == "__main__":
    main()
