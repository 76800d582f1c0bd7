"""ONNX Runtime sessions on the CPU by default, on the GPU (CUDA) when asked and really in use.

One device vocabulary end to end, the add-on's: ``"cpu"``, ``"gpu"`` (plus ``"auto"`` on the
command line); the protocol, the CLI and the job pass these words through unchanged."""
from __future__ import annotations

from pathlib import Path

import onnxruntime

from fitter_backend.models import DEVICES
from fitter_backend.models.errors import LandmarkModelError



def create_session(onnx_path: str | Path, device: str = "cpu") -> onnxruntime.InferenceSession:
    """An InferenceSession for ``onnx_path``.

    device: "cpu"; "gpu" (CUDA; fails clearly unless onnxruntime-gpu is installed and the CUDA
    provider actually runs the session); "auto" (the GPU when that works, else the CPU).
    """
    if device not in DEVICES:
        raise LandmarkModelError(f"device must be one of {DEVICES}, got {device!r}")
    path = Path(onnx_path)
    if not path.is_file():
        raise LandmarkModelError(f"ONNX model {path} does not exist")
    wants_cuda = device != "cpu" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "gpu" and not wants_cuda:
        raise LandmarkModelError(
            f"the GPU (CUDA) was asked for but this onnxruntime ({onnxruntime.__version__}) offers only "
            f"{onnxruntime.get_available_providers()}; install onnxruntime-gpu to use the GPU")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_cuda else ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a missing CUDA library is reported below, once
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own, unexported exception types
        raise LandmarkModelError(f"{path} is not a usable ONNX model: {str(error).splitlines()[0][:300]}") from None
    # onnxruntime silently falls back to the CPU when CUDA libraries are missing.
    if device == "gpu" and "CUDAExecutionProvider" not in session.get_providers():
        raise LandmarkModelError(
            f"the GPU (CUDA) was asked for but onnxruntime could not start it for {path} (in use: "
            f"{session.get_providers()}); check the CUDA and cuDNN libraries of onnxruntime-gpu")
    return session


def session_device(session: onnxruntime.InferenceSession) -> str:
    """"gpu" or "cpu": what actually runs the session."""
    return "gpu" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
