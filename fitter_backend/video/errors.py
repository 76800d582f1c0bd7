"""Errors of the frame sources."""
from fitter_backend.errors import FacecapError


class VideoError(FacecapError):
    """A video file, image sequence or set of views cannot be read as asked."""


class CalibrationError(VideoError):
    """A multi-view calibration file is malformed or does not match its videos."""
