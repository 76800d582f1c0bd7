"""Head models: the generic articulated morphable head, its forward model and its loaders."""
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints

__all__ = ["HeadModel", "SurfacePoints"]
