"""Vectorised z-buffer triangle rasteriser (numpy only, no per-pixel or per-triangle loops).

Triangles are grouped by the size of their pixel bounding box; each group is rasterised as
one (tile_h, tile_w, T) array of candidate pixels, so the Python loop runs over a few dozen
size classes, not over triangles. Fragments go into the z-buffer with ``np.minimum.at`` on a
64-bit key ``(float32 depth bits << 32) | triangle``: the nearest fragment wins and equal
depths go to the lower triangle id, deterministically. Barycentrics are computed once per
pixel afterwards, for the winning triangle only.

Pixel conventions are those of :mod:`fitter_backend.render.camera`: pixel (i, j) has its
centre at ``(u, v) = (j + 0.5, i + 0.5)``; a pixel belongs to a triangle when its centre
lies inside it (edges inclusive). Triangles with a vertex at ``depth <= near_depth`` are
dropped, not clipped. With ``perspective=False`` (orthographic views, where ``depth`` is any
positive distance along the view axis) attributes and depth are interpolated affinely.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.errors import FacecapError

#: Tile sides (pixels) a bounding box is rounded up to. Powers of two keep the number of
#: (width, height) classes, hence Python-level iterations, small for meshes whose triangles
#: vary widely in size and shape (measured faster than finer or square-only ladders).
_TILE_SIDES = 2 ** np.arange(1, 14)
_MAX_SIDE = int(_TILE_SIDES[-1])
#: Candidate pixels evaluated per numpy call (bounds temporary memory at ~50 MB).
_CHUNK_CANDIDATES = 1 << 21
#: Tolerance on screen-space barycentrics: closes cracks between triangles sharing an edge.
_INSIDE_EPS = 1e-5
_EMPTY_KEY = np.iinfo(np.uint64).max


@dataclasses.dataclass(frozen=True)
class RasterBuffers:
    """Per-pixel result of :func:`rasterise` for an image of h rows and w columns.

    triangle_id: (h, w) int32 index of the visible triangle, -1 on background.
    barycentric: (h, w, 3) float32 perspective-correct weights of the triangle's three
        vertices (sum to 1; zeros on background).
    depth: (h, w) float32 depth (``-Z`` in camera space); ``inf`` on background.
    """

    triangle_id: np.ndarray
    barycentric: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(h, w) bool: pixels covered by a triangle."""
        return self.triangle_id >= 0


