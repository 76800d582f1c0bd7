"""Which region of each frame the landmark model sees.

Offline (the paper's ROI): a square, no rotation, uniform scale, around the face the
detector is most sure of; from then on the square around the previous frame's landmarks,
with a fresh detection whenever the landmark model's confidence drops. Real time: the same,
but the crop is an :class:`AffineRoi` that puts the eyes and the mouth where the model
expects them. One tracker follows one face in one view.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.models.contract import AFFINE_ANCHORS, RoiSpec
from fitter_backend.roi.detector import FaceCandidate, FaceDetector, box_iou
from fitter_backend.roi.regions import AffineRoi, SquareRoi

#: The face detector's keypoint for each affine anchor.
DETECTOR_ANCHORS = {"right_eye": "right_eye", "left_eye": "left_eye", "mouth": "mouth_centre"}
#: Re-detection sticks to the face it followed when a candidate overlaps the last ROI this much.
SAME_FACE_IOU = 0.1


@dataclasses.dataclass(frozen=True)
class Detection:
    """The outcome of one detection: the chosen ROI (None: no face) and what was seen."""

    roi: SquareRoi | AffineRoi | None
    chosen: FaceCandidate | None
    faces: int


def choose_face(candidates: list[FaceCandidate], image_size: tuple[int, int],
                previous_box: np.ndarray | None = None) -> FaceCandidate | None:
    """The face to follow: the one overlapping the previously followed face, else the
    largest and most central one (size weighted down by distance from the image centre)."""
    if not candidates:
        return None
    if previous_box is not None:
        overlaps = box_iou(previous_box, np.array([c.box_px for c in candidates]))
        if overlaps.max() > SAME_FACE_IOU:
            return candidates[int(np.argmax(overlaps))]
    centre = np.array(image_size, dtype=np.float64) / 2
    half_diagonal = float(np.linalg.norm(centre))
    rank = [c.size_px * (1.0 - 0.5 * np.linalg.norm(c.centre_px - centre) / half_diagonal) for c in candidates]
    return candidates[int(np.argmax(rank))]


class OfflineRoiTracker:
    """Square ROIs for one face in one view.

    roi_spec: the landmark model's ROI contract (scales from detection and landmarks).
    """

    def __init__(self, detector: FaceDetector, roi_spec: RoiSpec):
        self.detector, self.roi_spec = detector, roi_spec
        self._last_box: np.ndarray | None = None     # box of the face followed, for re-detection
        self._next: SquareRoi | AffineRoi | None = None

    def predicted_roi(self) -> SquareRoi | AffineRoi | None:
        """The ROI for the next frame from the last good landmarks; None: detect first."""
        return self._next

    def detect(self, image: np.ndarray, white_level: float | None = None) -> Detection:
        height, width = image.shape[:2]
        candidates = self.detector.detect(image, white_level)
        chosen = choose_face(candidates, (width, height), self._last_box)
        if chosen is None:
            return Detection(None, None, 0)
        self._last_box = chosen.box_px
        return Detection(SquareRoi.around_box(chosen.box_px, self.roi_spec.scale_from_detection), chosen,
                         len(candidates))

    def roi_from_landmarks(self, mu_px: np.ndarray) -> SquareRoi | AffineRoi:
        """The square around (N, 2) landmarks, grown by the model's scale_from_landmarks."""
        return SquareRoi.around_points(mu_px, self.roi_spec.scale_from_landmarks)

    def update(self, mu_px: np.ndarray | None) -> None:
        """Record this frame's landmarks (None when the face was lost: detect next time)."""
        if mu_px is None:
            self._next = None
            return
        self._next = self.roi_from_landmarks(mu_px)
        self._last_box = SquareRoi.around_points(mu_px, 1.0).box()


class RealtimeRoiTracker(OfflineRoiTracker):
    """Affine ROIs: the previous frame's eye and mouth anchors go to fixed crop positions.

    anchors: landmark indices averaged into each anchor (``right_eye``, ``left_eye``, ``mouth``).
    """

    def __init__(self, detector: FaceDetector, roi_spec: RoiSpec, anchors: dict[str, tuple[int, ...]]):
        super().__init__(detector, roi_spec)
        self.anchors = anchors

    def roi_from_landmarks(self, mu_px: np.ndarray) -> AffineRoi:
        points = {name: mu_px[list(self.anchors[name])].mean(0) for name in AFFINE_ANCHORS}
        return AffineRoi.from_anchors(points, self.roi_spec.affine_targets)

    def detect(self, image: np.ndarray, white_level: float | None = None) -> Detection:
        """As offline; a model trained on affine crops only (``roi.crop`` "affine") gets its
        first crop from the detector's eye and mouth keypoints instead of a square."""
        detection = super().detect(image, white_level)
        if self.roi_spec.crop != "affine" or detection.chosen is None:
            return detection
        keypoints = dict(zip(self.detector.keypoint_names, detection.chosen.keypoints_px))
        points = {anchor: keypoints.get(name) for anchor, name in DETECTOR_ANCHORS.items()}
        if any(point is None for point in points.values()):
            return detection     # a detector without those keypoints: the square, refined from landmarks
        return dataclasses.replace(detection, roi=AffineRoi.from_anchors(points, self.roi_spec.affine_targets))
