"""An orthographic z-buffer of a mesh seen from the front (+Z), for placing surface points
the way an annotator sees the face in a frontal photograph.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FrontView:
    """Pixel (row, col) looks at x = x0 + col * pixel_m, y = y0 - row * pixel_m.

    triangle: (H, W) int front-most triangle, -1 where nothing is hit.
    depth: (H, W) z of that surface (-inf where nothing is hit).
    """

    triangle: np.ndarray
    depth: np.ndarray
    x0: float
    y0: float
    pixel_m: float

    def to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) metres -> (..., 2) fractional (row, col)."""
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(self.y0 - xy[..., 1]) / self.pixel_m, (xy[..., 0] - self.x0) / self.pixel_m], -1)

    def to_xy(self, row, col) -> np.ndarray:
        """Pixel centres -> (..., 2) metres."""
        return np.stack([self.x0 + np.asarray(col) * self.pixel_m, self.y0 - np.asarray(row) * self.pixel_m], -1)


def barycentric_2d(corners: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 3, 2) triangle corners, (..., 2) points -> (..., 3) barycentric weights in the xy
    plane (NaN for triangles of zero projected area)."""
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    v0, v1, d = b - a, c - a, points - a
    den = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    den = np.where(np.abs(den) < 1e-18, np.nan, den)
    w1 = (d[..., 0] * v1[..., 1] - v1[..., 0] * d[..., 1]) / den
    w2 = (v0[..., 0] * d[..., 1] - d[..., 0] * v0[..., 1]) / den
    return np.stack([1 - w1 - w2, w1, w2], -1)


def pixel_barycentrics(view: FrontView, vertices: np.ndarray, triangles: np.ndarray,
                       rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(P,) pixels that hit the mesh -> (P, 3) barycentric weights on their triangles."""
    corners = vertices[triangles[view.triangle[rows, cols]], :2]
    return barycentric_2d(corners, view.to_xy(rows, cols))


def front_view(vertices: np.ndarray, triangles: np.ndarray, bounds_xy: tuple[float, float, float, float],
               pixel_m: float) -> FrontView:
    """Rasterise ``triangles`` inside bounds (x_min, x_max, y_min, y_max), keeping the surface
    nearest the viewer (largest z)."""
    x_min, x_max, y_min, y_max = bounds_xy
    width = int(np.ceil((x_max - x_min) / pixel_m)) + 1
    height = int(np.ceil((y_max - y_min) / pixel_m)) + 1
    view = FrontView(np.full((height, width), -1), np.full((height, width), -np.inf), x_min, y_max, pixel_m)
    corners_px = view.to_pixel(vertices[triangles][:, :, :2])  # (F, 3, 2) row, col
    first = np.maximum(np.ceil(corners_px.min(1)).astype(int), 0)
    last = np.minimum(np.floor(corners_px.max(1)).astype(int), [height - 1, width - 1])
    for t in np.flatnonzero(np.all(first <= last, axis=1)):  # triangles covering a pixel centre
        tri = triangles[t]
        (r0, c0), (r1, c1) = first[t], last[t]
        rows, cols = np.mgrid[r0:r1 + 1, c0:c1 + 1]
        weights = barycentric_2d(vertices[tri, :2], view.to_xy(rows, cols))
        inside = np.all(weights >= -1e-9, axis=-1)
        z = weights @ vertices[tri, 2]
        closer = inside & (z > view.depth[r0:r1 + 1, c0:c1 + 1])
        view.depth[r0:r1 + 1, c0:c1 + 1][closer] = z[closer]
        view.triangle[r0:r1 + 1, c0:c1 + 1][closer] = t
    return view
