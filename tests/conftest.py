"""Shared test fixtures. Importing fitter_backend first sets its thread defaults before numpy loads."""
from pathlib import Path

import pytest

import fitter_backend  # noqa: F401  (environment defaults, see fitter_backend/__init__.py)
from fitter_backend.landmarks import LandmarkModel
from fitter_backend.model_setup import ensure_mediapipe_models
from fitter_backend.roi import FaceDetector

#: The shared fixtures beside the repository (tests that need them skip cleanly without).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def models() -> dict:
    """The MediaPipe models built by set-up (built now when missing)."""
    return ensure_mediapipe_models(progress=lambda message: None)


@pytest.fixture(scope="session")
def detector(models) -> FaceDetector:
    return FaceDetector.load(models["face_detector"])


@pytest.fixture(scope="session")
def mesh(models) -> LandmarkModel:
    return LandmarkModel.load(models["face_mesh_468"])
