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

from fitter_backend.fitting import rig_kernels
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import left_jacobian_so3, pose_feature, rodrigues_derivative


@dataclasses.dataclass(frozen=True)
class PointRig:
    """Precombined bases of S points. Pairs are sorted by point, so ``pair_start`` (S,) gives
    each point's first pair for ``np.add.reduceat``.

    pair_point (Q,), pair_joint (Q,), pair_weight (Q,), pair_template (Q, 3),
    pair_identity (Q, 3, I), pair_expression (Q, 3, E), pair_correctives (Q, 3, P),
    joint_template (J, 3), joint_identity (J, 3, I), joint_expression (J, 3, E), parents (J,),
    subtree (J, J) bool: [k, j] when j is k or below k.

    ``pair_identity32`` / ``pair_expression32`` are float32 copies of the pair bases for the
    shape derivatives (memory-bound products that only feed Gauss-Newton Jacobians).
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
    pair_identity32: np.ndarray
    pair_expression32: np.ndarray
    # The last identity's shaped pairs and rest joints: a solve poses the same identity many times.
    identity_cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

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
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return PointRig(num_surface, pair_point, pair_joint, pair_weight, pair_start, pair_template,
                    pair_identity, pair_expression, pair_correctives, joint_template, joint_identity,
                    joint_expression, parents, subtree, f32(pair_identity), f32(pair_expression))


@dataclasses.dataclass
class PointState:
    """Forward pass of N frames. points (N, S, 3); the rest is reused by the Jacobians."""

    points: np.ndarray
    joints: np.ndarray           # (N, J, 3) rest joint locations
    rotations_world: np.ndarray  # (N, J, 3, 3)
    origins_world: np.ndarray    # (N, J, 3)
    moved: np.ndarray            # (N, Q, 3) each pair's contribution y_q (before translation)
    left_jacobians: np.ndarray | None = None  # (N, J, 3, 3) J_l of each joint's axis-angle


def with_unit_scales(rig: PointRig, scales: np.ndarray) -> PointRig:
    """The rig with each expression unit's bases multiplied by ``scales`` (E,): posing it with
    weights psi is posing ``rig`` with psi * scales (``HeadModel.blend_scales`` at one identity)."""
    scales = np.asarray(scales, np.float64)
    return dataclasses.replace(rig, pair_expression=rig.pair_expression * scales,
                               joint_expression=rig.joint_expression * scales,
                               pair_expression32=rig.pair_expression32 * scales.astype(np.float32),
                               identity_cache={})


def _shaped(rig: PointRig, identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (Q, 3) and rest joints (J, 3) of an identity with zero expression, cached for the
    last identity seen."""
    key = np.asarray(identity, dtype=np.float64).tobytes()
    shaped = rig.identity_cache.get(key)
    if shaped is None:
        shaped = (rig.pair_template + rig.pair_identity @ identity, rig.joint_template + rig.joint_identity @ identity)
        rig.identity_cache.clear()
        rig.identity_cache[key] = shaped
    return shaped


def evaluate(rig: PointRig, identity: np.ndarray, expression: np.ndarray, rotations: np.ndarray,
             translation: np.ndarray) -> PointState:
    """Posed points of N frames.

    identity (I,) shared; expression (N, E); rotations (N, J, 3) axis-angle; translation (N, 3).
    """
    pairs_shaped, joints_shaped = _shaped(rig, identity)
    n, num_expression = expression.shape
    joints = joints_shaped[None] + (expression @ rig.joint_expression.reshape(-1, num_expression).T).reshape(n, -1, 3)
    rotations_local, left_jacobians = rig_kernels.rotations_and_left_jacobians(
        np.ascontiguousarray(rotations, dtype=np.float64).reshape(-1, 3))
    rotations_local = rotations_local.reshape(n, -1, 3, 3)
    rotations_world, origins_world = rig_kernels.kinematic_chain(rotations_local, joints, rig.parents)
    rest = pairs_shaped[None] + (expression @ rig.pair_expression.reshape(-1, num_expression).T).reshape(n, -1, 3)
    if rig.pair_correctives.shape[2]:
        rest = rest + np.einsum("qcp,np->nqc", rig.pair_correctives, pose_feature(rotations_local), optimize=True)
    moved, points = rig_kernels.pose_pairs(rest, joints, rotations_world, origins_world,
                                           np.ascontiguousarray(translation, dtype=np.float64), rig.pair_point,
                                           rig.pair_joint, rig.pair_weight, rig.num_points)
    return PointState(points, joints, rotations_world, origins_world, moved, left_jacobians.reshape(n, -1, 3, 3))


