"""Probabilistic 2D landmarks: the model contract, ONNX inference and the frame pipeline."""
from fitter_backend.models.contract import LandmarkMetadata
from fitter_backend.models.errors import LandmarkModelError, NoFaceError
from fitter_backend.landmarks.model import LandmarkModel
from fitter_backend.landmarks.names import (BOOTSTRAP_LANDMARKS, DEFAULT_LANDMARKS, DENSE_LANDMARKS, FACE_LANDMARKS,
                                           IRIS_LIDS_LANDMARKS, WHOLE_HEAD_LANDMARKS)

__all__ = ["BOOTSTRAP_LANDMARKS", "DEFAULT_LANDMARKS", "DENSE_LANDMARKS", "FACE_LANDMARKS", "IRIS_LIDS_LANDMARKS",
           "WHOLE_HEAD_LANDMARKS",
           "FrameLandmarks", "LandmarkMetadata", "LandmarkModel", "LandmarkModelError", "LandmarkTrack", "Landmarker",
           "NoFaceError", "load_landmarker"]

_PIPELINE = ("FrameLandmarks", "LandmarkTrack", "Landmarker")


def __getattr__(name: str):
    # Loaded lazily: the pipeline pulls in the ROI stage and OpenCV, which not every user needs.
    if name in _PIPELINE:
        from fitter_backend.landmarks import pipeline
        return getattr(pipeline, name)
    if name == "load_landmarker":
        from fitter_backend.landmarks.combined import load_landmarker
        return load_landmarker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
