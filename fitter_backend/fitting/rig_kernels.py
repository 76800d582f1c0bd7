"""Compiled (numba) loops over the point rig's (point, joint) pairs.

Per frame the fitter poses a few hundred points and differentiates them; in numpy that is
dozens of calls on small arrays, each dominated by call overhead. Here every loop runs over
the pairs once, skipping the zero blocks that a dense layout would multiply. ``cache=True``
keeps the machine code beside this file, so only the first run after an install compiles
(about a second per kernel).

Shapes: N frames, Q pairs, S points, J joints, K basis coefficients. Pair q belongs to point
``pair_point[q]`` and joint ``pair_joint[q]`` with blended weight ``pair_weight[q]``.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def pose_pairs(rest: np.ndarray, joints: np.ndarray, rotations_world: np.ndarray, origins_world: np.ndarray,
               translation: np.ndarray, pair_point: np.ndarray, pair_joint: np.ndarray, pair_weight: np.ndarray,
               num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear blend skinning of pairs: y_q = R_j (rest_q - w_q J_j) + w_q o_j; x_s = sum y_q + t.

    rest (N, Q, 3); joints, origins_world (N, J, 3); rotations_world (N, J, 3, 3);
    translation (N, 3). Returns moved (N, Q, 3) and points (N, S, 3).
    """
    n_frames, n_pairs = rest.shape[0], rest.shape[1]
    moved = np.empty((n_frames, n_pairs, 3))
    points = np.zeros((n_frames, num_points, 3))
    for n in range(n_frames):
        for q in range(n_pairs):
            j, w, s = pair_joint[q], pair_weight[q], pair_point[q]
            l0 = rest[n, q, 0] - w * joints[n, j, 0]
            l1 = rest[n, q, 1] - w * joints[n, j, 1]
            l2 = rest[n, q, 2] - w * joints[n, j, 2]
            for c in range(3):
                y = (rotations_world[n, j, c, 0] * l0 + rotations_world[n, j, c, 1] * l1
                     + rotations_world[n, j, c, 2] * l2 + w * origins_world[n, j, c])
                moved[n, q, c] = y
                points[n, s, c] += y
        for s in range(num_points):
            for c in range(3):
                points[n, s, c] += translation[n, c]
    return moved, points


@numba.njit(cache=True)
def shape_derivative(rotations_world: np.ndarray, d_offset: np.ndarray, pair_basis: np.ndarray,
                     pair_point: np.ndarray, pair_joint: np.ndarray, pair_weight: np.ndarray,
                     out: np.ndarray, column: int) -> None:
    """Adds d points / d coefficients of a basis moving points and rest joints to
    out[..., column:column + K]: per point, the sum over its pairs of R_j U_q + w_q d_offset_j.

    rotations_world (N, J, 3, 3); d_offset (N, J, 3, K) = d o_j - R_j d J_j; pair_basis (Q, 3, K)
    float32; out (N, 3, S, K') float32.
    """
    n_frames, n_pairs, k_size = rotations_world.shape[0], pair_basis.shape[0], pair_basis.shape[2]
    for n in range(n_frames):
        offset = d_offset[n].astype(np.float32)
        for q in range(n_pairs):
            j, s = pair_joint[q], pair_point[q]
            w = np.float32(pair_weight[q])
            for c in range(3):
                r0 = np.float32(rotations_world[n, j, c, 0])
                r1 = np.float32(rotations_world[n, j, c, 1])
                r2 = np.float32(rotations_world[n, j, c, 2])
                row = out[n, c, s, column:column + k_size]
                for k in range(k_size):
                    row[k] += (r0 * pair_basis[q, 0, k] + r1 * pair_basis[q, 1, k] + r2 * pair_basis[q, 2, k]
                               + w * offset[j, c, k])


@numba.njit(cache=True)
def rotation_derivative(moved: np.ndarray, origins_world: np.ndarray, world_axes: np.ndarray,
                        subtree: np.ndarray, pair_point: np.ndarray, pair_joint: np.ndarray,
                        pair_weight: np.ndarray, out: np.ndarray, column: int) -> None:
    """Adds d points / d axis-angle of every joint to out[..., column + 3 k + a]: rotating joint k
    about world axis a moves the pairs of k's subtree about o_k, dx = a x (y_q - w_q o_k).

    moved (N, Q, 3); origins_world (N, J, 3); world_axes (N, J, 3, 3) with the axes as columns;
    subtree (J, J) bool, [k, j] when j is k or below k; out (N, 3, S, K').
    """
    n_frames, n_pairs, n_joints = moved.shape[0], moved.shape[1], subtree.shape[0]
    for n in range(n_frames):
        for q in range(n_pairs):
            j, s, w = pair_joint[q], pair_point[q], pair_weight[q]
            for k in range(n_joints):
                if not subtree[k, j]:
                    continue
                l0 = moved[n, q, 0] - w * origins_world[n, k, 0]
                l1 = moved[n, q, 1] - w * origins_world[n, k, 1]
                l2 = moved[n, q, 2] - w * origins_world[n, k, 2]
                for a in range(3):
                    a0, a1, a2 = world_axes[n, k, 0, a], world_axes[n, k, 1, a], world_axes[n, k, 2, a]
                    col = column + 3 * k + a
                    out[n, 0, s, col] += a1 * l2 - a2 * l1
                    out[n, 1, s, col] += a2 * l0 - a0 * l2
                    out[n, 2, s, col] += a0 * l1 - a1 * l0