def rasterise(vertices_px_depth: np.ndarray, triangles: np.ndarray, size: tuple[int, int],
              cull_backfaces: bool = False, near_depth: float = 0.0, perspective: bool = True) -> RasterBuffers:
    """Rasterise triangles with z-buffering and perspective-correct barycentrics.

    vertices_px_depth: (V, 3) ``[u, v, depth]`` per vertex (see ``camera.to_pixels_depth``).
    triangles: (F, 3) vertex indices.
    size: (w, h) image size in pixels.
    cull_backfaces: drop triangles that are clockwise as seen by the camera (front faces are
        counter-clockwise when viewed from outside, the OBJ / OpenGL convention).
    near_depth: triangles with any vertex at or nearer than this depth are dropped.
    perspective: True for pinhole projections (perspective-correct barycentrics); False for
        orthographic ones, where screen-space barycentrics are already correct.
    """
    width, height = (int(s) for s in size)
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise FacecapError(f"rasterise: image sides must be between 1 and {_MAX_SIDE} pixels, got {size}")
    vertices = np.asarray(vertices_px_depth, dtype=np.float64)
    triangles = np.asarray(triangles)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise FacecapError(f"rasterise: vertices must have shape (V, 3), got {vertices.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise FacecapError(f"rasterise: triangles must have shape (F, 3), got {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise FacecapError(f"rasterise: triangle indices must lie in [0, {len(vertices)})")

    setup = _setup_triangles(vertices, triangles, width, height, cull_backfaces, near_depth, perspective)
    keys = np.full(width * height, _EMPTY_KEY, dtype=np.uint64)
    for pixels, depth, row in _fragments(setup, width):
        # Setup rows follow triangle ids, so equal depths resolve to the lower triangle id.
        key = (depth.view(np.uint32).astype(np.uint64) << np.uint64(32)) | row.astype(np.uint64)
        np.minimum.at(keys, pixels, key)
    return _resolve(keys, setup, width, height)


def interpolate(raster: RasterBuffers, triangles: np.ndarray, vertex_values: np.ndarray,
                background: float = 0.0) -> np.ndarray:
    """Interpolate per-vertex values over the image with the raster's barycentrics.

    vertex_values: (V, C) (or (V,)) values per vertex, e.g. normals, colours, positions.
    Returns (h, w, C) (or (h, w)) float32; ``background`` where no triangle is visible.
    """
    values = np.asarray(vertex_values, dtype=np.float32)
    columns = values.reshape(len(values), -1).T                                # (C, V)
    mask = raster.mask
    corner_ids = np.asarray(triangles)[raster.triangle_id[mask]].T             # (3, P)
    weights = raster.barycentric[mask].T                                       # (3, P)
    out = np.full(mask.shape + (len(columns),), background, dtype=np.float32)
    out[mask] = sum(np.take(columns, corner_ids[k], axis=1) * weights[k] for k in range(3)).T
    return out.reshape(mask.shape + values.shape[1:])


@dataclasses.dataclass(frozen=True)
class _TriangleSetup:
    """The T triangles that can produce fragments, sorted by triangle id. Arrays put the
    triangle axis last so that per-corner arithmetic runs on contiguous rows."""

    index: np.ndarray         # (T,) triangle ids
    perspective: bool         # the 4th plane below is 1/depth (True) or depth (False)
    corner_depth: np.ndarray  # (3, T)
    corner_weight: np.ndarray # (3, T) 1 / depth (perspective) or 1: bary ~ screen bary * weight
    bary_planes: np.ndarray   # (9, T) screen barycentric k = A u + B v + C, rows A0 A1 A2 B0.. C2
    bbox: np.ndarray          # (4, T) int64 first column, last column, first row, last row
    # The planes of the three barycentrics and of 1/depth in float32 tile-local coordinates,
    # x = u - (first column + 0.5), y = v - (first row + 0.5): value = slope_u x + slope_v y + offset.
    slope_u: np.ndarray       # (4, T) float32
    slope_v: np.ndarray       # (4, T) float32
    offset: np.ndarray        # (4, T) float32


def _setup_triangles(vertices: np.ndarray, triangles: np.ndarray, width: int, height: int,
                     cull_backfaces: bool, near_depth: float, perspective: bool) -> _TriangleSetup:
    corner_ids = np.ascontiguousarray(triangles.T)                            # (3, F)
    u, v, depth = (np.take(np.ascontiguousarray(vertices[:, k]), corner_ids) for k in range(3))
    # Twice the signed area in (u, v); v grows downwards, so counter-clockwise-as-seen is < 0.
    area2 = (u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0])
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(area2) & (np.minimum(np.minimum(depth[0], depth[1]), depth[2]) > near_depth)
        keep &= (area2 < 0) if cull_backfaces else (area2 != 0)
        # Pixel j is a candidate when its centre j + 0.5 lies in [u_min, u_max].
        bbox = np.stack([np.ceil(np.minimum(np.minimum(u[0], u[1]), u[2]) - 0.5),
                         np.floor(np.maximum(np.maximum(u[0], u[1]), u[2]) - 0.5),
                         np.ceil(np.minimum(np.minimum(v[0], v[1]), v[2]) - 0.5),
                         np.floor(np.maximum(np.maximum(v[0], v[1]), v[2]) - 0.5)])
        keep &= (bbox[0] <= width - 1) & (bbox[1] >= 0) & (bbox[2] <= height - 1) & (bbox[3] >= 0)
        keep &= (bbox[0] <= bbox[1]) & (bbox[2] <= bbox[3])
    index = np.flatnonzero(keep)
    u, v, depth, area2, bbox = u[:, index], v[:, index], depth[:, index], area2[index], bbox[:, index]
    bbox = np.clip(bbox, 0, [[width - 1], [width - 1], [height - 1], [height - 1]]).astype(np.int64)
    # The weight of corner k is the signed area of (p, corner k+1, corner k+2) over the area.
    next_u, next_v = u[[1, 2, 0]], v[[1, 2, 0]]
    du, dv = u[[2, 0, 1]] - next_u, v[[2, 0, 1]] - next_v
    inv_area2 = 1.0 / area2
    slope_u, slope_v = -dv * inv_area2, du * inv_area2
    constant = (dv * next_u - du * next_v) * inv_area2
    # Under perspective 1/depth is affine in screen space, under orthography depth is.
    key = 1.0 / depth if perspective else depth
    slope_u4 = np.vstack([slope_u, (key * slope_u).sum(0)])
    slope_v4 = np.vstack([slope_v, (key * slope_v).sum(0)])
    constant4 = np.vstack([constant, (key * constant).sum(0)])
    offset4 = slope_u4 * (bbox[0] + 0.5) + slope_v4 * (bbox[2] + 0.5) + constant4
    weight = 1.0 / depth if perspective else np.ones_like(depth)
    return _TriangleSetup(index, perspective, depth, weight, np.vstack([slope_u, slope_v, constant]), bbox,
                          slope_u4.astype(np.float32), slope_v4.astype(np.float32),
                          offset4.astype(np.float32))


def _fragments(setup: _TriangleSetup, width: int):
    """Yield (pixel index, float32 depth, setup row) of every covered candidate pixel."""
    box_w = setup.bbox[1] - setup.bbox[0] + 1
    box_h = setup.bbox[3] - setup.bbox[2] + 1
    tile_w = _TILE_SIDES[np.searchsorted(_TILE_SIDES, box_w)]
    tile_h = _TILE_SIDES[np.searchsorted(_TILE_SIDES, box_h)]
    group_key = tile_h * (_MAX_SIDE + 1) + tile_w
    order = np.argsort(group_key, kind="stable")
    starts = np.flatnonzero(np.diff(group_key[order], prepend=-1) != 0)
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        members = order[start:end]
        tw, th = int(tile_w[members[0]]), int(tile_h[members[0]])
        per_chunk = max(1, _CHUNK_CANDIDATES // (tw * th))
        for chunk_start in range(0, len(members), per_chunk):
            chunk = members[chunk_start:chunk_start + per_chunk]
            yield _tile_fragments(setup, chunk, box_w[chunk], box_h[chunk], tw, th, width)


def _tile_fragments(setup: _TriangleSetup, rows: np.ndarray, box_w: np.ndarray, box_h: np.ndarray,
                    tile_w: int, tile_h: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Candidates are laid out (tile row, tile column, triangle): the triangle axis is
    # innermost, so numpy's loops are long even when tiles are 2 x 3 pixels.
    x = np.arange(tile_w, dtype=np.float32)[:, None]
    y = np.arange(tile_h, dtype=np.float32)[:, None]
    col_term = setup.slope_u[:, None, rows] * x                                # (4, tw, T)
    row_term = setup.slope_v[:, None, rows] * y + setup.offset[:, None, rows]  # (4, th, T)
    # Candidates in the tile padding beyond the triangle's clipped box never count.
    col_term[0][x >= box_w] = -np.inf
    row_term[0][y >= box_h] = -np.inf
    inside = row_term[0, :, None] + col_term[0, None]                          # (th, tw, T)
    for k in (1, 2):
        np.minimum(inside, row_term[k, :, None] + col_term[k, None], out=inside)
    flat = np.flatnonzero(inside >= -_INSIDE_EPS)
    cell, t = np.divmod(flat, len(rows))
    yy, xx = np.divmod(cell, tile_w)
    depth = row_term[3, yy, t] + col_term[3, xx, t]
    # Keys compare float bits as integers, which orders non-negative floats only.
    depth = np.maximum(depth, np.float32(1e-30))
    if setup.perspective:
        depth = np.float32(1.0) / depth
    row = rows[t]
    pixel = (setup.bbox[2, row] + yy) * width + setup.bbox[0, row] + xx
    return pixel, depth, row


def _resolve(keys: np.ndarray, setup: _TriangleSetup, width: int, height: int) -> RasterBuffers:
    triangle_id = np.full(width * height, -1, dtype=np.int32)
    barycentric = np.zeros((width * height, 3), dtype=np.float32)
    depth = np.full(width * height, np.inf, dtype=np.float32)
    pixels = np.flatnonzero(keys != _EMPTY_KEY)
    if len(pixels):
        row = (keys[pixels] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        u = (pixels % width) + 0.5
        v = (pixels // width) + 0.5
        planes = np.take(setup.bary_planes, row, axis=1)                       # (9, P)
        screen = planes[0:3] * u + planes[3:6] * v + planes[6:9]              # (3, P)
        # Perspective correction: weights proportional to screen weights over depth.
        weights = np.maximum(screen, 0.0) * np.take(setup.corner_weight, row, axis=1)
        weights /= weights.sum(0)
        barycentric[pixels] = weights.T
        depth[pixels] = (weights * np.take(setup.corner_depth, row, axis=1)).sum(0)
        triangle_id[pixels] = np.take(setup.index, row)
    return RasterBuffers(triangle_id.reshape(height, width), barycentric.reshape(height, width, 3),
                         depth.reshape(height, width))
