"""Normalised mean error (NME) of 68-point landmarks, 300-W style.

NME of one face = mean over its points of |predicted - truth| / d, where d is the
inter-ocular distance (outer eye corners, iBUG points 36 and 45) or, for profile-heavy sets
such as AFLW2000-3D, sqrt(width x height) of the ground truth's bounding box (profiles shrink
the inter-ocular distance and inflate the first). A set's NME is the mean over its faces.
Ground truth may mark points it does not annotate as NaN (IMM maps only some points to
iBUG-68): those points are left out of the mean and the box.
"""
from __future__ import annotations

import numpy as np

#: Outer eye corners in the 0-based iBUG-68 order.
OUTER_EYE_CORNERS = (36, 45)
#: The 51 inner points (no jaw contour, whose iBUG definition is the 2D silhouette).
INNER_POINTS = np.arange(17, 68)


def inter_ocular_px(truth_px: np.ndarray) -> np.ndarray:
    """(..., 68, 2) ground truth -> (...) distance between the outer eye corners."""
    return np.linalg.norm(truth_px[..., OUTER_EYE_CORNERS[0], :] - truth_px[..., OUTER_EYE_CORNERS[1], :], axis=-1)


def box_size_px(truth_px: np.ndarray) -> np.ndarray:
    """(..., P, 2) ground truth -> (...) sqrt(width x height) of its bounding box."""
    extent = np.nanmax(truth_px, axis=-2) - np.nanmin(truth_px, axis=-2)
    return np.sqrt(extent[..., 0] * extent[..., 1])


def nme(predicted_px: np.ndarray, truth_px: np.ndarray, normaliser_px: np.ndarray,
        points: np.ndarray | None = None) -> np.ndarray:
    """(..., P, 2) predictions and ground truth, (...) normalisers -> (...) NME per face (a
    fraction, not percent) over ``points`` (indices; all by default) that the truth annotates."""
    errors = np.linalg.norm(np.asarray(predicted_px, float) - np.asarray(truth_px, float), axis=-1)
    if points is not None:
        errors = errors[..., points]
    return np.nanmean(errors, axis=-1) / np.asarray(normaliser_px, float)


def similarity_aligned(predicted_px: np.ndarray, truth_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, P, 2) predictions and ground truth -> (predictions moved by the least-squares 2D
    similarity (rotation, scale, shift) onto the truth, (F,) that similarity's scale). NME of
    the aligned points is the shape error alone; the rest of the NME is placement and size."""
    predicted, truth = np.asarray(predicted_px, float), np.asarray(truth_px, float)
    p = predicted - predicted.mean(axis=-2, keepdims=True)
    t = truth - truth.mean(axis=-2, keepdims=True)
    norm = (p ** 2).sum(axis=(-2, -1))
    a = (p * t).sum(axis=(-2, -1)) / norm
    b = (p[..., 0] * t[..., 1] - p[..., 1] * t[..., 0]).sum(axis=-1) / norm
    rotated = np.stack([a[:, None] * p[..., 0] - b[:, None] * p[..., 1],
                        b[:, None] * p[..., 0] + a[:, None] * p[..., 1]], axis=-1)
    return rotated + truth.mean(axis=-2, keepdims=True), np.hypot(a, b)
