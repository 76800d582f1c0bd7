"""Two landmark models as one: a face model's points plus a whole-head model's points off the face.

On photographs the dense network's face points are still less accurate than MediaPipe's
face mesh (docs/dense_landmarks.md, section 5), while its ears, neck and back-of-head points
have no MediaPipe counterpart. :class:`CombinedLandmarker` runs both on every frame and
hands the fitter the face model's points followed by the head model's points of
``regions``, their sigma widened by ``sigma_scale`` (the synthetic-to-real gap those
regions cannot be calibrated for: no annotated photographs of ears or necks here).

The face model decides a frame's flags. Where the head model loses the head (nothing
detected, presence below its threshold) the frame keeps its face points and the head
points are missing (NaN), never guessed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from fitter_backend.landmarks.eye_refine import SUFFIX as EYE_REFINED_SUFFIX
from fitter_backend.landmarks.eye_refine import EyeRefinedLandmarker
from fitter_backend.models.errors import LandmarkModelError
from fitter_backend.landmarks.pipeline import FrameLandmarker, FrameLandmarks, Landmarker
from fitter_backend.video.frames import Frame

#: The head model's regions the face model does not cover.
HEAD_REGIONS = ("ears", "neck", "back_of_head")
#: Head-point sigma over what the head model predicts (docs/dense_landmarks.md section 5:
#: at x1 the head points pull the fitted face away from the photographs' annotations).
SIGMA_SCALE = 4.0
#: "face+head" in a landmark model name asks for a combination.
SEPARATOR = "+"


class CombinedLandmarker(FrameLandmarker):
    """``face``'s landmarks, then ``head``'s landmarks of ``regions`` (sigma x ``sigma_scale``)."""

    def __init__(self, face: Landmarker, head: Landmarker, regions: Sequence[str] = HEAD_REGIONS,
                 sigma_scale: float = SIGMA_SCALE):
        head_regions = head.metadata.regions
        missing = [name for name in regions if name not in head_regions]
        if missing:
            raise LandmarkModelError(f"landmark model {head.metadata.name!r} has no region(s) "
                                     f"{', '.join(missing)}; it names {', '.join(head_regions) or 'none'}")
        if not sigma_scale > 0:
            raise LandmarkModelError(f"sigma_scale must be > 0, got {sigma_scale}")
        self.face, self.head = face, head
        self.regions, self.sigma_scale = tuple(regions), float(sigma_scale)
        #: (H,) indices into the head model's landmarks, in the combined track after the face's.
        self.head_points = np.unique(np.concatenate([np.asarray(head_regions[r], np.int64) for r in regions]))

    @property
    def landmark_set(self) -> str:
        return f"{self.face.landmark_set}{SEPARATOR}{self.head.landmark_set}[{','.join(self.regions)}]"

    @property
    def semantic_points(self) -> dict[str, int]:
        return self.face.semantic_points

    @property
    def num_landmarks(self) -> int:
        return self.face.num_landmarks + len(self.head_points)

    def reset(self) -> None:
        self.face.reset()
        self.head.reset()

    def process(self, frames: Sequence[Frame]) -> list[FrameLandmarks]:
        out = []
        for face, head in zip(self.face.process(frames), self.head.process(frames)):
            mu = head.mu_px[self.head_points]
            sigma = head.sigma_px[self.head_points] * np.float32(self.sigma_scale)
            if not head.valid:
                mu, sigma = np.full_like(mu, np.nan), np.full_like(sigma, np.inf)
            out.append(dataclasses.replace(face, mu_px=np.concatenate([face.mu_px, mu]),
                                           sigma_px=np.concatenate([face.sigma_px, sigma])))
        return out

    def observations(self, readings: list[FrameLandmarks]) -> list[FrameLandmarks]:
        # The face model's points come first, at the same indices, and only it corrects any.
        return self.face.observations(readings)


def load_landmarker(landmarks: str, device: str = "cpu", realtime: bool = False,
                    progress: Callable[[str], None] = print) -> Landmarker | CombinedLandmarker:
    """The landmark stage for a model name: one model (``"face_mesh_468"``, ``"face_mesh_468_iris"``
    (its lids redrawn by the iris model), a shipped dense model) or ``"FACE+HEAD"``, the face
    model's points plus the head model's whole-head points."""
    names = landmarks.split(SEPARATOR)
    if len(names) > 2 or not all(names):
        raise LandmarkModelError(f"landmark model {landmarks!r}: expected one model name or two joined "
                                 f"by {SEPARATOR!r} (face model first, whole-head model second)")
    models = [(EyeRefinedLandmarker if name.endswith(EYE_REFINED_SUFFIX) else Landmarker).from_setup(
        device=device, landmarks=name, realtime=realtime, progress=progress) for name in names]
    return models[0] if len(models) == 1 else CombinedLandmarker(*models)
