"""A converted model's check at set-up: it loads in onnxruntime and its dynamic batch works.

Agreement with TFLite itself is pinned by tests/test_tflite_conversion.py, which runs the
TFLite interpreter (ai-edge-litert, a test-only package) on the same inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from fitter_backend.model_setup.errors import ModelSetupError

#: Relative to the largest output value; a batch of two vs one sample at a time.
RELATIVE_TOLERANCE = 1e-5


def check_runs(onnx_path: Path) -> None:
    """Run a seeded batch of two, then each sample alone; raise ModelSetupError when the
    model does not load, gives non-finite outputs or depends on the batch."""
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelSetupError(f"converted model {onnx_path} does not load in onnxruntime: {error}") from None
    model_input = session.get_inputs()[0]
    sample = np.random.default_rng(0).uniform(-1.0, 1.0, size=(2, *model_input.shape[1:])).astype(np.float32)
    together = session.run(None, {model_input.name: sample})
    alone = [session.run(None, {model_input.name: sample[k:k + 1]}) for k in range(2)]
    for position, output in enumerate(session.get_outputs()):
        expected = np.concatenate([run[position] for run in alone])
        if not np.isfinite(together[position]).all() or np.abs(together[position] - expected).max() > \
                RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max())):
            raise ModelSetupError(f"converted model {onnx_path} gives non-finite or batch-dependent "
                                  f"values on output {output.name}")
