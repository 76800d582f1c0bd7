"""ONNX Runtime sessions on the CPU by default, on CUDA when asked and really in use."""
from __future__ import annotations

from pathlib import Path

import onnxruntime

from fitter_backend.models.errors import LandmarkModelError

DEVICES = ("cpu", "cuda", "auto")


def create_session(onnx_path: str | Path, device: str = "cpu") -> onnxruntime.InferenceSession:
    """An InferenceSession for ``onnx_path``.

    device: "cpu"; "cuda" (fails clearly unless onnxruntime-gpu is installed and the CUDA
    provider actually runs the session); "auto" (CUDA when that works, else CPU).
    """
    if device not in DEVICES:
        raise LandmarkModelError(f"device must be one of {DEVICES}, got {device!r}")
    path = Path(onnx_path)
    if not path.is_file():
        raise LandmarkModelError(f"ONNX model {path} does not exist")
    wants_cuda = device != "cpu" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "cuda" and not wants_cuda:
        raise LandmarkModelError(
            f"CUDA was asked for but this onnxruntime ({onnxruntime.__version__}) offers only "
            f"{onnxruntime.get_available_providers()}; install onnxruntime-gpu to use the GPU")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_cuda else ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a missing CUDA library is reported below, once
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own, unexported exception types
        raise LandmarkModelError(f"{path} is not a usable ONNX model: {str(error).splitlines()[0][:300]}") from None
    # onnxruntime silently falls back to the CPU when CUDA libraries are missing.
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise LandmarkModelError(
            f"CUDA was asked for but onnxruntime could not start it for {path} (in use: "
            f"{session.get_providers()}); check the CUDA and cuDNN libraries of onnxruntime-gpu")
    return session


def session_device(session: onnxruntime.InferenceSession) -> str:
    """"cuda" or "cpu": what actually runs the session."""
    return "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
