"""The names of the product's landmark models (a module of its own so that the landmark
stage's modules can use them without importing the package), and where the shipped ones live."""
from pathlib import Path

#: The networks the repository ships (the dense models and their contracts), beside the package.
SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[2] / "onnx_models" / "models"

#: The product's landmark models: the dense network shipped in ``onnx_models/models/``,
#: MediaPipe's face mesh converted at set-up (the bootstrap), and both at once, the default:
#: MediaPipe's face points with lids from MediaPipe's attention mesh and iris model, averaged
#: (:mod:`fitter_backend.model_setup.attention_mesh`, :mod:`fitter_backend.landmarks.eye_refine`),
#: plus the dense network's ears, neck and back of head (:mod:`fitter_backend.landmarks.combined`).
#: Until the dense network's face points beat MediaPipe's on photographs, the face comes from
#: MediaPipe (docs/dense_landmarks.md, section 6); the two lid models follow blinks the face mesh
#: misses (docs/landmark_models.md, section 3b).
DENSE_LANDMARKS = "dense_320_mobilenet_v2"
BOOTSTRAP_LANDMARKS = "face_mesh_468"
#: The face mesh whose lids come from the attention mesh (built at set-up from both networks).
ATTENTION_LIDS_LANDMARKS = f"{BOOTSTRAP_LANDMARKS}_attention_lids"
FACE_LANDMARKS = f"{ATTENTION_LIDS_LANDMARKS}_iris"
WHOLE_HEAD_LANDMARKS = f"{FACE_LANDMARKS}+{DENSE_LANDMARKS}"
#: The default before the attention mesh's lids: the iris model's lids alone, about 7 ms a frame
#: faster (docs/landmark_models.md, section 8), with the dense network's head points.
IRIS_LIDS_LANDMARKS = f"{BOOTSTRAP_LANDMARKS}_iris+{DENSE_LANDMARKS}"
DEFAULT_LANDMARKS = WHOLE_HEAD_LANDMARKS
