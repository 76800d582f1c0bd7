"""Frame sources: video files, image sequences and synchronised multi-view sets."""
from fitter_backend.video.errors import CalibrationError, VideoError
from fitter_backend.video.frames import Frame, FrameSource, open_video
from fitter_backend.video.multiview import (CameraCalibration, MultiFrame, MultiViewSource, load_calibration,
                                            open_multiview)

__all__ = ["CalibrationError", "CameraCalibration", "Frame", "FrameSource", "MultiFrame", "MultiViewSource",
           "VideoError", "load_calibration", "open_multiview", "open_video"]
