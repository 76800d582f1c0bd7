"""Label translation: a head model's named points read off a fit, in image pixels.

The landmark stage predicts its own points (MediaPipe's mesh); a dataset annotates others
(iBUG-68). Fitting the head to the predicted points and projecting the head model's semantic
points with the fitted pose and camera gives any annotated definition the model carries
(paper, section 5: "label translation"). A single image is fitted as a one-frame shot.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.fitting.cameras import Cameras, project
from fitter_backend.fitting.problem import FitSettings, Observations, Parameters
from fitter_backend.fitting.sequence import FitResult, fit_sequence
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices, surface_points
from fitter_backend.landmarks.pipeline import FrameLandmarker, FrameLandmarks
from fitter_backend.video.frames import Frame

IBUG68 = tuple(f"ibug_{k:02d}" for k in range(68))


def label_points_px(model: HeadModel, params: Parameters, names: tuple[str, ...] = IBUG68,
                    camera: int = 0) -> np.ndarray:
    """(N, S, 2) image pixels of the model's semantic points ``names`` in every fitted frame,
    posed with the fitted parameters and projected with the fitted camera ``camera``."""
    vertices = posed_vertices(model, params.identity, params.expression, params.rotations, params.translation_m)
    points = surface_points(vertices, model.triangles, model.semantic_points.subset(list(names)))
    return project(points, params.cameras, camera, derivatives=False).pixels


def crop_around(image: np.ndarray, points_px: np.ndarray, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` (H, W, C) within ``margin`` x the larger side of the points'
    bounding box around it (clipped to the image; NaN points are not annotated), and its
    top-left corner (x, y) in pixels.
    Datasets give the face by its annotation: this keeps crowd images to the annotated face."""
    low, high = np.nanmin(points_px, axis=0), np.nanmax(points_px, axis=0)
    pad = margin * float((high - low).max())
    x0, y0 = np.maximum(np.floor(low - pad), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(high + pad), [image.shape[1], image.shape[0]]).astype(int)
    return image[y0:y1, x0:x1], np.array([x0, y0], dtype=np.float64)


@dataclasses.dataclass
class ImageFit:
    """The landmark stage's output on one image and the one-frame fit to it (None when the
    stage found no usable face)."""

    landmarks: FrameLandmarks
    fit: FitResult | None


def fit_image(model: HeadModel, points: SurfacePoints, landmarker: FrameLandmarker, frame: Frame,
              settings: FitSettings = FitSettings()) -> ImageFit:
    """Landmarks (detection from scratch) and a single-frame fit of ``frame``, as the
    pipeline runs them on a one-frame shot with an unknown focal length."""
    landmarker.reset()
    found = landmarker.process([frame])[0]
    if not found.valid:
        return ImageFit(found, None)
    height, width = frame.image.shape[:2]
    observations = Observations.monocular(found.mu_px[None], found.sigma_px[None])
    return ImageFit(found, fit_sequence(model, points, observations, Cameras.monocular(width, height), settings))
