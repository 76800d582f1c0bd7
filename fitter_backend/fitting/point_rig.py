"""Posed positions and analytic Jacobians of a fixed set of points, for many frames at once.

The fitter only ever needs a few hundred points (landmarks, eyelid and lip vertices, joint
centres), never the whole mesh. Linear blend skinning of a barycentric point is

    x_s = sum_j R_j (U_sj - wbar_sj J_j) + wbar_sj o_j + t,
    U_sj = sum_c b_sc w_cj (template_c + identity_c beta + expression_c psi + correctives_c f(theta)),

so every (point, joint) pair with a non-zero blended weight ``wbar_sj`` gets its own small
basis, precombined once. Skin weights are sparse, so there are few pairs per point; the
per-frame work is a handful of batched 3x3 products per pair.

Shapes: N frames, S points, Q (point, joint) pairs, J joints, I identity, E expression,
P corrective inputs.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import (kinematic_chain, left_jacobian_so3, pose_feature, rodrigues,
                                            rodrigues_derivative)


@dataclasses.dataclass(frozen=True)
class PointRig:
    """Precombined bases of S points. Pairs are sorted by point, so ``pair_start`` (S,) gives
    each point's first pair for ``np.add.reduceat``.

    pair_point (Q,), pair_joint (Q,), pair_weight (Q,), pair_template (Q, 3),
    pair_identity (Q, 3, I), pair_expression (Q, 3, E), pair_correctives (Q, 3, P),
    joint_template (J, 3), joint_identity (J, 3, I), joint_expression (J, 3, E), parents (J,),
    subtree (J, J) bool: [k, j] when j is k or below k.

    For the shape derivatives the pair bases are also laid out densely: ``skinning_joints``
    (J',) are the joints with any pair, ``point_joint_weight`` (S, J') the blended weights,
    and ``identity_stacked`` / ``expression_stacked`` (3 J', S K) stack every such joint's
    basis (zero where a point has no pair), so sum_j R_j U_j is one matrix product.
    """

    num_points: int
    pair_point: np.ndarray
    pair_joint: np.ndarray
    pair_weight: np.ndarray
    pair_start: np.ndarray
    pair_template: np.ndarray
    pair_identity: np.ndarray
    pair_expression: np.ndarray
    pair_correctives: np.ndarray
    joint_template: np.ndarray
    joint_identity: np.ndarray
    joint_expression: np.ndarray
    parents: np.ndarray
    subtree: np.ndarray
    skinning_joints: np.ndarray
    point_joint_weight: np.ndarray
    identity_stacked: np.ndarray
    expression_stacked: np.ndarray

    @property
    def num_identity(self) -> int:
        return self.pair_identity.shape[2]

    @property
    def num_expression(self) -> int:
        return self.pair_expression.shape[2]

    @property
    def num_joints(self) -> int:
        return len(self.parents)


def build_point_rig(model: HeadModel, points: SurfacePoints | None = None,
                    vertex_ids: np.ndarray | None = None, joint_ids: np.ndarray | None = None) -> PointRig:
    """Point rig for surface points, then plain vertices, then joint centres (in that order)."""
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    corners, bary = [], []
    if points is not None and len(points):
        corners.append(model.triangles[points.triangle])
        bary.append(f64(points.barycentric))
    if vertex_ids is not None and len(vertex_ids):
        ids = np.asarray(vertex_ids)
        corners.append(np.stack([ids, ids, ids], axis=1))
        bary.append(np.tile([1.0, 0.0, 0.0], (len(ids), 1)))
    corners = np.concatenate(corners) if corners else np.zeros((0, 3), int)
    bary = np.concatenate(bary) if bary else np.zeros((0, 3))
    num_surface = len(corners)

    weights = f64(model.skin_weights)[corners]                      # (S, 3, J)
    blended = np.einsum("sc,scj->sj", bary, weights)                 # (S, J)
    point_ids, joint_of_pair = np.nonzero(blended > 1e-8)            # sorted by point
    corner_weight = bary[point_ids] * weights[point_ids, :, joint_of_pair]  # (Q, 3)
    corner_ids = corners[point_ids]                                  # (Q, 3)

    def combine(per_vertex: np.ndarray) -> np.ndarray:
        return np.einsum("qc,qc...->q...", corner_weight, f64(per_vertex[corner_ids]))

    regressor = f64(model.joint_regressor)
    used = np.flatnonzero(np.any(regressor != 0, axis=0))
    reg = regressor[:, used]
    joint_template = reg @ f64(model.template[used])
    joint_identity = np.einsum("jv,vck->jck", reg, f64(model.identity_basis[used]))
    joint_expression = np.einsum("jv,vck->jck", reg, f64(model.expression_basis[used]))

    pair_point = point_ids
    pair_joint = joint_of_pair
    pair_weight = blended[point_ids, joint_of_pair]
    pair_template = combine(model.template)
    pair_identity = combine(model.identity_basis)
    pair_expression = combine(model.expression_basis)
    pair_correctives = combine(model.pose_correctives)
    if joint_ids is not None and len(joint_ids):
        # A joint centre is a point fully skinned to its joint whose rest position is the joint.
        joint_ids = np.asarray(joint_ids)
        n = len(joint_ids)
        pair_point = np.concatenate([pair_point, num_surface + np.arange(n)])
        pair_joint = np.concatenate([pair_joint, joint_ids])
        pair_weight = np.concatenate([pair_weight, np.ones(n)])
        pair_template = np.concatenate([pair_template, joint_template[joint_ids]])
        pair_identity = np.concatenate([pair_identity, joint_identity[joint_ids]])
        pair_expression = np.concatenate([pair_expression, joint_expression[joint_ids]])
        pair_correctives = np.concatenate([pair_correctives, np.zeros((n,) + pair_correctives.shape[1:])])
        num_surface += n
    parents = np.asarray(model.joint_parents)
    subtree = np.eye(len(parents), dtype=bool)
    for j in range(1, len(parents)):
        subtree[:, j] |= subtree[:, parents[j]]
    pair_start = np.searchsorted(pair_point, np.arange(num_surface))
    if np.any(np.bincount(pair_point, minlength=num_surface) == 0):
        raise ValueError("every point needs a non-zero skin weight")
    skinning_joints = np.unique(pair_joint)
    slot = np.searchsorted(skinning_joints, pair_joint)
    point_joint_weight = np.zeros((num_surface, len(skinning_joints)))
    point_joint_weight[pair_point, slot] = pair_weight

    def stacked(basis: np.ndarray) -> np.ndarray:
        # float32: these products are memory-bound and only feed Gauss-Newton Jacobians.
        dense = np.zeros((len(skinning_joints), 3, num_surface, basis.shape[2]), dtype=np.float32)
        dense[slot, :, pair_point] = basis
        return dense.reshape(3 * len(skinning_joints), -1)

    return PointRig(num_surface, pair_point, pair_joint, pair_weight, pair_start, pair_template,
                    pair_identity, pair_expression, pair_correctives, joint_template, joint_identity,
                    joint_expression, parents, subtree, skinning_joints, point_joint_weight,
                    stacked(pair_identity), stacked(pair_expression))


@dataclasses.dataclass
class PointState:
    """Forward pass of N frames. points (N, S, 3); the rest is reused by the Jacobians."""

    points: np.ndarray
    joints: np.ndarray           # (N, J, 3) rest joint locations
    rotations_world: np.ndarray  # (N, J, 3, 3)
    origins_world: np.ndarray    # (N, J, 3)
    moved: np.ndarray            # (N, Q, 3) each pair's contribution y_q (before translation)


def evaluate(rig: PointRig, identity: np.ndarray, expression: np.ndarray, rotations: np.ndarray,
             translation: np.ndarray) -> PointState:
    """Posed points of N frames.

    identity (I,) shared; expression (N, E); rotations (N, J, 3) axis-angle; translation (N, 3).
    """
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


@dataclasses.dataclass
class PointJacobians:
    """d points / d parameters of N frames (translation's derivative is the identity).

    Coordinate-major, so that per-joint products and the projection run on contiguous rows:
    identity (N, 3, S, I); expression (N, 3, S, E); rotation (N, 3, S, J, 3);
    world_axes (N, J, 3, 3): columns are the world axes that each joint's axis-angle turns about.
    """

    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    world_axes: np.ndarray


def _shape_derivative(rig: PointRig, state: PointState, stacked_basis: np.ndarray, joint_basis: np.ndarray
                      ) -> np.ndarray:
    """d points / d coefficients of a basis moving both the points and the rest joints: (N, 3, S, K)
    float32.

    Per point: sum_j R_j U_sj + wbar_sj (d o_j - R_j d J_j); both sums are single matrix products.
    """
    num_frames, num_points = state.points.shape[:2]
    k = joint_basis.shape[2]
    d_origin = np.empty((num_frames,) + joint_basis.shape)
    d_origin[:, 0] = joint_basis[0]
    for j in range(1, rig.num_joints):
        p = rig.parents[j]
        d_origin[:, j] = d_origin[:, p] + state.rotations_world[:, p] @ (joint_basis[j] - joint_basis[p])
    joints = rig.skinning_joints
    d_offset = d_origin[:, joints] - state.rotations_world[:, joints] @ joint_basis[joints][None]  # (N, J', 3, K)
    rotations = state.rotations_world[:, joints].transpose(0, 2, 1, 3).reshape(num_frames, 3, -1)  # (N, 3, 3J')
    out = (rotations.astype(np.float32) @ stacked_basis).reshape(num_frames, 3, num_points, k)
    out += (rig.point_joint_weight @ d_offset.transpose(0, 2, 1, 3)).astype(np.float32)  # (S, J') @ (N, 3, J', K)
    return out


def jacobians(rig: PointRig, state: PointState, expression: np.ndarray, rotations: np.ndarray,
              with_identity: bool = True, with_expression: bool = True) -> PointJacobians:
    """Analytic derivatives of the points in ``state`` (from :func:`evaluate`)."""
    num_frames, num_points = state.points.shape[:2]
    identity_d = (_shape_derivative(rig, state, rig.identity_stacked, rig.joint_identity)
                  if with_identity else np.zeros((num_frames, 3, num_points, 0)))
    expression_d = (_shape_derivative(rig, state, rig.expression_stacked, rig.joint_expression)
                    if with_expression else np.zeros((num_frames, 3, num_points, 0)))

    # Rotating joint k about world axis a moves its subtree rigidly about o_k: dx = a x lever.
    parent_world = np.concatenate(
        [np.broadcast_to(np.eye(3), (num_frames, 1, 3, 3)),
         state.rotations_world[:, np.maximum(rig.parents[1:], 0)]], axis=1)
    world_axes = parent_world @ left_jacobian_so3(rotations)            # (N, J, 3, 3)
    rotation_d = np.zeros((num_frames, num_points, 3, rig.num_joints, 3))
    j = rig.pair_joint
    for k in range(rig.num_joints):
        in_subtree = rig.subtree[k, j]
        if not in_subtree.any():
            continue
        lever_pair = np.where(in_subtree[None, :, None],
                              state.moved - rig.pair_weight[None, :, None] * state.origins_world[:, None, k], 0.0)
        lever = np.add.reduceat(lever_pair, rig.pair_start, axis=1)
        for a in range(3):  # d x / d r_ka = axis_a x lever
            rotation_d[:, :, :, k, a] = np.cross(world_axes[:, None, k, :, a], lever)
    if rig.pair_correctives.shape[2]:
        # Correctives of joint k follow R_k - I; they are then rotated by each pair's joint.
        d_local = rodrigues_derivative(rotations).reshape(num_frames, rig.num_joints, 3, 9)
        for k in range(1, rig.num_joints):
            block = rig.pair_correctives[:, :, 9 * (k - 1): 9 * k]               # (Q, 3, 9)
            d_rest = np.einsum("qcm,nam->nqca", block, d_local[:, k], optimize=True)  # (N, Q, 3, 3)
            per_pair = np.einsum("nqcd,nqda->nqca", state.rotations_world[:, j], d_rest, optimize=True)
            rotation_d[:, :, :, k, :] += np.add.reduceat(per_pair, rig.pair_start, axis=1)
    return PointJacobians(identity_d, expression_d, np.ascontiguousarray(rotation_d.transpose(0, 2, 1, 3, 4)),
                          world_axes)
