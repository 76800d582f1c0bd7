"""A synthetic shot as a landmark source: a generated talking head's landmark track, for testing
the whole path from a request to a result folder without a video. It sits beside the frame
sources because it stands in for them and the landmark stage together: it yields what the
landmark stage would (mu, sigma per frame), not images."""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.problem import Observations
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints

SYNTHETIC_LANDMARKS = 300      # dense stand-in landmarks of a synthetic shot
SYNTHETIC_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class SyntheticLandmarks:
    """points: the S landmarks on the head; observations: mu_px (N, 1, S, 2), sigma_px (N, 1, S);
    cameras: the one camera the fit is told about; frame_indices (N,); fps."""

    points: SurfacePoints
    observations: Observations
    cameras: Cameras
    frame_indices: np.ndarray
    fps: float


def synthetic_landmarks(model: HeadModel, num_frames: int, seed: int) -> SyntheticLandmarks:
    """A generated shot of ``num_frames`` frames of ``model`` talking and turning."""
    from fitter_backend.fitting import synthetic
    points = synthetic.area_sampled_points(model, SYNTHETIC_LANDMARKS, seed=seed)
    shot = synthetic.make_shot(model, points, num_frames=num_frames, seed=seed)
    return SyntheticLandmarks(points, shot.observations, shot.cameras, np.arange(num_frames), SYNTHETIC_FPS)
