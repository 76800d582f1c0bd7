"""Carry annotations (region masks, named surface points) from one head mesh to another.

The two heads need not share topology: the source's neutral head is aligned to the target
by a similarity transform (a coarse start from the shared conventions, metres, +Y up, the
face towards +Z, then ICP with scale on the source's face region), regions move by
nearest-vertex labels and surface points by closest-point projection onto the target's
triangles. Used to annotate FLAME from the open head and to embed other meshes (e.g.
MediaPipe's canonical face) on a head model.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import rodrigues


# -- closest points ----------------------------------------------------------------------
def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
                                ) -> np.ndarray:
    """Barycentric weights (..., 3) of the closest point on triangle (a, b, c) to each point.

    All inputs (..., 3), broadcast together; Voronoi-region tests after Ericson,
    "Real-Time Collision Detection" 5.1.5, evaluated for every element at once.
    """
    ab, ac, ap = b - a, c - a, points - a
    bp, cp = points - b, points - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    with np.errstate(divide="ignore", invalid="ignore"):
        total = va + vb + vc
        v_in, w_in = vb / total, vc / total
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    shape = np.broadcast_shapes(v_in.shape, t_ab.shape)
    bary = np.stack(np.broadcast_arrays(1 - v_in - w_in, v_in, w_in), axis=-1).astype(np.float64)
    # Later regions take precedence, mirroring the early returns of the scalar algorithm.
    regions = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (0 * t_bc, 1 - t_bc, t_bc)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, 0 * t_ac, t_ac)),
        ((d6 >= 0) & (d5 <= d6), (0.0, 0.0, 1.0)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, 0 * t_ab)),
        ((d3 >= 0) & (d4 <= d3), (0.0, 1.0, 0.0)),
        ((d1 <= 0) & (d2 <= 0), (1.0, 0.0, 0.0)),
    ]
    for mask, weights in regions:
        value = np.stack([np.broadcast_to(np.asarray(w, dtype=np.float64), shape) for w in weights], axis=-1)
        bary = np.where(np.broadcast_to(mask, shape)[..., None], value, bary)
    # Degenerate (zero-area) triangles leave NaNs: fall back to their first corner.
    return np.where(np.isfinite(bary).all(-1, keepdims=True), bary, np.array([1.0, 0.0, 0.0]))


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("...c,...c->...", x, y)


@dataclasses.dataclass(frozen=True)
class ClosestPoints:
    """triangle (N,) int64, barycentric (N, 3), position (N, 3), distance (N,)."""

    triangle: np.ndarray
    barycentric: np.ndarray
    position: np.ndarray
    distance: np.ndarray


class MeshSurface:
    """Closest-point queries on a triangle mesh (optionally on a subset of its triangles).

    Candidates per query: the triangles with the nearest centroids plus every triangle
    around the nearest vertex, so large and small triangles are both found.
    """

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, triangle_mask: np.ndarray | None = None,
                 num_candidates: int = 16):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.triangles = np.asarray(triangles, dtype=np.int64)
        ids = np.arange(len(self.triangles)) if triangle_mask is None else np.flatnonzero(triangle_mask)
        if len(ids) == 0:
            raise HeadModelError("closest-point query on a mesh without triangles")
        self._triangle_ids = ids
        corners = self.vertices[self.triangles[ids]]
        self._centroid_tree = cKDTree(corners.mean(1))
        self._k = min(num_candidates, len(ids))
        used = np.unique(self.triangles[ids])
        self.vertex_ids = used
        self._vertex_tree = cKDTree(self.vertices[used])
        # Triangles around each used vertex, padded by repeating the first one.
        owner = self.triangles[ids].ravel()
        tri_of = np.repeat(np.arange(len(ids)), 3)
        order = np.argsort(owner, kind="stable")
        owner, tri_of = owner[order], tri_of[order]
        slot = np.searchsorted(used, owner)
        starts = np.searchsorted(slot, np.arange(len(used)))
        valence = np.bincount(slot, minlength=len(used))
        rank = np.arange(len(slot)) - starts[slot]
        ring = np.repeat(tri_of[starts][:, None], valence.max(), axis=1)
        ring[slot, rank] = tri_of
        self._ring = ring

    def normals(self, triangle: np.ndarray) -> np.ndarray:
        """(N, 3) unit normals of the given triangles (zero for degenerate ones)."""
        a, b, c = np.moveaxis(self.vertices[self.triangles[triangle]], 1, 0)
        normal = np.cross(b - a, c - a)
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        return normal / np.where(length > 0, length, 1.0)

    def closest(self, points: np.ndarray, chunk: int = 4096) -> ClosestPoints:
        """Closest surface points to (N, 3) points."""
        points = np.asarray(points, dtype=np.float64)
        parts = [self._closest(points[i:i + chunk]) for i in range(0, len(points), chunk)]
        if not parts:
            empty = np.zeros((0, 3))
            return ClosestPoints(np.zeros(0, np.int64), empty, empty, np.zeros(0))
        return ClosestPoints(*(np.concatenate(p) for p in zip(*(dataclasses.astuple(q) for q in parts))))

    def _closest(self, points: np.ndarray) -> ClosestPoints:
        _, near_tri = self._centroid_tree.query(points, k=self._k)
        _, near_vertex = self._vertex_tree.query(points)
        candidates = np.concatenate([np.reshape(near_tri, (len(points), -1)), self._ring[near_vertex]], axis=1)
        corners = self.vertices[self.triangles[self._triangle_ids[candidates]]]  # (N, K, 3, 3)
        bary = closest_points_on_triangles(points[:, None], corners[..., 0, :], corners[..., 1, :],
                                           corners[..., 2, :])
        position = np.einsum("nkc,nkcd->nkd", bary, corners)
        distance = np.linalg.norm(position - points[:, None], axis=-1)
        best = np.argmin(distance, axis=1)
        rows = np.arange(len(points))
        return ClosestPoints(self._triangle_ids[candidates[rows, best]], bary[rows, best],
                             position[rows, best], distance[rows, best])


# -- alignment ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Similarity:
    """x' = scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray     # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity:
    """Least-squares similarity taking (N, 3) source points onto (N, 3) targets (Umeyama 1991)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    xs, xt = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(xt.T @ xs / len(source))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(sigma) @ sign) / np.mean(np.sum(xs * xs, axis=1)))
    return Similarity(scale, rotation, mu_t - scale * rotation @ mu_s)


def align_to_surface(points: np.ndarray, anchor: np.ndarray, target: MeshSurface,
                     iterations: int = 30, tolerance_m: float = 1e-5) -> Similarity:
    """ICP with scale taking (N, 3) points onto the target surface.

    Coarse start: same orientation and scale (both heads follow the project's conventions);
    ``anchor``, a source point on the front of the face (the nose tip), is moved onto the
    target vertex furthest along +Z. A few point-to-point steps (robust from afar) are
    followed by point-to-plane steps (which do not crawl along flat areas). Pairs further
    apart than three times the median distance are left out, so crops that differ (neck,
    shoulders, eyeballs) do no harm.
    """
    points = np.asarray(points, dtype=np.float64)
    front = target.vertices[target.vertex_ids]
    nose = front[np.argmax(front[:, 2])]
    current = Similarity(1.0, np.eye(3), nose - np.asarray(anchor, dtype=np.float64))
    for iteration in range(iterations):
        moved = current.apply(points)
        hits = target.closest(moved)
        keep = hits.distance <= max(3.0 * np.median(hits.distance), 1e-6)
        if iteration < 5:
            step = fit_similarity(moved[keep], hits.position[keep])
        else:
            step = _point_to_plane_step(moved[keep], hits.position[keep], target.normals(hits.triangle[keep]))
        current = Similarity(step.scale * current.scale, step.rotation @ current.rotation,
                             step.apply(current.translation))
        change = np.max(np.linalg.norm(step.apply(moved) - moved, axis=1))
        if change < tolerance_m:
            break
    return current


def _point_to_plane_step(points: np.ndarray, targets: np.ndarray, normals: np.ndarray) -> Similarity:
    """Linearised similarity (small rotation w, scale 1 + d, shift u about the centroid c)
    minimising sum (n . (p' - q))^2 with p' = c + (1 + d) R(w) (p - c) + u."""
    centre = points.mean(0)
    local = points - centre
    rows = np.concatenate([np.cross(local, normals), np.sum(normals * local, axis=1, keepdims=True), normals],
                          axis=1)
    rhs = -np.sum(normals * (points - targets), axis=1)
    solution = np.linalg.lstsq(rows, rhs, rcond=None)[0]
    rotation, scale = rodrigues(solution[:3]), 1.0 + solution[3]
    return Similarity(scale, rotation, centre + solution[4:] - scale * rotation @ centre)


# -- annotation transfer -----------------------------------------------------------------
def surface_point_positions(vertices: np.ndarray, triangles: np.ndarray, points: SurfacePoints) -> np.ndarray:
    """(S, 3) positions of barycentric surface points on one mesh."""
    corners = np.asarray(vertices, dtype=np.float64)[np.asarray(triangles)[points.triangle]]
    return np.einsum("sk,skc->sc", points.barycentric.astype(np.float64), corners)


def embed_points(positions: np.ndarray, names: tuple[str, ...], surface: MeshSurface) -> SurfacePoints:
    """(S, 3) positions near a mesh as barycentric SurfacePoints at their closest surface points."""
    hits = surface.closest(positions)
    return SurfacePoints(hits.triangle.astype(np.int32), hits.barycentric.astype(np.float32), tuple(names))


def transfer_annotations(source: HeadModel, target_vertices: np.ndarray, target_triangles: np.ndarray,
                         target_triangle_mask: np.ndarray | None = None
                         ) -> tuple[dict[str, np.ndarray], SurfacePoints]:
    """Regions and semantic points of ``source`` on another head mesh.

    target_vertices (V, 3) metres, +Y up, face towards +Z; target_triangles (F, 3);
    target_triangle_mask (F,) bool: the skin triangles to align to and to place points on
    (e.g. not the eyeballs); default all. Returns ({region: (V,) bool} for every source
    region, by nearest aligned source vertex; SurfacePoints on the target's triangles).
    """
    target_vertices = np.asarray(target_vertices, dtype=np.float64)
    target_triangles = np.asarray(target_triangles, dtype=np.int64)
    if target_vertices.ndim != 2 or target_vertices.shape[1] != 3 or target_triangles.ndim != 2 \
            or target_triangles.shape[1] != 3:
        raise HeadModelError(f"annotation transfer needs (V, 3) vertices and (F, 3) triangles, got "
                             f"{target_vertices.shape} and {target_triangles.shape}")
    source_vertices = source.template.astype(np.float64)
    face = source.regions["face"]
    if not face.any():
        raise HeadModelError(f"head model {source.name!r} has an empty 'face' region; cannot align to it")
    names = source.semantic_points.names
    anchor_name = "ibug_30"  # nose tip
    anchor = (surface_point_positions(source_vertices, source.triangles,
                                      source.semantic_points.subset([anchor_name]))[0]
              if anchor_name in names else source_vertices[face][np.argmax(source_vertices[face, 2])])
    surface = MeshSurface(target_vertices, target_triangles, target_triangle_mask)
    transform = align_to_surface(source_vertices[face], anchor, surface)

    aligned = transform.apply(source_vertices)
    _, nearest = cKDTree(aligned).query(target_vertices)
    regions = {name: np.asarray(mask, dtype=bool)[nearest] for name, mask in source.regions.items()}
    positions = transform.apply(surface_point_positions(source_vertices, source.triangles, source.semantic_points))
    return regions, embed_points(positions, names, surface)