@numba.njit(cache=True)
def project_rows(d_world: np.ndarray, d_points: np.ndarray, weight: np.ndarray, out: np.ndarray,
                 column: int, residual: np.ndarray, gradient: np.ndarray) -> None:
    """Rows of projected points, chain rule per point: out[n, r, s, column + k] =
    weight[n, s] sum_c d_world[n, s, r, c] d_points[n, c, s, k]; with a residual (N, 2, S)
    (else an empty array) also adds J^T r to gradient[n, column + k], in float64.

    d_world (N, S, 2, 3) d pixels / d world point; d_points (N, 3, S, K) float32; weight (N, S);
    out (N, 2, S, K') float32, K' >= column + K; gradient (N, K') float64.
    """
    n_frames, n_points, k_size = d_points.shape[0], d_points.shape[2], d_points.shape[3]
    with_gradient = residual.size > 0
    for n in range(n_frames):
        for s in range(n_points):
            w = weight[n, s]
            x, y, z = d_points[n, 0, s], d_points[n, 1, s], d_points[n, 2, s]
            for r in range(2):
                a0 = np.float32(w * d_world[n, s, r, 0])
                a1 = np.float32(w * d_world[n, s, r, 1])
                a2 = np.float32(w * d_world[n, s, r, 2])
                row = out[n, r, s, column:column + k_size]
                for k in range(k_size):
                    row[k] = a0 * x[k] + a1 * y[k] + a2 * z[k]
                if with_gradient:
                    e = residual[n, r, s]
                    g = gradient[n, column:column + k_size]
                    for k in range(k_size):
                        g[k] += np.float64(row[k]) * e


@numba.njit(cache=True)
def project_points(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, focal: float, cx: float,
                   cy: float, rotation_jacobian: np.ndarray, derivatives: bool):
    """Pinhole projection of world points (N, S, 3) by X = R x + t, depth z = max(-X_z, 1 mm):
    u = cx + f X_x / z, v = cy - f X_y / z (see :mod:`fitter_backend.fitting.cameras`).

    rotation (3, 3); translation (3,); rotation_jacobian (3, 3) the camera's left Jacobian J_l(w).
    Returns pixels (N, S, 2), camera_points (N, S, 3) and, with ``derivatives`` (else empty):
    d_world (N, S, 2, 3), d_log_focal (N, S, 2), d_extrinsics (N, S, 2, 6) over (w, t).
    """
    n_frames, n_points = points.shape[0], points.shape[1]
    m, k = (n_frames, n_points) if derivatives else (0, 0)
    pixels = np.empty((n_frames, n_points, 2))
    camera_points = np.empty((n_frames, n_points, 3))
    d_world = np.empty((m, k, 2, 3))
    d_log_focal = np.empty((m, k, 2))
    d_extrinsics = np.empty((m, k, 2, 6))
    rotated = np.empty(3)
    d_camera = np.empty((2, 3))
    for n in range(n_frames):
        for s in range(n_points):
            for c in range(3):
                rotated[c] = rotation[c, 0] * points[n, s, 0] + rotation[c, 1] * points[n, s, 1] + \
                    rotation[c, 2] * points[n, s, 2]
                camera_points[n, s, c] = rotated[c] + translation[c]
            depth = max(-camera_points[n, s, 2], 1e-3)
            x_over_z = camera_points[n, s, 0] / depth
            y_over_z = camera_points[n, s, 1] / depth
            pixels[n, s, 0] = cx + focal * x_over_z
            pixels[n, s, 1] = cy - focal * y_over_z
            if not derivatives:
                continue
            d_camera[0, 0], d_camera[0, 1], d_camera[0, 2] = focal / depth, 0.0, focal * x_over_z / depth
            d_camera[1, 0], d_camera[1, 1], d_camera[1, 2] = 0.0, -focal / depth, -focal * y_over_z / depth
            d_log_focal[n, s, 0] = focal * x_over_z
            d_log_focal[n, s, 1] = -focal * y_over_z
            for r in range(2):
                for c in range(3):
                    d_world[n, s, r, c] = (d_camera[r, 0] * rotation[0, c] + d_camera[r, 1] * rotation[1, c]
                                           + d_camera[r, 2] * rotation[2, c])
                    d_extrinsics[n, s, r, 3 + c] = d_camera[r, c]
                    # dX/dw column c = -(R x) x J_l[:, c] = J_l[:, c] x (R x)
                    a0, a1, a2 = rotation_jacobian[0, c], rotation_jacobian[1, c], rotation_jacobian[2, c]
                    e0 = a1 * rotated[2] - a2 * rotated[1]
                    e1 = a2 * rotated[0] - a0 * rotated[2]
                    e2 = a0 * rotated[1] - a1 * rotated[0]
                    d_extrinsics[n, s, r, c] = d_camera[r, 0] * e0 + d_camera[r, 1] * e1 + d_camera[r, 2] * e2
    return pixels, camera_points, d_world, d_log_focal, d_extrinsics


