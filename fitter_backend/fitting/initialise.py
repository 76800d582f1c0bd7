"""Starting point of a fit: head pose per frame by PnP on the landmarks with the mean head,
camera extrinsics from per-camera poses, and gaps (frames without landmarks) interpolated.
"""
from __future__ import annotations

import cv2
import numpy as np

from fitter_backend.fitting import point_rig
from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.problem import Observations, Parameters
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import rodrigues

# OpenCV's camera looks down +Z with +Y down; ours (Blender's) looks down -Z with +Y up.
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])
_MIN_POINTS = 6


def _rotation_vector(matrix: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.ascontiguousarray(matrix))[0].ravel()


def solve_pnp(rest_points: np.ndarray, mu_px: np.ndarray, sigma_px: np.ndarray, focal_px: float,
              image_size_px: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Head pose (R (3, 3), t (3,)) in a camera's GL frame, X = R x + t, from the landmarks
    with the smallest sigmas; None when too few landmarks or PnP fails."""
    present = np.all(np.isfinite(mu_px), axis=1)
    if present.sum() < _MIN_POINTS:
        return None
    sigma = sigma_px[present]
    keep = np.flatnonzero(present)[sigma <= 2.0 * np.median(sigma)]
    if len(keep) < _MIN_POINTS:
        keep = np.flatnonzero(present)
    object_points = np.ascontiguousarray(rest_points[keep], dtype=np.float64)
    image_points = np.ascontiguousarray(mu_px[keep], dtype=np.float64)
    cx, cy = np.asarray(image_size_px, float) / 2
    camera_matrix = np.array([[focal_px, 0, cx], [0, focal_px, cy], [0, 0, 1.0]])
    try:
        ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera_matrix, None, flags=cv2.SOLVEPNP_EPNP)
        if ok:
            ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera_matrix, None, rvec, tvec,
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error:
        return None
    if not ok or tvec[2, 0] <= 0 or not np.all(np.isfinite(tvec)):
        return None
    rotation = _CV_TO_GL @ cv2.Rodrigues(rvec)[0]
    return rotation, _CV_TO_GL @ tvec.ravel()


def _chordal_mean(rotations: list[np.ndarray]) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.sum(rotations, axis=0))
    mean = u @ vt
    if np.linalg.det(mean) < 0:
        u[:, -1] *= -1
        mean = u @ vt
    return mean


def initial_parameters(model: HeadModel, landmarks: SurfacePoints, observations: Observations,
                       cameras: Cameras) -> tuple[Parameters, np.ndarray]:
    """Parameters at the mean head and neutral expression, posed by PnP.

    Returns the parameters and (N,) bool marking frames whose pose was interpolated
    because no camera gave a PnP pose.
    """
    n = observations.num_frames
    rig = point_rig.build_point_rig(model, landmarks)
    zeros_i = np.zeros(model.num_identity)
    rest = point_rig.evaluate(rig, zeros_i, np.zeros((1, model.num_expression)),
                              np.zeros((1, model.num_joints, 3)), np.zeros((1, 3))).points[0]
    root = rig.joint_template[0]
    cameras = cameras.copy()

    # Poses of the head in each camera's frame.
    poses = [[solve_pnp(rest, observations.mu_px[i, c], observations.sigma_px[i, c], cameras.focal_px[c],
                        cameras.image_size_px[c]) for c in range(cameras.count)] for i in range(n)]
    # Unknown extrinsics: camera c relative to camera 0 from frames where both see the head.
    located = cameras.extrinsics_known.copy()
    for c in np.flatnonzero(~cameras.extrinsics_known):
        relative_r, relative_t = [], []
        for i in range(n):
            if poses[i][0] is not None and poses[i][c] is not None:
                (r0, t0), (rc, tc) = poses[i][0], poses[i][c]
                r = rc @ r0.T
                relative_r.append(r)
                relative_t.append(tc - r @ t0)
        if relative_r:
            cameras.rotation[c] = _rotation_vector(_chordal_mean(relative_r))
            cameras.translation_m[c] = np.median(relative_t, axis=0)
            located[c] = True

    rotations = np.zeros((n, model.num_joints, 3))
    translation = np.zeros((n, 3))
    found = np.zeros(n, bool)
    for i in range(n):
        best = None
        for c in range(cameras.count):
            if poses[i][c] is None or not located[c]:
                continue
            count = int(np.isfinite(observations.mu_px[i, c, :, 0]).sum())
            if best is None or count > best[0]:
                best = (count, c)
        if best is None:
            continue
        c = best[1]
        r_cam, t_cam = poses[i][c]
        r_extr = rodrigues(cameras.rotation[c])
        r_world = r_extr.T @ r_cam
        t_world = r_extr.T @ (t_cam - cameras.translation_m[c])
        rotations[i, 0] = _rotation_vector(r_world)
        translation[i] = t_world + r_world @ root - root  # X = R (x - root) + root + t
        found[i] = True
    if not found.any():
        # No PnP anywhere: a frontal head at a distance where it spans about a third of the image.
        depth = cameras.focal_px[0] * 0.2 / (cameras.image_size_px[0, 0] / 3)
        translation[:] = np.array([0.0, 0.0, -depth]) - root
    else:
        known = np.flatnonzero(found)
        for a in range(3):
            rotations[:, 0, a] = np.interp(np.arange(n), known, rotations[known, 0, a])
            translation[:, a] = np.interp(np.arange(n), known, translation[known, a])
    return Parameters(zeros_i, np.zeros((n, model.num_expression)), rotations, translation, cameras), ~found
