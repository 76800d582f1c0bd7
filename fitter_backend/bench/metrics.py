"""Accuracy figures of a fit against synthetic ground truth, as small pure functions.

Errors are Euclidean distances in millimetres between corresponding vertices of the face
region. Per-frame errors are taken after a rigid (rotation + translation, no scale)
alignment of the fitted face onto the true one, so they measure shape, not pose; the
unaligned error in camera space is reported beside them.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.fitting.problem import Parameters
from fitter_backend.head_models import lbs
from fitter_backend.head_models.head_model import HeadModel

MM_PER_M = 1000.0


def face_vertices(model: HeadModel, params: Parameters) -> np.ndarray:
    """(N, F, 3) world positions of the face-region vertices of every frame, in metres."""
    ids = np.flatnonzero(model.regions["face"])
    rig = lbs.Rig.from_model(model, ids)
    pose = lbs.Pose.for_model(model, params.identity, params.expression, params.rotations, params.translation_m)
    return lbs.forward(rig, pose).posed


def neutral_face(model: HeadModel, identity: np.ndarray) -> np.ndarray:
    """(F, 3) face-region vertices of the identity alone (zero expression, pose and translation)."""
    ids = np.flatnonzero(model.regions["face"])
    rig = lbs.Rig.from_model(model, ids)
    return lbs.forward(rig, lbs.Pose.for_model(model, identity, num_frames=1)).posed[0]


def rigid_align(source: np.ndarray, target: np.ndarray, scale: bool = False) -> np.ndarray:
    """``source`` (..., V, 3) moved by the rotation and translation (Kabsch), and with ``scale``
    the uniform scale too (Umeyama; NoW's protocol), that best fit it onto ``target`` (..., V, 3)
    in the least-squares sense."""
    source_mean = source.mean(axis=-2, keepdims=True)
    target_mean = target.mean(axis=-2, keepdims=True)
    a, b = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(np.swapaxes(a, -1, -2) @ b)   # (..., 3, 3) covariance
    # Reflections are not rigid motions: flip the weakest axis when det < 0.
    sign = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= sign[..., None]
    rotation = u @ vt                                             # a @ rotation ~= b
    factor = 1.0
    if scale:
        singular[..., -1] *= sign
        factor = (singular.sum(axis=-1) / np.square(a).sum(axis=(-2, -1)))[..., None, None]
    return factor * (a @ rotation) + target_mean


def vertex_errors_mm(fitted: np.ndarray, truth: np.ndarray, align: bool = True) -> np.ndarray:
    """(..., V) distances in mm between fitted and true vertices (..., V, 3), each frame
    rigidly aligned first when ``align``."""
    moved = rigid_align(fitted, truth) if align else fitted
    return MM_PER_M * np.linalg.norm(moved - truth, axis=-1)


def median_and_p90(errors: np.ndarray) -> tuple[float, float]:
    """Median and 90th percentile over all entries."""
    return float(np.median(errors)), float(np.percentile(errors, 90))


def identity_error_mm(model: HeadModel, fitted_identity: np.ndarray, true_identity: np.ndarray) -> float:
    """Median error in mm of the neutral face of the fitted identity, rigidly aligned."""
    return float(np.median(vertex_errors_mm(neutral_face(model, fitted_identity),
                                            neutral_face(model, true_identity))))


def focal_error_percent(fitted_focal_px: np.ndarray, true_focal_px: np.ndarray) -> np.ndarray:
    """(C,) relative focal length errors in percent."""
    return 100.0 * np.abs(np.asarray(fitted_focal_px) / np.asarray(true_focal_px) - 1.0)


def jitter_mm(vertices: np.ndarray) -> float:
    """Mean norm of the frame-to-frame acceleration |v[i+1] - 2 v[i] + v[i-1]| in mm over
    frames and vertices of (N, V, 3) positions; NaN for fewer than three frames."""
    if len(vertices) < 3:
        return float("nan")
    acceleration = vertices[2:] - 2.0 * vertices[1:-1] + vertices[:-2]
    return float(MM_PER_M * np.mean(np.linalg.norm(acceleration, axis=-1)))


def jitter_error_mm(fitted: np.ndarray, truth: np.ndarray) -> float:
    """Mean norm in mm of the acceleration of the fit's error, |a_fitted - a_true| over frames
    and vertices of (N, V, 3) positions: the jitter the fit adds to the true motion."""
    if len(fitted) < 3:
        return float("nan")
    error = fitted - truth
    acceleration = error[2:] - 2.0 * error[1:-1] + error[:-2]
    return float(MM_PER_M * np.mean(np.linalg.norm(acceleration, axis=-1)))
