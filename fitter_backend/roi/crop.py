"""Crops of an image through an exact, invertible similarity transform.

Pixel convention (the project's, see :mod:`fitter_backend.render.camera`): pixel (row i,
column j) covers ``[j, j + 1) x [i, i + 1)``, its centre is ``(j + 0.5, i + 0.5)``; the same
holds in the crop. A :class:`CropTransform` maps image points to crop points with a 2x3
matrix ``A``: ``p_crop = A[:, :2] @ p_image + A[:, 2]``; its inverse is computed exactly.
Strong down-scaling first halves the needed region with Gaussian pyramid steps (anti-aliasing)
whose geometry is folded into the transform, so the mapping stays exact.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class CropTransform:
    """image -> crop similarity (no reflection). ``matrix`` (2, 3) float64."""

    matrix: np.ndarray

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) crop -> image."""
        linear = np.linalg.inv(self.matrix[:, :2])
        return np.hstack([linear, -linear @ self.matrix[:, 2:]])

    def to_crop(self, points_px: np.ndarray) -> np.ndarray:
        """(..., 2) image points -> (..., 2) crop points."""
        return _apply(self.matrix, points_px)

    def to_image(self, points_px: np.ndarray) -> np.ndarray:
        """(..., 2) crop points -> (..., 2) image points."""
        return _apply(self.inverse_matrix(), points_px)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) matrices: apply inner, then outer."""
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def warp_crop(image: np.ndarray, transform: CropTransform, out_size: int) -> np.ndarray:
    """The (out_size, out_size, C) crop of ``image`` through ``transform``; outside is black.

    Bilinear sampling; each whole factor of two of down-scaling is first done by
    ``cv2.pyrDown`` on the covered region only, so big 4K heads crop fast and without aliasing.
    """
    matrix = transform.matrix
    height, width = image.shape[:2]
    levels = int(math.floor(math.log2(1.0 / transform.scale))) if transform.scale <= 0.5 else 0
    if levels:
        corners = transform.to_image(np.array([[0, 0], [out_size, 0], [0, out_size], [out_size, out_size]], float))
        margin = 3 * 2 ** levels
        x0, y0 = np.floor(corners.min(0)).astype(int) - margin
        x1, y1 = np.ceil(corners.max(0)).astype(int) + margin
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 - x0 < 2 ** (levels + 1) or y1 - y0 < 2 ** (levels + 1):  # (almost) all outside the image
            return np.zeros((out_size, out_size) + image.shape[2:], image.dtype)
        image = image[y0:y1, x0:x1]
        matrix = _compose(matrix, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))
        for _ in range(levels):
            image = cv2.pyrDown(image)
            # pyrDown's pixel i is centred on the source's pixel 2i: x_src = 2 x_dst - 0.5
            matrix = _compose(matrix, np.array([[2.0, 0.0, -0.5], [0.0, 2.0, -0.5]]))
    # OpenCV samples with pixel centres at integers: shift by half a pixel on both sides.
    to_cv = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5]])
    from_cv = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    crop_to_image_cv = _compose(to_cv, _compose(CropTransform(matrix).inverse_matrix(), from_cv))
    return cv2.warpAffine(image, crop_to_image_cv, (out_size, out_size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
