"""Which surface points the camera sees: a depth test against a rendered z-buffer."""
from __future__ import annotations

import numpy as np

from fitter_backend.render.rasterise import RasterBuffers


def visible_points(raster: RasterBuffers, points_px_depth: np.ndarray,
                   depth_tolerance: float = 0.002) -> np.ndarray:
    """Whether each point is in the image and not hidden behind the rendered surface.

    points_px_depth: (N, 3) ``[u, v, depth]`` of points on the rendered surface (same
        camera as the raster, see ``camera.to_pixels_depth``).
    The z-buffer holds depths at pixel centres; a point is compared with the farthest of
    the four centres around it, so points on steep (grazing) surfaces stay visible while
    points behind an occluder that covers all four are hidden; within a pixel of an
    occluding edge the answer may go either way. ``depth_tolerance`` (depth units, default
    2 mm for metres) absorbs rounding and float32 depth.
    Returns (N,) bool.
    """
    points = np.asarray(points_px_depth, dtype=np.float64)
    height, width = raster.depth.shape
    u, v, depth = points[:, 0], points[:, 1], points[:, 2]
    with np.errstate(invalid="ignore"):
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height) & (depth > 0)
    # Columns/rows of the pixel centres left/above and right/below the point.
    left = np.floor(np.nan_to_num(u) - 0.5).astype(np.int64)
    top = np.floor(np.nan_to_num(v) - 0.5).astype(np.int64)
    farthest = np.full(len(points), -np.inf)
    for dy in (0, 1):
        for dx in (0, 1):
            row = np.clip(top + dy, 0, height - 1)
            column = np.clip(left + dx, 0, width - 1)
            farthest = np.maximum(farthest, raster.depth[row, column])
    return inside & (farthest >= depth - depth_tolerance)
