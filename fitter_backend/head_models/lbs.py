"""Forward model of an articulated morphable head, one pure function per step.

    shaped   = template + identity_basis @ identity + expression_basis @ expression
    joints   = joint_regressor @ shaped                      (rest joint locations)
    posed_in = shaped + pose_correctives @ vec(R_k - I)      (non-root joints k)
    x_v      = sum_j w_vj (R_j^world (posed_in_v - joints_j) + origin_j^world) + translation

and the analytic derivatives of any surface points (barycentric points on triangles) with
respect to identity, expression, joint rotations (axis-angle) and translation.

Shapes: B frames, V vertices, J joints, I identity, E expression, P correctives, S points.
Everything is float64 here; models store float32.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.head_models.head_model import HeadModel, SurfacePoints


# -- rotations -----------------------------------------------------------------------
def skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices, skew(a) @ b == cross(a, b)."""
    out = np.zeros(v.shape[:-1] + (3, 3), dtype=v.dtype)
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _rotation_coefficients(rotvec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sin(t)/t, (1-cos t)/t^2, (t-sin t)/t^3 for t = |rotvec|, Taylor series near 0."""
    theta2 = np.sum(rotvec * rotvec, axis=-1)
    theta = np.sqrt(theta2)
    small = theta < 1e-4
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    c = np.where(small, 1.0 / 6.0 - theta2 / 120.0, (safe - np.sin(safe)) / safe**3)
    return a, b, c


def rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    a, b, _ = _rotation_coefficients(rotvec)
    k = skew(rotvec)
    return np.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotation_vector(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> axis-angle (3,), the inverse of :func:`rodrigues` for angles
    below pi."""
    angle = np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0], matrix[1, 0] - matrix[0, 1]])
    return axis / (2 * np.sin(angle)) * angle


def left_jacobian_so3(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) J with R(r + d) ~= R(J d) R(r): the world-frame axis of a change d."""
    _, b, c = _rotation_coefficients(rotvec)
    k = skew(rotvec)
    return np.eye(3) + b[..., None, None] * k + c[..., None, None] * (k @ k)


def rodrigues_derivative(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3, 3): [..., a, :, :] = dR / d rotvec_a = skew(J e_a) R."""
    rotation = rodrigues(rotvec)
    axes = np.swapaxes(left_jacobian_so3(rotvec), -1, -2)  # rows are J e_a
    return skew(axes) @ rotation[..., None, :, :]


