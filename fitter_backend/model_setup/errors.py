"""Errors of the set-up step that fetches and converts third-party models."""
from fitter_backend.errors import FacecapError


class ModelSetupError(FacecapError):
    """A third-party model could not be fetched, read or converted."""
