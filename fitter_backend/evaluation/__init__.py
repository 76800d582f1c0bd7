"""Accuracy of the pipeline on annotated faces: NME of the fitted head's iBUG-68 points
(label translation) and of the landmark model's own points.

``python -m fitter_backend.evaluation nme [--fixtures DIR] [--sets 300w,wflw] [--json FILE]``
"""
from fitter_backend.evaluation.nme import box_size_px, inter_ocular_px, nme

__all__ = ["box_size_px", "inter_ocular_px", "nme"]