@dataclasses.dataclass
class PointJacobians:
    """d points / d parameters of N frames (translation's derivative is the identity).

    Coordinate-major, so that per-joint products and the projection run on contiguous rows:
    identity (N, 3, S, I); expression (N, 3, S, E); rotation (N, 3, S, J, 3);
    world_axes (N, J, 3, 3): columns are the world axes that each joint's axis-angle turns about.
    """

    identity: np.ndarray
    expression: np.ndarray | None
    rotation: np.ndarray | None
    world_axes: np.ndarray


def _shape_derivative(rig: PointRig, state: PointState, pair_basis: np.ndarray, joint_basis: np.ndarray,
                      out: np.ndarray, column: int) -> None:
    """Adds d points / d coefficients of a basis moving both the points and the rest joints to
    out[..., column:column + K] (N, 3, S, K') float32.

    Per point: sum over its pairs of R_j U_q + w_q (d o_j - R_j d J_j).
    """
    num_frames = state.points.shape[0]
    d_origin = np.empty((num_frames,) + joint_basis.shape)
    d_origin[:, 0] = joint_basis[0]
    for j in range(1, rig.num_joints):
        p = rig.parents[j]
        d_origin[:, j] = d_origin[:, p] + state.rotations_world[:, p] @ (joint_basis[j] - joint_basis[p])
    d_offset = d_origin - state.rotations_world @ joint_basis[None]  # (N, J, 3, K)
    rig_kernels.shape_derivative(state.rotations_world, d_offset, pair_basis, rig.pair_point, rig.pair_joint,
                                 rig.pair_weight, out, column)


def jacobians(rig: PointRig, state: PointState, expression: np.ndarray, rotations: np.ndarray,
              with_identity: bool = True, with_expression: bool = True, frame_out: np.ndarray | None = None,
              frame_columns: tuple[int, int] = (0, 0)) -> PointJacobians:
    """Analytic derivatives of the points in ``state`` (from :func:`evaluate`).

    With ``frame_out`` (N, 3, S, p) float32 zeros, the expression derivatives are added to its
    columns from ``frame_columns[0]`` and the rotation derivatives (joint-major, 3 J) from
    ``frame_columns[1]`` (no copies), and ``expression`` and ``rotation`` are returned as None.
    """
    num_frames, num_points = state.points.shape[:2]
    identity_d = np.zeros((num_frames, 3, num_points, rig.num_identity if with_identity else 0), dtype=np.float32)
    if with_identity:
        _shape_derivative(rig, state, rig.pair_identity32, rig.joint_identity, identity_d, 0)
    if frame_out is None:
        expression_d = np.zeros((num_frames, 3, num_points, rig.num_expression if with_expression else 0),
                                dtype=np.float32)
        rotation_d = np.zeros((num_frames, 3, num_points, rig.num_joints * 3))
        expression_out, expression_column, rotation_out, rotation_column = expression_d, 0, rotation_d, 0
    else:
        expression_d = rotation_d = None
        expression_out, rotation_out = frame_out, frame_out
        expression_column, rotation_column = frame_columns
    if with_expression:
        _shape_derivative(rig, state, rig.pair_expression32, rig.joint_expression, expression_out, expression_column)

    # Rotating joint k about world axis a moves its subtree rigidly about o_k: dx = a x lever.
    parent_world = np.concatenate(
        [np.broadcast_to(np.eye(3), (num_frames, 1, 3, 3)),
         state.rotations_world[:, np.maximum(rig.parents[1:], 0)]], axis=1)
    left = left_jacobian_so3(rotations) if state.left_jacobians is None else state.left_jacobians
    world_axes = parent_world @ left                                    # (N, J, 3, 3)
    rig_kernels.rotation_derivative(state.moved, state.origins_world, world_axes, rig.subtree, rig.pair_point,
                                    rig.pair_joint, rig.pair_weight, rotation_out, rotation_column)
    if rig.pair_correctives.shape[2]:
        d_local = rodrigues_derivative(rotations).reshape(num_frames, rig.num_joints, 3, 9)
        rig_kernels.corrective_rotation_derivative(state.rotations_world, d_local, rig.pair_correctives,
                                                   rig.pair_point, rig.pair_joint, rotation_out, rotation_column)
    if rotation_d is not None:
        rotation_d = rotation_d.reshape(num_frames, 3, num_points, rig.num_joints, 3)
    return PointJacobians(identity_d, expression_d, rotation_d, world_axes)
