"""Vectorised z-buffer triangle rasteriser (numpy only, no per-pixel or per-triangle loops).

Triangles are grouped by the size of their pixel bounding box; each group is rasterised as
one (T, tile_h, tile_w) array of candidate pixels, so the Python loop runs over a few dozen
size classes, not over triangles. Fragments from all groups are resolved in one pass with
``np.minimum.at`` on a 64-bit key ``(float32 depth bits << 32) | triangle id``: the nearest
fragment wins and equal depths go to the lower triangle id, deterministically.

Pixel conventions are those of :mod:`fitter_backend.render.camera`: pixel (i, j) has its
centre at ``(u, v) = (j + 0.5, i + 0.5)``; a pixel belongs to a triangle when its centre
lies inside it (edges inclusive). Triangles with a vertex at ``depth <= near_depth`` are
dropped, not clipped.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.errors import FacecapError

#: Tile sides (pixels) a bounding box is rounded up to; fine steps keep padding small.
_TILE_SIDES = np.array([2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 3072, 4096, 6144, 8192])
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
              cull_backfaces: bool = False, near_depth: float = 0.0) -> RasterBuffers:
    """Rasterise triangles with z-buffering and perspective-correct barycentrics.

    vertices_px_depth: (V, 3) ``[u, v, depth]`` per vertex (see ``camera.to_pixels_depth``).
    triangles: (F, 3) vertex indices.
    size: (w, h) image size in pixels.
    cull_backfaces: drop triangles that are clockwise as seen by the camera (front faces are
        counter-clockwise when viewed from outside, the OBJ / OpenGL convention).
    near_depth: triangles with any vertex at or nearer than this depth are dropped.
    """
    width, height = (int(s) for s in size)
    if width <= 0 or height <= 0:
        raise FacecapError(f"rasterise: image size must be positive, got {size}")
    vertices = np.asarray(vertices_px_depth, dtype=np.float64)
    triangles = np.asarray(triangles)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise FacecapError(f"rasterise: vertices must have shape (V, 3), got {vertices.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise FacecapError(f"rasterise: triangles must have shape (F, 3), got {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise FacecapError(f"rasterise: triangle indices must lie in [0, {len(vertices)})")

    setup = _setup_triangles(vertices, triangles, width, height, cull_backfaces, near_depth)
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
    flat = values.reshape(len(values), -1)
    mask = raster.mask
    out = np.full(mask.shape + (flat.shape[1],), background, dtype=np.float32)
    corners = flat[np.asarray(triangles)[raster.triangle_id[mask]]]            # (P, 3, C)
    out[mask] = np.einsum("pk,pkc->pc", raster.barycentric[mask], corners)
    return out.reshape(mask.shape + values.shape[1:])


@dataclasses.dataclass(frozen=True)
class _TriangleSetup:
    """The T triangles that can produce fragments, sorted by triangle id."""

    index: np.ndarray         # (T,) triangle ids
    inv_depth: np.ndarray     # (T, 3) 1 / depth of the corners
    bary_planes: np.ndarray   # (T, 3, 3) screen barycentric k = A u + B v + C as [k, (A, B, C)]
    bbox: np.ndarray          # (T, 4) int64 first column, last column, first row, last row
    # The planes of the three barycentrics and of 1/depth in float32 tile-local coordinates,
    # x = u - (first column + 0.5), y = v - (first row + 0.5): value = slope_u x + slope_v y + offset.
    slope_u: np.ndarray       # (T, 4) float32
    slope_v: np.ndarray       # (T, 4) float32
    offset: np.ndarray        # (T, 4) float32


def _setup_triangles(vertices: np.ndarray, triangles: np.ndarray, width: int, height: int,
                     cull_backfaces: bool, near_depth: float) -> _TriangleSetup:
    corners = vertices[triangles]                                              # (F, 3, 3)
    u, v, depth = corners[..., 0], corners[..., 1], corners[..., 2]
    # Twice the signed area in (u, v); v grows downwards, so counter-clockwise-as-seen is < 0.
    area2 = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (v[:, 1] - v[:, 0]) * (u[:, 2] - u[:, 0])
    u_min, u_max, v_min, v_max = u.min(1), u.max(1), v.min(1), v.max(1)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(area2) & (depth.min(1) > near_depth)
        keep &= (area2 < 0) if cull_backfaces else (area2 != 0)
        # Pixel j is a candidate when its centre j + 0.5 lies in [u_min, u_max].
        bbox = np.stack([np.ceil(u_min - 0.5), np.floor(u_max - 0.5),
                         np.ceil(v_min - 0.5), np.floor(v_max - 0.5)], axis=1)
        keep &= (bbox[:, 0] <= width - 1) & (bbox[:, 1] >= 0) & (bbox[:, 2] <= height - 1) & (bbox[:, 3] >= 0)
        keep &= (bbox[:, 0] <= bbox[:, 1]) & (bbox[:, 2] <= bbox[:, 3])
    index = np.flatnonzero(keep)
    u, v, depth, area2 = u[index], v[index], depth[index], area2[index]
    bbox = np.clip(bbox[index], 0, [[width - 1, width - 1, height - 1, height - 1]]).astype(np.int64)
    # The weight of corner k is the signed area of (p, corner k+1, corner k+2) over the area.
    du = u[:, [2, 0, 1]] - u[:, [1, 2, 0]]
    dv = v[:, [2, 0, 1]] - v[:, [1, 2, 0]]
    planes = np.stack([-dv, du, dv * u[:, [1, 2, 0]] - du * v[:, [1, 2, 0]]], axis=-1) / area2[:, None, None]
    inv_depth = 1.0 / depth
    # 1/depth is affine in screen space: its plane is the inverse-depth-weighted bary planes.
    depth_plane = np.einsum("tk,tkc->tc", inv_depth, planes)
    local = np.concatenate([planes, depth_plane[:, None]], axis=1)             # (T, 4, 3)
    origin_u, origin_v = bbox[:, 0] + 0.5, bbox[:, 2] + 0.5
    offset = local[..., 0] * origin_u[:, None] + local[..., 1] * origin_v[:, None] + local[..., 2]
    return _TriangleSetup(index, inv_depth, planes, bbox, local[..., 0].astype(np.float32),
                          local[..., 1].astype(np.float32), offset.astype(np.float32))


def _fragments(setup: _TriangleSetup, width: int):
    """Yield (pixel index, float32 depth, setup row) of every covered candidate pixel."""
    box_w = setup.bbox[:, 1] - setup.bbox[:, 0] + 1
    box_h = setup.bbox[:, 3] - setup.bbox[:, 2] + 1
    tile_w = _TILE_SIDES[np.searchsorted(_TILE_SIDES, box_w)]
    tile_h = _TILE_SIDES[np.searchsorted(_TILE_SIDES, box_h)]
    group_key = tile_h * (_TILE_SIDES[-1] + 1) + tile_w
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
    x = np.arange(tile_w, dtype=np.float32)
    y = np.arange(tile_h, dtype=np.float32)
    col_term = setup.slope_u[rows][:, :, None] * x                             # (T, 4, tw)
    row_term = setup.slope_v[rows][:, :, None] * y + setup.offset[rows][:, :, None]  # (T, 4, th)
    # Candidates in the tile padding beyond the triangle's clipped box never count.
    col_term[:, 0][x >= box_w[:, None]] = -np.inf
    row_term[:, 0][y >= box_h[:, None]] = -np.inf
    inside = row_term[:, 0, :, None] + col_term[:, 0, None, :]                 # (T, th, tw)
    for k in (1, 2):
        np.minimum(inside, row_term[:, k, :, None] + col_term[:, k, None, :], out=inside)
    flat = np.flatnonzero(inside >= -_INSIDE_EPS)
    t, rest = np.divmod(flat, tile_w * tile_h)
    yy, xx = np.divmod(rest, tile_w)
    inv_z = row_term[t, 3, yy] + col_term[t, 3, xx]
    depth = np.float32(1.0) / np.maximum(inv_z, np.float32(1e-30))
    row = rows[t]
    pixel = setup.bbox[row, 2] * width + setup.bbox[row, 0] + yy * width + xx
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
        planes = setup.bary_planes[row]                                        # (P, 3, 3)
        screen = planes[..., 0] * u[:, None] + planes[..., 1] * v[:, None] + planes[..., 2]
        # Perspective correction: weights proportional to screen weights over depth.
        weights = np.clip(screen, 0.0, None) * setup.inv_depth[row]
        total = weights.sum(1, keepdims=True)
        barycentric[pixels] = weights / total
        depth[pixels] = 1.0 / total[:, 0]
        triangle_id[pixels] = setup.index[row]
    return RasterBuffers(triangle_id.reshape(height, width), barycentric.reshape(height, width, 3),
                         depth.reshape(height, width))
