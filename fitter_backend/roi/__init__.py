"""Regions of interest: exact crops, BlazeFace face detection and ROI tracking."""
from fitter_backend.roi.crop import CropTransform, warp_crop
from fitter_backend.roi.detector import FaceCandidate, FaceDetector
from fitter_backend.roi.regions import AffineRoi, SquareRoi

__all__ = ["AffineRoi", "CropTransform", "FaceCandidate", "FaceDetector", "SquareRoi", "warp_crop"]
