"""Shared test fixtures. Importing fitter_backend first sets its thread defaults before numpy
loads. The Blender tests (tests/blender, run in Blender's environment) load this file too, so
backend modules are imported inside the fixtures, not at the top."""
from pathlib import Path

import fitter_backend  # noqa: F401  (environment defaults, see fitter_backend/__init__.py)
import pytest

#: The shared fixtures beside the repository (tests that need them skip cleanly without).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def models() -> dict:
    """The MediaPipe models built by set-up (built now when missing)."""
    from fitter_backend.model_setup import ensure_mediapipe_models
    return ensure_mediapipe_models(progress=lambda message: None)


@pytest.fixture(scope="session")
def wheel(models):
    """The mediapipe wheel set-up read its models from (already downloaded by then)."""
    from fitter_backend.model_setup.mediapipe_models import fetch_mediapipe_wheel
    return fetch_mediapipe_wheel(progress=lambda message: None)


@pytest.fixture(scope="session")
def detector(models):
    from fitter_backend.roi import FaceDetector
    return FaceDetector.load(models["face_detector"])


@pytest.fixture(scope="session")
def mesh(models):
    from fitter_backend.landmarks import LandmarkModel
    return LandmarkModel.load(models["face_mesh_468"])
