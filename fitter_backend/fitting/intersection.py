"""Geometry of E_intersect, derived from the head model: eyelids against the eyeball spheres,
lips against convex hulls of planes around the teeth (paper, supplement).

Each teeth hull is rigid with the joint that skins most of its vertices (the head for the
upper teeth, the jaw for the lower ones). Planes are stored in that joint's frame, relative
to its rest location: a world point x is tested as x_local = R_k^T (x - o_k).
Vertices already inside at the neutral pose are left out (the mesh is the reference), and
the eyeball radius is shrunk where the neutral eyelids sit closer than it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from fitter_backend.fitting.sampling import farthest_points
from fitter_backend.head_models.head_model import HeadModel

MAX_VERTICES_PER_REGION = 48


@dataclasses.dataclass(frozen=True)
class TeethHull:
    """Planes around one set of teeth, rotating with ``joint`` and carried by ``anchor_vertex``
    (a tooth vertex, so the hull follows expressions such as jawOpen as well as the jaw)."""

    joint: int
    anchor_vertex: int
    normals: np.ndarray   # (H, 3) outward
    offsets: np.ndarray   # (H,) inside when normals @ R^T (x - anchor) + offsets < 0


@dataclasses.dataclass(frozen=True)
class IntersectionGeometry:
    eyelid_vertices: np.ndarray   # (Ve,)
    eyelid_eye: np.ndarray        # (Ve,) 0 or 1: which eyeball
    eye_joints: np.ndarray        # (2,)
    eye_radii_m: np.ndarray       # (2,) effective radii
    lip_vertices: np.ndarray      # (Vl,)
    hulls: tuple[TeethHull, ...]

    @property
    def anchor_vertices(self) -> np.ndarray:
        return np.array([h.anchor_vertex for h in self.hulls], dtype=int)


def _hull_planes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):
        return None
    return hull.equations[:, :3], hull.equations[:, 3]


def expression_extremes(model: HeadModel) -> np.ndarray:
    """(K, E) expression vectors at the ends of each channel's everyday range: +1 for
    ARKit-style activations, +-2 for PCA-style (signed) expression spaces."""
    eye = np.eye(model.num_expression)
    return eye if "jawOpen" in model.expression_names else np.concatenate([2 * eye, -2 * eye])


def intersection_geometry(model: HeadModel, max_vertices: int = MAX_VERTICES_PER_REGION) -> IntersectionGeometry:
    """Eyelid and lip vertices to watch, effective eyeball radii and teeth hulls.

    The neutral mesh and every single expression channel at its extreme count as
    intersection-free: the radii shrink and lip vertices drop out until that holds, so the
    term only fires on poses the model itself never makes.
    """
    template = np.asarray(model.template, dtype=np.float64)
    basis = np.asarray(model.expression_basis, dtype=np.float64)
    extremes = expression_extremes(model)
    poses = np.concatenate([template[None], template[None] + np.einsum("vck,nk->nvc", basis, extremes)])
    regressor = np.asarray(model.joint_regressor, dtype=np.float64)
    joints = np.einsum("jv,nvc->njc", regressor, poses)                       # (K+1, J, 3)
    eye_joints = np.asarray(model.eyeball_joints, dtype=int)

    eyelid_ids = np.flatnonzero(model.regions["eyelids"])
    eyelid_eye = np.argmin(np.linalg.norm(template[eyelid_ids, None] - joints[0, eye_joints][None], axis=2), axis=1)
    radii = np.asarray(model.eyeball_radii_m, dtype=np.float64).copy()
    for e in range(2):
        ids = eyelid_ids[eyelid_eye == e]
        if len(ids):
            closest = np.linalg.norm(poses[:, ids] - joints[:, eye_joints[e], None], axis=2).min()
            radii[e] = min(radii[e], float(closest) - 5e-4)
    keep = eyelid_ids[farthest_points(template[eyelid_ids], max_vertices)]
    keep_eye = eyelid_eye[np.searchsorted(eyelid_ids, keep)]

    lip_ids = np.flatnonzero(model.regions["lips"])
    teeth = model.regions.get("teeth")
    if teeth is not None and teeth.any():
        teeth_ids = np.flatnonzero(teeth)
        owner = np.argmax(model.skin_weights[teeth_ids], axis=1)
        groups = [(int(j), teeth_ids[owner == j]) for j in np.unique(owner)]
    else:
        groups = []  # no teeth: nothing for the lips to intersect
    hulls = []
    for j, ids in groups:
        centroid = template[ids].mean(0)
        anchor = int(ids[np.argmin(np.linalg.norm(template[ids] - centroid, axis=1))])
        planes = _hull_planes(template[ids] - template[anchor]) if len(ids) >= 4 else None
        if planes is not None:
            hulls.append(TeethHull(j, anchor, planes[0], planes[1]))

    outside = np.ones(len(lip_ids), bool)
    for hull in hulls:  # rest and extremes: no rotation, so the local frame is a translation
        local = poses[:, lip_ids] - poses[:, [hull.anchor_vertex]]
        outside &= np.min(np.max(local @ hull.normals.T + hull.offsets, axis=2), axis=0) > 1e-4
    lip_ids = lip_ids[outside]
    lip_ids = lip_ids[farthest_points(template[lip_ids], max_vertices)]
    return IntersectionGeometry(keep, keep_eye, eye_joints, radii, lip_ids, tuple(hulls))
