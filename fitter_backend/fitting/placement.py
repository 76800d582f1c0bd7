"""Landmark sigma widened by how well one surface place explains a landmark model's point.

A landmark model's point is tied to one place on the head (``SurfacePoints``), but some points
are not: MediaPipe's cheek and face-oval points slide over the surface as the head turns, so
no fixed place explains them in every frame. Set-up measures how far each point wanders
between views of the same head (``SurfacePoints.spread_m``); the fitter adds that spread,
projected at the point's depth, to its sigma:

    sigma_px' = sqrt(sigma_px^2 + (spread_m * focal_px / depth_m)^2)

so a wandering point weighs what its place is worth. The depth comes from the PnP start (the
mean head): a sigma needs no better. Measured with ``python -m fitter_backend.evaluation capture``
(docs/landmark_models.md, "Sigma and scale"): rendered focal -9.9 -> -7.9 %, head size -12.6 ->
-12.0 %, blink recall 0.75 / 0.88 -> 0.88 / 0.88, and jitter on wojtek / GRID bbaf2n / swwp2s
0.53 / 0.44 / 0.47 -> 0.47 / 0.41 / 0.44 mm/frame^2.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.fitting import point_rig
from fitter_backend.fitting.cameras import project
from fitter_backend.fitting.problem import Observations, Parameters
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints


def placement_sigma_px(model: HeadModel, landmarks: SurfacePoints, params: Parameters) -> np.ndarray | None:
    """(N, C, S) each landmark's spread in pixels at its depth in ``params`` (N frames, C cameras),
    or None where the landmarks record no spread."""
    if landmarks.spread_m is None or not np.any(landmarks.spread_m > 0):
        return None
    rig = point_rig.build_point_rig(model, landmarks)
    world = point_rig.evaluate(rig, params.identity, model.blend_weights(params.identity, params.expression),
                               params.rotations, params.translation_m).points     # (N, S, 3)
    out = []
    for camera in range(params.cameras.count):
        depth_m = np.maximum(-project(world, params.cameras, camera, derivatives=False).camera_points[..., 2], 1e-3)
        out.append(landmarks.spread_m[None] * params.cameras.focal_px[camera] / depth_m)
    return np.stack(out, axis=1)


def with_placement_sigma(observations: Observations, model: HeadModel, landmarks: SurfacePoints,
                         params: Parameters) -> Observations:
    """``observations`` with each sigma widened by its landmark's placement spread (see above)."""
    spread_px = placement_sigma_px(model, landmarks, params)
    if spread_px is None:
        return observations
    return Observations(observations.mu_px, np.sqrt(np.square(observations.sigma_px) + np.square(spread_px)))