@numba.njit(cache=True)
def _rotation_and_left_jacobian(v0: float, v1: float, v2: float, rotation: np.ndarray, left: np.ndarray) -> None:
    """Rodrigues' R(v) and the left Jacobian J_l(v) of one axis-angle (lbs.rodrigues and
    lbs.left_jacobian_so3, Taylor series below 1e-4 rad), written into two (3, 3) arrays."""
    theta2 = v0 * v0 + v1 * v1 + v2 * v2
    theta = np.sqrt(theta2)
    if theta < 1e-4:
        a, b, c = 1.0 - theta2 / 6.0, 0.5 - theta2 / 24.0, 1.0 / 6.0 - theta2 / 120.0
    else:
        sin, cos = np.sin(theta), np.cos(theta)
        a, b, c = sin / theta, (1.0 - cos) / theta2, (theta - sin) / (theta2 * theta)
    v = (v0, v1, v2)
    skew = ((0.0, -v2, v1), (v2, 0.0, -v0), (-v1, v0, 0.0))
    for i in range(3):
        for j in range(3):
            square = v[i] * v[j] - (theta2 if i == j else 0.0)  # skew(v)^2 = v v^T - |v|^2 I
            eye = 1.0 if i == j else 0.0
            rotation[i, j] = eye + a * skew[i][j] + b * square
            left[i, j] = eye + b * skew[i][j] + c * square


@numba.njit(cache=True)
def rotations_and_left_jacobians(rotvecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, 3) axis-angles -> rotation matrices (M, 3, 3) and left Jacobians (M, 3, 3)."""
    m = rotvecs.shape[0]
    rotations = np.empty((m, 3, 3))
    lefts = np.empty((m, 3, 3))
    for i in range(m):
        _rotation_and_left_jacobian(rotvecs[i, 0], rotvecs[i, 1], rotvecs[i, 2], rotations[i], lefts[i])
    return rotations, lefts


@numba.njit(cache=True)
def kinematic_chain(rotations_local: np.ndarray, joints: np.ndarray, parents: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """lbs.kinematic_chain: world rotations (N, J, 3, 3) and origins (N, J, 3) from local
    rotations (N, J, 3, 3), rest joints (N, J, 3) and parents (J,), the root first."""
    n_frames, n_joints = rotations_local.shape[0], rotations_local.shape[1]
    world = np.empty_like(rotations_local)
    origins = np.empty_like(joints)
    for n in range(n_frames):
        world[n, 0] = rotations_local[n, 0]
        origins[n, 0] = joints[n, 0]
        for j in range(1, n_joints):
            p = parents[j]
            for r in range(3):
                origins[n, j, r] = origins[n, p, r] + (world[n, p, r, 0] * (joints[n, j, 0] - joints[n, p, 0])
                                                       + world[n, p, r, 1] * (joints[n, j, 1] - joints[n, p, 1])
                                                       + world[n, p, r, 2] * (joints[n, j, 2] - joints[n, p, 2]))
                for c in range(3):
                    world[n, j, r, c] = (world[n, p, r, 0] * rotations_local[n, j, 0, c]
                                         + world[n, p, r, 1] * rotations_local[n, j, 1, c]
                                         + world[n, p, r, 2] * rotations_local[n, j, 2, c])
    return world, origins


@numba.njit(cache=True)
def corrective_rotation_derivative(rotations_world: np.ndarray, d_local: np.ndarray, pair_correctives: np.ndarray,
                                   pair_point: np.ndarray, pair_joint: np.ndarray, out: np.ndarray,
                                   column: int) -> None:
    """Adds the pose correctives' part of d points / d axis-angle to out[..., column + 3 k + a]:
    the correctives of joint k >= 1 follow vec(R_k - I), and each pair's share is rotated by its
    joint: R_j sum_m C_q[:, 9 (k - 1) + m] d vec(R_k)_m / d r_ka.

    rotations_world (N, J, 3, 3); d_local (N, J, 3, 9) d vec(R_k) / d r_k; pair_correctives (Q, 3, 9 (J - 1)).
    """
    n_frames, n_pairs, n_joints = rotations_world.shape[0], pair_correctives.shape[0], d_local.shape[1]
    d_rest = np.empty((3, 3))
    for n in range(n_frames):
        for q in range(n_pairs):
            j, s = pair_joint[q], pair_point[q]
            for k in range(1, n_joints):
                base = 9 * (k - 1)
                for c in range(3):
                    for a in range(3):
                        total = 0.0
                        for m in range(9):
                            total += pair_correctives[q, c, base + m] * d_local[n, k, a, m]
                        d_rest[c, a] = total
                for c in range(3):
                    for a in range(3):
                        out[n, c, s, column + 3 * k + a] += (rotations_world[n, j, c, 0] * d_rest[0, a]
                                                             + rotations_world[n, j, c, 1] * d_rest[1, a]
                                                             + rotations_world[n, j, c, 2] * d_rest[2, a])
