"""Dense landmark networks: landmark sets on the open head, synthetic training data,
plain-PyTorch networks, training, ONNX export and evaluation (see docs/dense_landmarks.md).

Modules that need PyTorch (networks, training, export) import it themselves; the landmark
sets and the data generator run in the backend environment without it.
"""
from pathlib import Path

#: Where the generated landmark-set files and the shipped models live (in the repository).
PACKAGE_DIR = Path(__file__).resolve().parent
SETS_DIR = PACKAGE_DIR / "landmark_sets"
MODELS_DIR = PACKAGE_DIR / "models"
