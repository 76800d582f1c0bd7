"""Checks a converted ONNX model against the TFLite outputs saved by the conversion tool."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from fitter_backend.model_setup.errors import ModelSetupError

#: Relative to the largest reference value; float32 conversions land near 1e-6 of it.
RELATIVE_TOLERANCE = 1e-4


def check_against_reference(onnx_path: Path, reference_path: Path) -> float:
    """Run the whole reference batch at once (which also checks the dynamic batch) and
    return the largest absolute difference; raise ModelSetupError above tolerance."""
    reference = np.load(reference_path)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    results = dict(zip(names, session.run(None, {session.get_inputs()[0].name: reference["input"]})))
    worst = 0.0
    for key in reference.files:
        if not key.startswith("output:"):
            continue
        name = key[len("output:"):]
        expected = reference[key]
        if name not in results or results[name].shape != expected.shape:
            raise ModelSetupError(f"converted model {onnx_path} lacks output {name} {expected.shape} "
                                  f"(has {[(n, r.shape) for n, r in results.items()]})")
        difference = float(np.abs(results[name] - expected).max())
        if difference > RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max())):
            raise ModelSetupError(f"converted model {onnx_path} differs from TFLite by {difference:.3g} "
                                  f"on output {name}")
        worst = max(worst, difference)
    return worst
