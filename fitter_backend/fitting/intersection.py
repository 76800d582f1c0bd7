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
    joint: int
    normals: np.ndarray   # (H, 3) outward
    offsets: np.ndarray   # (H,) inside when normals @ x_local + offsets < 0


@dataclasses.dataclass(frozen=True)
class IntersectionGeometry:
    eyelid_vertices: np.ndarray   # (Ve,)
    eyelid_eye: np.ndarray        # (Ve,) 0 or 1: which eyeball
    eye_joints: np.ndarray        # (2,)
    eye_radii_m: np.ndarray       # (2,) effective radii
    lip_vertices: np.ndarray      # (Vl,)
    hulls: tuple[TeethHull, ...]

    @property
    def joint_points(self) -> np.ndarray:
        """Joints whose centres the fitter must track: the eyes, then each hull's joint."""
        return np.concatenate([self.eye_joints, [h.joint for h in self.hulls]]).astype(int)


def _hull_planes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):
        return None
    return hull.equations[:, :3], hull.equations[:, 3]


def intersection_geometry(model: HeadModel, max_vertices: int = MAX_VERTICES_PER_REGION) -> IntersectionGeometry:
    template = np.asarray(model.template, dtype=np.float64)
    joints = np.asarray(model.joint_regressor, dtype=np.float64) @ template
    eye_joints = np.asarray(model.eyeball_joints, dtype=int)
    centres = joints[eye_joints]

    eyelid_ids = np.flatnonzero(model.regions["eyelids"])
    eyelid_eye = np.argmin(np.linalg.norm(template[eyelid_ids, None] - centres[None], axis=2), axis=1)
    radii = np.asarray(model.eyeball_radii_m, dtype=np.float64).copy()
    for e in range(2):
        rest = np.linalg.norm(template[eyelid_ids[eyelid_eye == e]] - centres[e], axis=1)
        if len(rest):
            radii[e] = min(radii[e], float(rest.min()) - 2e-4)
    keep = eyelid_ids[farthest_points(template[eyelid_ids], max_vertices)]
    keep_eye = eyelid_eye[np.searchsorted(eyelid_ids, keep)]

    hulls = []
    teeth = model.regions.get("teeth")
    if teeth is not None and teeth.any():
        teeth_ids = np.flatnonzero(teeth)
        owner = np.argmax(model.skin_weights[teeth_ids], axis=1)
        groups = [(j, teeth_ids[owner == j]) for j in np.unique(owner)]
    else:
        # No teeth in the model: a hull behind the lips, shrunk towards the mouth centre.
        lips = np.flatnonzero(model.regions["lips"])
        centre = template[lips].mean(0)
        inner = centre + 0.5 * (template[lips] - centre) - np.array([0, 0, 0.008])
        owner = int(np.argmax(model.skin_weights[lips].sum(0)))
        groups = [(owner, None)]
        points_by_group = {owner: inner}
    for j, ids in groups:
        points = template[ids] if ids is not None else points_by_group[j]
        if len(points) < 4:
            continue
        planes = _hull_planes(points - joints[j])
        if planes is not None:
            hulls.append(TeethHull(int(j), planes[0], planes[1]))

    lip_ids = np.flatnonzero(model.regions["lips"])
    outside = np.ones(len(lip_ids), bool)
    for hull in hulls:
        local = template[lip_ids] - joints[hull.joint]
        outside &= np.max(local @ hull.normals.T + hull.offsets, axis=1) > 1e-4
    lip_ids = lip_ids[outside]
    lip_ids = lip_ids[farthest_points(template[lip_ids], max_vertices)]
    return IntersectionGeometry(keep, keep_eye, eye_joints, radii, lip_ids, tuple(hulls))