# -- the forward model, step by step -------------------------------------------------
def blend_shapes(coefficients: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(B, K) coefficients, (V, 3, K) basis -> (B, V, 3) offsets."""
    return np.einsum("bk,vck->bvc", coefficients, basis, optimize=True)


def joint_locations(joint_regressor: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(J, V) regressor, (B, V, 3) vertices -> (B, J, 3) rest joint locations."""
    return np.einsum("jv,bvc->bjc", joint_regressor, vertices, optimize=True)


def pose_feature(rotations_local: np.ndarray) -> np.ndarray:
    """(B, J, 3, 3) local rotations -> (B, 9 (J - 1)) inputs of the pose correctives."""
    return (rotations_local[:, 1:] - np.eye(3)).reshape(rotations_local.shape[0], -1)


def kinematic_chain(rotations_local: np.ndarray, joints: np.ndarray, parents: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """World rotation and world position of every joint.

    rotations_local: (B, J, 3, 3); joints: (B, J, 3) rest locations; parents: (J,), -1 root.
    Returns rotations_world (B, J, 3, 3) and origins_world (B, J, 3).
    """
    rotations_world = np.empty_like(rotations_local)
    origins_world = np.empty_like(joints)
    rotations_world[:, 0] = rotations_local[:, 0]
    origins_world[:, 0] = joints[:, 0]
    for j in range(1, len(parents)):
        p = parents[j]
        rotations_world[:, j] = rotations_world[:, p] @ rotations_local[:, j]
        origins_world[:, j] = origins_world[:, p] + np.einsum(
            "bcd,bd->bc", rotations_world[:, p], joints[:, j] - joints[:, p])
    return rotations_world, origins_world


def joint_transformed(vertices: np.ndarray, rotations_world: np.ndarray, origins_world: np.ndarray,
                      joints: np.ndarray) -> np.ndarray:
    """Every vertex moved rigidly by every joint: (B, V, 3) -> (B, V, J, 3)."""
    local = vertices[:, :, None, :] - joints[:, None, :, :]
    return np.einsum("bjcd,bvjd->bvjc", rotations_world, local, optimize=True) + origins_world[:, None]


def skin(vertices: np.ndarray, rotations_world: np.ndarray, origins_world: np.ndarray,
         joints: np.ndarray, skin_weights: np.ndarray) -> np.ndarray:
    """Linear blend skinning: (B, V, 3) rest vertices, (V, J) weights -> (B, V, 3) posed."""
    blended_rotation = np.einsum("vj,bjcd->bvcd", skin_weights, rotations_world, optimize=True)
    blended_offset = np.einsum("vj,bjc->bvc", skin_weights,
                               origins_world - np.einsum("bjcd,bjd->bjc", rotations_world, joints))
    return np.einsum("bvcd,bvd->bvc", blended_rotation, vertices) + blended_offset


# -- the forward model on a subset of vertices ---------------------------------------
@dataclasses.dataclass(frozen=True)
class Rig:
    """The model's arrays restricted to some vertices, in float64, plus the rest joints
    as linear functions of identity and expression (so the whole mesh is not needed).

    template (V', 3), identity_basis (V', 3, I), expression_basis (V', 3, E),
    pose_correctives (V', 3, P), skin_weights (V', J), joint_template (J, 3),
    joint_identity (J, 3, I), joint_expression (J, 3, E), parents (J,).
    """

    template: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    pose_correctives: np.ndarray
    skin_weights: np.ndarray
    joint_template: np.ndarray
    joint_identity: np.ndarray
    joint_expression: np.ndarray
    parents: np.ndarray

    @classmethod
    def from_model(cls, model: HeadModel, vertex_ids: np.ndarray | None = None) -> "Rig":
        ids = slice(None) if vertex_ids is None else np.asarray(vertex_ids)
        f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        regressor = f64(model.joint_regressor)
        used = np.flatnonzero(np.any(regressor != 0, axis=0))  # regressors are sparse
        reg = regressor[:, used]
        return cls(
            template=f64(model.template[ids]),
            identity_basis=f64(model.identity_basis[ids]),
            expression_basis=f64(model.expression_basis[ids]),
            pose_correctives=f64(model.pose_correctives[ids]),
            skin_weights=f64(model.skin_weights[ids]),
            joint_template=reg @ f64(model.template[used]),
            joint_identity=np.einsum("jv,vck->jck", reg, f64(model.identity_basis[used])),
            joint_expression=np.einsum("jv,vck->jck", reg, f64(model.expression_basis[used])),
            parents=np.asarray(model.joint_parents),
        )


@dataclasses.dataclass(frozen=True)
class Pose:
    """Per-frame parameters of B frames.

    identity (B, I) (broadcast from (I,)), expression (B, E), joint_rotations (B, J, 3)
    axis-angle, translation (B, 3) metres.
    """

    identity: np.ndarray
    expression: np.ndarray
    joint_rotations: np.ndarray
    translation: np.ndarray

    @classmethod
    def make(cls, num_frames: int, num_identity: int, num_expression: int, num_joints: int,
             identity=None, expression=None, joint_rotations=None, translation=None) -> "Pose":
        """Fill missing parameters with zeros and broadcast everything to B frames."""
        def full(value, shape):
            if value is None:
                return np.zeros(shape)
            return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()

        b = num_frames
        return cls(full(identity, (b, num_identity)), full(expression, (b, num_expression)),
                   full(joint_rotations, (b, num_joints, 3)), full(translation, (b, 3)))

    @classmethod
    def for_model(cls, model: HeadModel, identity=None, expression=None, joint_rotations=None,
                  translation=None, num_frames: int | None = None) -> "Pose":
        """Like :meth:`make`, sized for ``model``; B is taken from the first batched argument.
        Its ``expression`` holds the model's blend weights (:meth:`HeadModel.blend_weights`)."""
        if num_frames is None:
            batched = [np.shape(v)[0] for v, ndim in ((expression, 2), (joint_rotations, 3),
                                                      (translation, 2), (identity, 2))
                       if v is not None and np.ndim(v) == ndim]
            num_frames = batched[0] if batched else 1
        pose = cls.make(num_frames, model.num_identity, model.num_expression, model.num_joints,
                        identity, expression, joint_rotations, translation)
        # The blend shapes act with the model's blend weights (blink units scaled per identity).
        return dataclasses.replace(pose, expression=model.blend_weights(pose.identity, pose.expression))


@dataclasses.dataclass(frozen=True)
class RigState:
    """Intermediate results of the forward pass that the derivatives reuse."""

    rest: np.ndarray             # (B, V', 3) shaped + pose-corrected vertices
    joints: np.ndarray           # (B, J, 3) rest joint locations
    rotations_local: np.ndarray  # (B, J, 3, 3)
    rotations_world: np.ndarray  # (B, J, 3, 3)
    origins_world: np.ndarray    # (B, J, 3)
    posed: np.ndarray            # (B, V', 3) including translation


def forward(rig: Rig, pose: Pose) -> RigState:
    """Run the forward model on the rig's vertices."""
    shaped = (rig.template + blend_shapes(pose.identity, rig.identity_basis)
              + blend_shapes(pose.expression, rig.expression_basis))
    joints = (rig.joint_template + np.einsum("jck,bk->bjc", rig.joint_identity, pose.identity)
              + np.einsum("jck,bk->bjc", rig.joint_expression, pose.expression))
    rotations_local = rodrigues(pose.joint_rotations)
    rest = shaped
    if rig.pose_correctives.shape[2]:
        rest = shaped + blend_shapes(pose_feature(rotations_local), rig.pose_correctives)
    rotations_world, origins_world = kinematic_chain(rotations_local, joints, rig.parents)
    posed = skin(rest, rotations_world, origins_world, joints, rig.skin_weights)
    return RigState(rest, joints, rotations_local, rotations_world, origins_world,
                    posed + pose.translation[:, None, :])


def posed_vertices(model: HeadModel, identity=None, expression=None, joint_rotations=None,
                   translation=None, num_frames: int | None = None) -> np.ndarray:
    """All vertices of B frames, (B, V, 3) float64; missing parameters are zero.

    identity (I,) or (B, I); expression (B, E) or (E,); joint_rotations (B, J, 3) or (J, 3);
    translation (B, 3) or (3,). B is taken from the first batched argument (or num_frames).
    """
    pose = Pose.for_model(model, identity, expression, joint_rotations, translation, num_frames)
    return forward(Rig.from_model(model), pose).posed


# -- surface points and their derivatives ------------------------------------------------
def surface_points(vertices: np.ndarray, triangles: np.ndarray, points: SurfacePoints) -> np.ndarray:
    """(B, V, 3) vertices -> (B, S, 3) positions of barycentric surface points."""
    corners = vertices[:, triangles[points.triangle]]  # (B, S, 3 corners, 3)
    return np.einsum("bskc,sk->bsc", corners, points.barycentric.astype(np.float64))


@dataclasses.dataclass(frozen=True)
class PointJacobians:
    """Surface points of B frames and their derivatives (translation's is the identity).

    points (B, S, 3); d_identity (B, S, 3, I); d_expression (B, S, 3, E);
    d_rotation (B, S, 3, J, 3) with respect to each joint's axis-angle.
    """

    points: np.ndarray
    d_identity: np.ndarray
    d_expression: np.ndarray
    d_rotation: np.ndarray


def _shape_jacobian(rig: Rig, state: RigState, blended_rotation: np.ndarray, vertex_basis: np.ndarray,
                    joint_basis: np.ndarray) -> np.ndarray:
    """d posed vertices / d coefficients of a basis that moves both vertices and rest joints.

    vertex_basis (V', 3, K), joint_basis (J, 3, K) -> (B, V', 3, K).
    """
    # d origin_j^world: origin_0 = joint_0; origin_j = origin_p + R_p^world (joint_j - joint_p).
    num_joints = len(rig.parents)
    d_origin = np.empty((state.joints.shape[0], num_joints) + joint_basis.shape[1:])
    d_origin[:, 0] = joint_basis[0]
    for j in range(1, num_joints):
        p = rig.parents[j]
        d_origin[:, j] = d_origin[:, p] + state.rotations_world[:, p] @ (joint_basis[j] - joint_basis[p])
    # Per joint, the offset term origin_j - R_j joint_j differentiated.
    d_offset = d_origin - np.einsum("bjcd,jdk->bjck", state.rotations_world, joint_basis)
    return (np.einsum("bvcd,vdk->bvck", blended_rotation, vertex_basis, optimize=True)
            + np.einsum("vj,bjck->bvck", rig.skin_weights, d_offset, optimize=True))


def vertex_jacobians(rig: Rig, pose: Pose, state: RigState | None = None
                     ) -> tuple[RigState, np.ndarray, np.ndarray, np.ndarray]:
    """Derivatives of the rig's posed vertices.

    Returns (state, d_identity (B, V', 3, I), d_expression (B, V', 3, E),
    d_rotation (B, V', 3, J, 3)).
    """
    state = forward(rig, pose) if state is None else state
    blended_rotation = np.einsum("vj,bjcd->bvcd", rig.skin_weights, state.rotations_world, optimize=True)
    d_identity = _shape_jacobian(rig, state, blended_rotation, rig.identity_basis, rig.joint_identity)
    d_expression = _shape_jacobian(rig, state, blended_rotation, rig.expression_basis, rig.joint_expression)

    # Rotating joint k about world axis a moves every vertex part carried by k's subtree
    # rigidly about origin_k: d x_v = a x D_vk, D_vk = sum_{j in subtree(k)} w_vj (y_vj - origin_k).
    num_frames, num_vertices = state.posed.shape[:2]
    num_joints = len(rig.parents)
    moved = joint_transformed(state.rest, state.rotations_world, state.origins_world, state.joints)
    parent_world = np.concatenate(
        [np.broadcast_to(np.eye(3), (num_frames, 1, 3, 3)),
         state.rotations_world[:, np.maximum(rig.parents[1:], 0)]], axis=1)
    world_axes = parent_world @ left_jacobian_so3(pose.joint_rotations)  # (B, J, 3, 3) columns = axes
    d_rotation = np.empty((num_frames, num_vertices, 3, num_joints, 3))
    subtree = _subtree_masks(rig.parents)
    for k in range(num_joints):
        weights = rig.skin_weights * subtree[k]  # (V', J)
        lever = (np.einsum("vj,bvjc->bvc", weights, moved)
                 - weights.sum(1)[None, :, None] * state.origins_world[:, None, k])
        d_rotation[:, :, :, k, :] = -skew(lever) @ world_axes[:, None, k]
    if rig.pose_correctives.shape[2]:
        # Correctives of joint k are driven by R_k - I: d/dr_a = skew(J e_a) R_k.
        d_local = rodrigues_derivative(pose.joint_rotations)  # (B, J, 3a, 3, 3)
        for k in range(1, num_joints):
            block = rig.pose_correctives[:, :, 9 * (k - 1): 9 * k]  # (V', 3, 9)
            d_rest = np.einsum("vcn,ban->bvca", block, d_local[:, k].reshape(num_frames, 3, 9))
            d_rotation[:, :, :, k, :] += np.einsum("bvcd,bvda->bvca", blended_rotation, d_rest)
    return state, d_identity, d_expression, d_rotation


def _subtree_masks(parents: np.ndarray) -> np.ndarray:
    """(J, J) bool: [k, j] is True when joint j is k or a descendant of k."""
    num_joints = len(parents)
    mask = np.eye(num_joints, dtype=bool)
    for j in range(1, num_joints):
        mask[:, j] |= mask[:, parents[j]]
    return mask


def surface_point_jacobians(model: HeadModel, points: SurfacePoints, identity=None, expression=None,
                            joint_rotations=None, translation=None) -> PointJacobians:
    """Surface points of B frames and their analytic derivatives (see :class:`PointJacobians`)."""
    corner_ids = model.triangles[points.triangle]  # (S, 3)
    vertex_ids, inverse = np.unique(corner_ids, return_inverse=True)
    rig = Rig.from_model(model, vertex_ids)
    pose = Pose.for_model(model, identity, expression, joint_rotations, translation)
    state, d_identity, d_expression, d_rotation = vertex_jacobians(rig, pose)
    corners = inverse.reshape(corner_ids.shape)
    bary = points.barycentric.astype(np.float64)

    def combine(per_vertex: np.ndarray) -> np.ndarray:
        return np.einsum("bsk...,sk->bs...", per_vertex[:, corners], bary)

    return PointJacobians(combine(state.posed), combine(d_identity), combine(d_expression),
                          combine(d_rotation))
