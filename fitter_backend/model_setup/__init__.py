"""Set-up time fetching and conversion of third-party models (never needed at run time)."""
from fitter_backend.model_setup.errors import ModelSetupError
from fitter_backend.model_setup.mediapipe_models import ensure_mediapipe_models, models_dir

__all__ = ["ModelSetupError", "ensure_mediapipe_models", "models_dir"]
