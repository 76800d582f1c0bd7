"""The fitter's hot kernels as they were before the compiled (numba) kernels, frozen here so
that one benchmark run prints before/after ratios against them (``fit --against-baseline``).

:func:`baseline_kernels` swaps them in for the duration of a ``with`` block; the solver, the
energy terms and everything else stay the current code, so the ratio isolates the kernels.
Frozen from commit 34c2e95: point_rig.evaluate, point_rig.jacobians, ShotEnergy._chunk,
ShotEnergy._landmarks and ShotEnergy._intersections (the energy's projection there is
cameras.project, which this work left as it was).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from fitter_backend.fitting import point_rig
from fitter_backend.fitting.cameras import project
from fitter_backend.fitting.energy import ShotEnergy, _Chunk, _Tally
from fitter_backend.fitting.normal_equations import NormalEquations
from fitter_backend.fitting.problem import Layout, Parameters
from fitter_backend.fitting.point_rig import PointJacobians, PointRig, PointState
from fitter_backend.head_models.lbs import (kinematic_chain, left_jacobian_so3, pose_feature, rodrigues,
                                            rodrigues_derivative, skew)


class _Dense:
    """The dense per-joint layout of the pair bases that the old shape derivatives used."""

    def __init__(self, rig: PointRig):
        self.skinning_joints = np.unique(rig.pair_joint)
        slot = np.searchsorted(self.skinning_joints, rig.pair_joint)
        self.point_joint_weight = np.zeros((rig.num_points, len(self.skinning_joints)))
        self.point_joint_weight[rig.pair_point, slot] = rig.pair_weight

        def stacked(basis: np.ndarray) -> np.ndarray:
            dense = np.zeros((len(self.skinning_joints), 3, rig.num_points, basis.shape[2]), dtype=np.float32)
            dense[slot, :, rig.pair_point] = basis
            return dense.reshape(3 * len(self.skinning_joints), -1)

        self.identity_stacked = stacked(rig.pair_identity)
        self.expression_stacked = stacked(rig.pair_expression)


_DENSE: dict[int, tuple[PointRig, _Dense]] = {}


def _dense(rig: PointRig) -> _Dense:
    if id(rig) not in _DENSE or _DENSE[id(rig)][0] is not rig:
        _DENSE[id(rig)] = (rig, _Dense(rig))
    return _DENSE[id(rig)][1]


def evaluate(rig: PointRig, identity: np.ndarray, expression: np.ndarray, rotations: np.ndarray,
             translation: np.ndarray) -> PointState:
    """point_rig.evaluate before the kernels (einsum and reduceat over pairs)."""
    joints = (rig.joint_template + rig.joint_identity @ identity)[None] + np.einsum(
        "jck,nk->njc", rig.joint_expression, expression)
    rotations_local = rodrigues(rotations)
    rotations_world, origins_world = kinematic_chain(rotations_local, joints, rig.parents)
    rest = (rig.pair_template + rig.pair_identity @ identity)[None] + np.einsum(
        "qck,nk->nqc", rig.pair_expression, expression, optimize=True)
    if rig.pair_correctives.shape[2]:
        rest = rest + np.einsum("qcp,np->nqc", rig.pair_correctives, pose_feature(rotations_local), optimize=True)
    j = rig.pair_joint
    local = rest - rig.pair_weight[None, :, None] * joints[:, j]
    moved = (np.einsum("nqcd,nqd->nqc", rotations_world[:, j], local)
             + rig.pair_weight[None, :, None] * origins_world[:, j])
    points = np.add.reduceat(moved, rig.pair_start, axis=1) + translation[:, None, :]
    return PointState(points, joints, rotations_world, origins_world, moved)


def _shape_derivative(rig: PointRig, state: PointState, stacked_basis: np.ndarray, joint_basis: np.ndarray
                      ) -> np.ndarray:
    dense = _dense(rig)
    num_frames, num_points = state.points.shape[:2]
    k = joint_basis.shape[2]
    d_origin = np.empty((num_frames,) + joint_basis.shape)
    d_origin[:, 0] = joint_basis[0]
    for j in range(1, rig.num_joints):
        p = rig.parents[j]
        d_origin[:, j] = d_origin[:, p] + state.rotations_world[:, p] @ (joint_basis[j] - joint_basis[p])
    joints = dense.skinning_joints
    d_offset = d_origin[:, joints] - state.rotations_world[:, joints] @ joint_basis[joints][None]
    rotations = state.rotations_world[:, joints].transpose(0, 2, 1, 3).reshape(num_frames, 3, -1)
    out = (rotations.astype(np.float32) @ stacked_basis).reshape(num_frames, 3, num_points, k)
    out += (dense.point_joint_weight @ d_offset.transpose(0, 2, 1, 3)).astype(np.float32)
    return out


def jacobians(rig: PointRig, state: PointState, expression: np.ndarray, rotations: np.ndarray,
              with_identity: bool = True, with_expression: bool = True) -> PointJacobians:
    """point_rig.jacobians before the kernels (dense products, a loop over joints)."""
    dense = _dense(rig)
    num_frames, num_points = state.points.shape[:2]
    identity_d = (_shape_derivative(rig, state, dense.identity_stacked, rig.joint_identity)
                  if with_identity else np.zeros((num_frames, 3, num_points, 0)))
    expression_d = (_shape_derivative(rig, state, dense.expression_stacked, rig.joint_expression)
                    if with_expression else np.zeros((num_frames, 3, num_points, 0)))
    parent_world = np.concatenate(
        [np.broadcast_to(np.eye(3), (num_frames, 1, 3, 3)),
         state.rotations_world[:, np.maximum(rig.parents[1:], 0)]], axis=1)
    world_axes = parent_world @ left_jacobian_so3(rotations)
    rotation_d = np.zeros((num_frames, num_points, 3, rig.num_joints, 3))
    j = rig.pair_joint
    for k in range(rig.num_joints):
        in_subtree = rig.subtree[k, j]
        if not in_subtree.any():
            continue
        lever_pair = np.where(in_subtree[None, :, None],
                              state.moved - rig.pair_weight[None, :, None] * state.origins_world[:, None, k], 0.0)
        lever = np.add.reduceat(lever_pair, rig.pair_start, axis=1)
        for a in range(3):
            rotation_d[:, :, :, k, a] = np.cross(world_axes[:, None, k, :, a], lever)
    if rig.pair_correctives.shape[2]:
        d_local = rodrigues_derivative(rotations).reshape(num_frames, rig.num_joints, 3, 9)
        for k in range(1, rig.num_joints):
            block = rig.pair_correctives[:, :, 9 * (k - 1): 9 * k]
            d_rest = np.einsum("qcm,nam->nqca", block, d_local[:, k], optimize=True)
            per_pair = np.einsum("nqcd,nqda->nqca", state.rotations_world[:, j], d_rest, optimize=True)
            rotation_d[:, :, :, k, :] += np.add.reduceat(per_pair, rig.pair_start, axis=1)
    return PointJacobians(identity_d, expression_d, np.ascontiguousarray(rotation_d.transpose(0, 2, 1, 3, 4)),
                          world_axes)


def _chunk(self: ShotEnergy, params: Parameters, layout: Layout, frames: np.ndarray, derivatives: bool,
           with_identity: bool, with_expression: bool) -> _Chunk:
    """ShotEnergy._chunk before the kernels (derivatives copied into the per-frame block; the
    head model's blend weights as today, so both minimise the same energy)."""
    rig = self._rig_at(params.identity)
    state = point_rig.evaluate(rig, params.identity, params.expression[frames], params.rotations[frames],
                               params.translation_m[frames])
    if not derivatives:
        return _Chunk(frames, state.points, None, None, state, None)
    jac = point_rig.jacobians(rig, state, params.expression[frames], params.rotations[frames],
                              with_identity=with_identity, with_expression=with_expression)
    n, num_points = state.points.shape[:2]
    d_frame = np.zeros((n, 3, num_points, layout.frame_size), dtype=np.float32)
    if with_expression:
        d_frame[..., layout.expression_slice] = jac.expression
    d_frame[..., layout.rotation_slice] = jac.rotation.reshape(n, 3, num_points, -1)
    for c in range(3):
        d_frame[:, c, :, layout.translation_slice.start + c] = 1.0
    d_identity = jac.identity if with_identity else None
    if d_identity is not None and with_expression and len(self.scaled_units):
        self._add_scale_derivatives(d_frame, d_identity, params, layout, frames)
    return _Chunk(frames, state.points, d_frame, d_identity, state, jac)


def _rows_2x3(d_world: np.ndarray, d_points: np.ndarray) -> np.ndarray:
    """Per point (2 x 3) @ (3 x K): d_world (n, S, 2, 3), d_points (n, 3, S, K) -> (n, 2, S, K),
    as broadcast multiply-adds over contiguous rows (faster than many tiny matmuls)."""
    d = d_world.transpose(0, 2, 3, 1)[..., None].astype(d_points.dtype)  # (n, 2, 3, S, 1)
    out = d[:, :, 0] * d_points[:, None, 0]
    out += d[:, :, 1] * d_points[:, None, 1]
    out += d[:, :, 2] * d_points[:, None, 2]
    return out


def _landmarks(self: ShotEnergy, chunk, params: Parameters, layout: Layout,
               equations: NormalEquations | None, terms: _Tally, sum_sq: np.ndarray,
               with_shared: bool = True) -> list:
    """ShotEnergy._landmarks before the kernels (broadcast products, three separate J^T J products)."""
    frames = chunk.frames
    lm = self.landmark_points
    points = chunk.points[:, lm]
    projected = []
    for c in range(params.cameras.count):
        proj = project(points, params.cameras, c, derivatives=equations is not None)
        # Rows are ordered (coordinate, landmark), matching the Jacobians' layout.
        weight = self.inv_sigma[frames, c][:, None, :]                  # (n, 1, S)
        pixels = proj.pixels.transpose(0, 2, 1)                         # (n, 2, S)
        residual = (pixels - self.mu[frames, c].transpose(0, 2, 1)) * weight
        sum_sq[frames] += np.sum(residual ** 2, axis=(1, 2))
        terms.add("landmarks", residual)
        if equations is None:
            projected.append((pixels, None, None))
            continue
        d_frame = _rows_2x3(proj.d_world, chunk.d_frame[:, :, lm])       # (n, 2, S, p)
        d_shared = np.zeros(d_frame.shape[:3] + (layout.shared_size if with_shared else 0,), dtype=np.float32)
        if chunk.d_identity is not None and with_shared:
            d_shared[..., : layout.num_identity] = _rows_2x3(proj.d_world, chunk.d_identity[:, :, lm])
        focal_col = layout.focal_column(c)
        if focal_col is not None and with_shared:
            d_shared[..., focal_col] = proj.d_log_focal.transpose(0, 2, 1)
        extrinsic_cols = layout.extrinsic_columns(c)
        if extrinsic_cols is not None and with_shared:
            d_shared[..., extrinsic_cols] = proj.d_extrinsics.transpose(0, 2, 1, 3)
        n = len(frames)
        w = weight[..., None]
        if not with_shared:
            d_shared = None
        equations.add_frame_rows(frames, residual.reshape(n, -1), (d_frame * w).reshape(n, -1, layout.frame_size),
                                 None if d_shared is None else (d_shared * w).reshape(n, -1, layout.shared_size))
        projected.append((pixels, d_frame, d_shared))
    watched = self.temporal_subset
    return [(chunk.frames, tuple(None if a is None else a[:, :, watched] for a in p)) for p in projected]


def _intersections(self: ShotEnergy, chunk, layout: Layout, equations: NormalEquations | None,
                   terms: _Tally) -> None:
    """ShotEnergy._intersections before the kernels (Jacobian rows for every vertex)."""
    geometry = self.geometry
    weight = self.settings.intersect_weight_per_m
    n = len(chunk.frames)
    rows, d_frame_rows, d_identity_rows = [], [], []

    # Eyelids outside the eyeball spheres: r = w max(0, radius - |x - c|).
    eyelid = chunk.points[:, self.eyelid_points]
    eye_point = self.eye_points[geometry.eyelid_eye]
    offset = eyelid - chunk.points[:, eye_point]
    distance = np.linalg.norm(offset, axis=2)
    depth = geometry.eye_radii_m[geometry.eyelid_eye] - distance
    active = depth > 0
    rows.append(weight * np.where(active, depth, 0.0))
    if equations is not None:
        normal = offset / np.maximum(distance, 1e-12)[..., None]
        scale = np.where(active, -weight, 0.0)[..., None]
        d_rel = chunk.d_frame[:, :, self.eyelid_points] - chunk.d_frame[:, :, eye_point]
        d_frame_rows.append(scale * np.einsum("nvc,ncvp->nvp", normal, d_rel))
        if chunk.d_identity is not None:
            d_rel_id = chunk.d_identity[:, :, self.eyelid_points] - chunk.d_identity[:, :, eye_point]
            d_identity_rows.append(scale * np.einsum("nvc,ncvk->nvk", normal, d_rel_id))

    # Lips outside the teeth hulls: r = w max(0, -max_h(n_h . x_local + p_h)),
    # x_local = R_joint^T (x - anchor).
    lips = self.lip_points
    for h, hull in enumerate(geometry.hulls):
        anchor_point = self.anchor_points[h]
        rotation = chunk.state.rotations_world[:, hull.joint]                     # (n, 3, 3)
        relative = chunk.points[:, lips] - chunk.points[:, [anchor_point]]          # (n, V, 3)
        local = np.einsum("ndc,nvd->nvc", rotation, relative)                    # R^T (x - o)
        signed = local @ hull.normals.T + hull.offsets                           # (n, V, H)
        nearest = np.argmax(signed, axis=2)
        depth = -np.take_along_axis(signed, nearest[..., None], axis=2)[..., 0]
        active = depth > 0
        rows.append(weight * np.where(active, depth, 0.0))
        if equations is None:
            continue
        # d x_local = R^T (dx - do + [x - o]x A_m) for rotations of the hull joint and its ancestors.
        plane_world = np.einsum("ncd,nvd->nvc", rotation, hull.normals[nearest])  # R n
        scale = np.where(active, -weight, 0.0)[..., None]
        d_rel = chunk.d_frame[:, :, lips] - chunk.d_frame[:, :, [anchor_point]]      # (n, 3, V, p)
        ancestors = np.flatnonzero(self.rig.subtree[:, hull.joint])
        rotation_cols = d_rel[..., layout.rotation_slice].reshape(n, 3, -1, layout.num_joints, 3)
        world_axes = chunk.jac.world_axes                                        # (n, J, 3, 3)
        for m in ancestors:
            rotation_cols[..., m, :] += (skew(relative) @ world_axes[:, None, m]).transpose(0, 2, 1, 3)
        d_rel[..., layout.rotation_slice] = rotation_cols.reshape(n, 3, -1, 3 * layout.num_joints)
        d_frame_rows.append(scale * np.einsum("nvc,ncvp->nvp", plane_world, d_rel))
        if chunk.d_identity is not None:
            d_rel_id = chunk.d_identity[:, :, lips] - chunk.d_identity[:, :, [anchor_point]]
            d_identity_rows.append(scale * np.einsum("nvc,ncvk->nvk", plane_world, d_rel_id))

    residual = np.concatenate(rows, axis=1)
    terms.add("intersect", residual)
    if equations is None:
        return
    d_frame = np.concatenate(d_frame_rows, axis=1)
    d_shared = None
    if d_identity_rows:
        d_shared = np.zeros(d_frame.shape[:2] + (layout.shared_size,))
        d_shared[..., : layout.num_identity] = np.concatenate(d_identity_rows, axis=1)
    equations.add_frame_rows(chunk.frames, residual, d_frame, d_shared)


@contextlib.contextmanager
def baseline_kernels() -> Iterator[None]:
    """Run the enclosed fits with the frozen kernels."""
    saved = (point_rig.evaluate, point_rig.jacobians, ShotEnergy._chunk, ShotEnergy._landmarks,
             ShotEnergy._intersections)
    point_rig.evaluate, point_rig.jacobians = evaluate, jacobians
    ShotEnergy._chunk, ShotEnergy._landmarks, ShotEnergy._intersections = _chunk, _landmarks, _intersections
    try:
        yield
    finally:
        (point_rig.evaluate, point_rig.jacobians, ShotEnergy._chunk, ShotEnergy._landmarks,
         ShotEnergy._intersections) = saved
