"""Errors of the landmark stage."""
from fitter_backend.errors import FacecapError


class LandmarkModelError(FacecapError):
    """A landmark or face-detector model (ONNX file or its metadata) is broken or mismatched."""


class NoFaceError(FacecapError):
    """No face was found in any frame of a source."""
