"""Probabilistic 2D landmarks: the model contract, ONNX inference and the frame pipeline."""
from fitter_backend.models.contract import LandmarkMetadata
from fitter_backend.models.errors import LandmarkModelError, NoFaceError
from fitter_backend.landmarks.model import LandmarkModel

#: The product's landmark models: the dense network shipped in ``onnx_models/models/``,
#: MediaPipe's face mesh converted at set-up (the bootstrap), and both at once, the default:
#: MediaPipe's face points, their lids redrawn by MediaPipe's iris model
#: (:mod:`fitter_backend.landmarks.eye_refine`), plus the dense network's ears, neck and back
#: of head (:mod:`fitter_backend.landmarks.combined`). Until the dense network's face points
#: beat MediaPipe's on photographs, the face comes from MediaPipe (docs/dense_landmarks.md,
#: section 6); the iris model's lids follow blinks the face mesh misses (docs/landmark_models.md,
#: section 3b).
DENSE_LANDMARKS = "dense_320_mobilenet_v2"
BOOTSTRAP_LANDMARKS = "face_mesh_468"
FACE_LANDMARKS = f"{BOOTSTRAP_LANDMARKS}_iris"
WHOLE_HEAD_LANDMARKS = f"{FACE_LANDMARKS}+{DENSE_LANDMARKS}"
DEFAULT_LANDMARKS = WHOLE_HEAD_LANDMARKS

__all__ = ["BOOTSTRAP_LANDMARKS", "DEFAULT_LANDMARKS", "DENSE_LANDMARKS", "FACE_LANDMARKS", "WHOLE_HEAD_LANDMARKS",
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
