"""Probabilistic 2D landmarks: the model contract, ONNX inference and the frame pipeline."""
from fitter_backend.landmarks.contract import LandmarkMetadata
from fitter_backend.landmarks.errors import LandmarkModelError, NoFaceError
from fitter_backend.landmarks.model import LandmarkModel

#: The product's landmark models: the dense network shipped in ``onnx_models/models/`` and
#: MediaPipe's face mesh converted at set-up (the bootstrap, always selectable).
DENSE_LANDMARKS = "dense_320_mobilenet_v2"
BOOTSTRAP_LANDMARKS = "face_mesh_468"
DEFAULT_LANDMARKS = BOOTSTRAP_LANDMARKS

__all__ = ["BOOTSTRAP_LANDMARKS", "DEFAULT_LANDMARKS", "DENSE_LANDMARKS", "FrameLandmarks", "LandmarkMetadata",
           "LandmarkModel", "LandmarkModelError", "LandmarkTrack", "Landmarker", "NoFaceError"]

_PIPELINE = ("FrameLandmarks", "LandmarkTrack", "Landmarker")


def __getattr__(name: str):
    # The pipeline imports fitter_backend.roi, which imports this package's contract and
    # session helpers: loading it lazily keeps that from being an import cycle.
    if name in _PIPELINE:
        from fitter_backend.landmarks import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
