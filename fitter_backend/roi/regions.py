"""Regions of interest: the offline square ROI and the real-time affine ROI.

Both give a :class:`CropTransform` for any crop size and crop through it, so landmarks
found in the crop map back to image pixels exactly (``transform.to_image``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.roi.crop import CropTransform, warp_crop


@dataclasses.dataclass(frozen=True)
class SquareRoi:
    """An axis-aligned square (no rotation, uniform scale): the paper's offline ROI.

    centre_px: (x, y) image pixels; size_px: side in image pixels.
    """

    centre_px: tuple[float, float]
    size_px: float

    def transform(self, out_size: int) -> CropTransform:
        scale = out_size / self.size_px
        left = self.centre_px[0] - self.size_px / 2
        top = self.centre_px[1] - self.size_px / 2
        return CropTransform(np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]]))

    def crop(self, image: np.ndarray, out_size: int) -> tuple[np.ndarray, CropTransform]:
        """(crop (out_size, out_size, C), image -> crop transform)."""
        transform = self.transform(out_size)
        return warp_crop(image, transform, out_size), transform

    @classmethod
    def around_box(cls, box_px: np.ndarray, scale: float) -> "SquareRoi":
        """The square with the box's centre and ``scale`` times its longer side.
        box_px: (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (float(v) for v in box_px)
        return cls(((x0 + x1) / 2, (y0 + y1) / 2), scale * max(x1 - x0, y1 - y0))

    @classmethod
    def around_points(cls, points_px: np.ndarray, scale: float) -> "SquareRoi":
        """Around the bounding box of (N, 2) points (NaN rows ignored)."""
        points = np.asarray(points_px, dtype=np.float64)
        points = points[np.isfinite(points).all(1)]
        return cls.around_box(np.concatenate([points.min(0), points.max(0)]), scale)

    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1)."""
        half = self.size_px / 2
        return np.array([self.centre_px[0] - half, self.centre_px[1] - half,
                         self.centre_px[0] + half, self.centre_px[1] + half])


@dataclasses.dataclass(frozen=True)
class AffineRoi:
    """A similarity crop (rotation, uniform scale, translation) for the real-time path: it
    places the eyes and the mouth where the landmark model expects them.

    unit_matrix: (2, 3) image -> crop coordinates of a crop of side 1.
    """

    unit_matrix: np.ndarray

    @classmethod
    def from_anchors(cls, anchors_px: dict[str, np.ndarray], targets: dict[str, tuple[float, float]]) -> "AffineRoi":
        """Least-squares similarity taking each anchor (image px) to its target (fraction
        of the crop side); anchors and targets share keys (e.g. right_eye, left_eye, mouth)."""
        names = sorted(targets)
        source = np.array([anchors_px[n] for n in names], dtype=np.float64)
        target = np.array([targets[n] for n in names], dtype=np.float64)
        return cls(similarity_matrix(source, target))

    @property
    def size_px(self) -> float:
        """Side of the crop in image pixels."""
        return 1.0 / CropTransform(self.unit_matrix).scale

    def transform(self, out_size: int) -> CropTransform:
        return CropTransform(self.unit_matrix * out_size)

    def crop(self, image: np.ndarray, out_size: int) -> tuple[np.ndarray, CropTransform]:
        transform = self.transform(out_size)
        return warp_crop(image, transform, out_size), transform


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (Umeyama, no reflection) mapping (K, 2) source
    points onto (K, 2) target points, K >= 2."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    s, t = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(t.T @ s)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / (s ** 2).sum()
    linear = scale * rotation
    return np.hstack([linear, (target_mean - linear @ source_mean)[:, None]])
