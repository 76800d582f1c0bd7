"""Landmarks that stay put while the lid skin slides under them.

Set-up gives such a landmark two places on the head (``SurfacePoints.eyes_closed``,
landmarks/embedding.py): where it lies on the open head (A) and where it lies when the eyes
are shut (B). As the eye closes with weight w = eyeBlink (0..1) the landmark is taken to be

    x = (1 - w) x_A + w x_B,    dx/dw = x_B - x_A,

both points posed by the rig like any other. At w = 0 it is its open-head place, at w = 1 its
closed-eye place, and on the way the skin under it carries A down and brings B to about where A
was, so the landmark holds still as MediaPipe's does.

Shapes: n frames, P rig points, K sliding landmarks, p frame unknowns, I identity.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.head_models.eyes import BLINK_UNITS, has_blinks
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints


@dataclasses.dataclass(frozen=True)
class SlidingLandmarks:
    """landmark (K,) indices into the landmarks; unit (K,) the expression column of the eye's
    blink each follows; closed: their closed-eye places (K points)."""

    landmark: np.ndarray
    unit: np.ndarray
    closed: SurfacePoints


def sliding_landmarks(model: HeadModel, landmarks: SurfacePoints) -> SlidingLandmarks | None:
    """The landmarks whose closed-eye place differs from their own, each with the blink unit that
    moves its closed-eye place the most; None when there are none (or the head has no blinks)."""
    closed = landmarks.eyes_closed
    names = model.expression_names
    if closed is None or not has_blinks(model):
        return None
    moved = (closed.triangle != landmarks.triangle) | np.any(
        np.abs(closed.barycentric - landmarks.barycentric) > 1e-6, axis=1)
    rows = np.flatnonzero(moved)
    if not len(rows):
        return None
    columns = np.array([names.index(unit) for unit in BLINK_UNITS])
    corners = model.triangles[closed.triangle[rows]]                                   # (K, 3)
    basis = np.einsum("kc,kcdu->kdu", closed.barycentric[rows].astype(np.float64),
                      model.expression_basis[corners][..., columns])                    # (K, 3, 2)
    unit = columns[np.argmax(np.linalg.norm(basis, axis=1), axis=1)]
    return SlidingLandmarks(rows, unit, closed.subset([closed.names[k] for k in rows]))


def blend(sliding: SlidingLandmarks, closed_rows: np.ndarray, expression: np.ndarray, points: np.ndarray,
          d_frame: np.ndarray | None = None, d_identity: np.ndarray | None = None,
          expression_start: int | None = None) -> None:
    """In place: the sliding landmarks' rows of the rig's posed ``points`` (n, P, 3) (the
    landmarks are the rig's first rows) become (1 - w) x_A + w x_B, and with derivatives, those
    of ``d_frame`` (n, 3, P, p) and ``d_identity`` (n, 3, P, I) the same blend, plus x_B - x_A in
    each one's blink column (``expression_start`` + unit; None where the expressions are not
    solved for). ``closed_rows`` (K,) are the rig rows of the closed-eye places B;
    ``expression`` (n, E) the frames' weights."""
    rows = sliding.landmark
    weight = np.clip(expression[:, sliding.unit], 0.0, 1.0)                     # (n, K)
    offset = points[:, closed_rows] - points[:, rows]                           # (n, K, 3)
    points[:, rows] += weight[..., None] * offset
    for d in (d_frame, d_identity):
        if d is not None:
            w = weight[:, None, :, None].astype(d.dtype)
            d[:, :, rows] += w * (d[:, :, closed_rows] - d[:, :, rows])
    if d_frame is not None and expression_start is not None:
        frames = np.arange(len(expression))[:, None, None]
        coords = np.arange(3)[None, :, None]
        d_frame[frames, coords, rows[None, None], (expression_start + sliding.unit)[None, None]] += \
            offset.transpose(0, 2, 1).astype(d_frame.dtype)
