"""MediaPipe's face mesh with its lids redrawn by MediaPipe's iris model, as MediaPipe's own
iris pipeline does.

The 468-point mesh sees the whole face at 192 px and barely closes its lids in a blink
(docs/landmark_models.md, section 3b). The iris model (``iris_landmark``, converted at set-up
from the same ``mediapipe==0.10.21`` wheel) sees one eye at 64 px: a square crop of 2.3
corner-to-corner widths, rotated so the corners lie level, the subject's left eye mirrored
(the model was trained on right eyes). Its 71 points are MediaPipe's eye contour, lid halos
and brow contour, at fixed mesh indices (:data:`MESH_INDICES`, from MediaPipe's
``update_face_landmarks_calculator.cc``, and checked here: on real frames each point lands
1-2 px from the mesh's). Of them, only the lid contour (:data:`REFINED_POINTS` per eye)
replaces the mesh's points; the halos and brows stay the mesh's (measured, section 3b). On a
mesh whose lids come from the attention mesh (``face_mesh_468_attention_lids``, the default) the
lid points are the mean of both lid models: the attention mesh closes its lids on a shut eye
where the iris model stops at a slit, and the mean is closer to the annotated photographs than
either (section 3b).

Both lid models stop short of a closing lid, and the miss is the upper lid's: the track, what the
fitter is given, brings each upper lid down by the amount measured for that face mesh's lids
(:func:`stretch_lids`, in :meth:`EyeRefinedLandmarker.observations`); set-up places the points
from the lids as read.

Everything else is the face mesh's, and the track adds the iris model's iris centre of each
eye after the mesh's points (:data:`IRIS_CENTRES`): set-up puts them on the head's pupils, so
the fit turns the eye joints after the actor's gaze. Under a half-shut lid the model only
guesses where the iris is, so there the centre is reported missing.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from fitter_backend.landmarks.model import LandmarkModel
from fitter_backend.landmarks.names import ATTENTION_LIDS_LANDMARKS, BOOTSTRAP_LANDMARKS
from fitter_backend.landmarks.pipeline import FrameLandmarks, Landmarker
from fitter_backend.models.contract import LandmarkMetadata
from fitter_backend.models.errors import LandmarkModelError
from fitter_backend.models.onnx_session import create_session
from fitter_backend.roi.regions import AffineRoi, SquareRoi
from fitter_backend.video.frames import Frame

#: "<face mesh>_iris" names the face mesh refined by the iris model.
SUFFIX = "_iris"
CROP_SCALE = 2.3        # crop side / eye corner distance (MediaPipe's iris graph)
#: Mesh indices of the iris model's 71 points for the subject's right eye (corners 33, 133;
#: cropped as is) and left eye (corners 263, 362; mirrored): lower lid with the corners (9),
#: upper lid (7), then halos and brows.
MESH_INDICES = {
    "right": (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
              130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
              226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
              35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
              156, 70, 63, 105, 66, 107, 55, 193),
    "left": (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
             359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
             446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
             265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
             383, 300, 293, 334, 296, 336, 285, 417),
}
MIRRORED = {"right": False, "left": True}
#: The lid contour: the first 16 points of each eye (MediaPipe's "eyes" region): the lower lid
#: from corner to corner (9), then the upper lid (7); the middle three of each measure the opening.
REFINED_POINTS = 16
LOWER_MIDDLE, UPPER_MIDDLE = (3, 4, 5), (11, 12, 13)
#: The semantic names of the iris centres the track adds after the face mesh's points, by eye;
#: they follow MESH_INDICES' order (MediaPipe's 478-point order: the subject's right eye first).
IRIS_CENTRES = {"right": "iris_centre_R", "left": "iris_centre_L"}
#: Sigma of an iris centre as a fraction of the face ROI's side, measured on rendered clips
#: against the painted pupil (docs/landmark_models.md, section 3e). Under a lid open less than
#: OPEN_EYE_GAP of the eye's width the model guesses (errors 4 times larger): the centre is
#: reported missing there.
IRIS_SIGMA_ROI_FRACTION = 0.006
OPEN_EYE_GAP = 0.2
#: Face meshes whose lids come from a lid model of their own (the attention mesh's,
#: docs/landmark_models.md section 3b): there each lid point is the mean of the mesh's and the
#: iris model's, two detectors whose errors partly cancel.
MESHES_WITH_OWN_LIDS = frozenset({ATTENTION_LIDS_LANDMARKS})
OWN_LIDS_WEIGHT = 0.5
#: Sigma of the lids averaged so (iBUG 36-47 on the 22 annotated faces: 0.0144; the attention
#: mesh's alone 0.0151, the iris model's 0.0161).
MEAN_LID_SIGMA_ROI_FRACTION = 0.0144
#: Lid models stop short of a closing lid: on rendered clips (seeds 7-12, none of those
#: ``capture`` reports) the default's mean lids read a shut eye 0.055 of the eye's width open
#: (90 % of frames under 0.095), a half-shut one (truth 0.20) 0.27, an open one 0.34 as it is, and
#: the gap left is the upper lid's: the lower lid is read where it is (docs/landmark_models.md,
#: section 3b, stop 28; real shut eyes read the same, GRID bbaf2n 0.04-0.05). Below
#: LID_OPEN_REFERENCE the upper lid is brought down so that a face mesh's LID_SHUT_READINGS
#: (the 90th percentile of its lids' shut readings there: 0.095; the iris model's lids alone
#: 0.148) and less read shut (:func:`stretch_lids`). The reference sits under real open eyes (0.24-0.33
#: on the 12 real clips): at 0.30, narrow-eyed actors' open eyes were stretched too (GRID lbax4n
#: open-eye eyeBlink 0.25 -> 0.33).
LID_OPEN_REFERENCE = 0.25
LID_SHUT_READINGS = {ATTENTION_LIDS_LANDMARKS: 0.10, BOOTSTRAP_LANDMARKS: 0.15}
#: Sigma of the refined lid points as a fraction of the face ROI's side, measured like the
#: face mesh's (docs/landmark_models.md, section 3b: iBUG 36-47 on the 22 annotated faces;
#: the face mesh's own lids: 0.0178).
LID_SIGMA_ROI_FRACTION = 0.0161


@dataclasses.dataclass(frozen=True)
class IrisModel:
    """The iris model's ONNX session and its input/output names (``iris_landmark.json``)."""

    session: object
    input_name: str
    contour_name: str
    iris_name: str
    size_px: int
    onnx_path: Path

    @classmethod
    def load(cls, onnx_path: str | Path, device: str = "cpu") -> "IrisModel":
        onnx_path = Path(onnx_path)
        metadata_path = onnx_path.with_suffix(".json")
        try:
            meta = json.loads(metadata_path.read_text(encoding="utf-8"))
            names = (meta["input"]["name"], meta["outputs"]["contour"]["name"], meta["outputs"]["iris"]["name"],
                     int(meta["input"]["size_px"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise LandmarkModelError(f"eye landmark metadata {metadata_path} is missing or malformed: "
                                     f"{error}") from None
        if meta.get("format") != "facecap-eye-landmarks":
            raise LandmarkModelError(f"{metadata_path} is not a facecap-eye-landmarks file")
        return cls(create_session(onnx_path, device), *names, onnx_path)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops (B, S, S, 3) float32 in [0, 1] -> (B, 71, 2) eye contour points and (B, 5, 2)
        iris points (centre first) in crop pixels."""
        contour, iris = self.session.run([self.contour_name, self.iris_name], {self.input_name: crops.astype(np.float32)})
        return contour.reshape(len(crops), -1, 3)[..., :2], iris.reshape(len(crops), -1, 3)[..., :2]


def eye_roi(outer_px: np.ndarray, inner_px: np.ndarray) -> AffineRoi:
    """The rotated square crop of one eye: corners level, at the middle, 1/CROP_SCALE of the side apart.
    The corner further left in the image goes left in the crop."""
    first, second = (outer_px, inner_px) if outer_px[0] <= inner_px[0] else (inner_px, outer_px)
    half = 0.5 / CROP_SCALE
    return AffineRoi.from_anchors({"a": first, "b": second}, {"a": (0.5 - half, 0.5), "b": (0.5 + half, 0.5)})


def lid_opening(lid_px: np.ndarray) -> float:
    """An eye's lid gap over its corner-to-corner width, from its 16 lid contour points (image
    pixels, in the iris model's order): the middle of the lower lid from the middle of the upper,
    across the corners' line."""
    across = lid_px[REFINED_POINTS // 2] - lid_px[0]
    width = float(np.linalg.norm(across))
    offset = lid_px[list(LOWER_MIDDLE)].mean(axis=0) - lid_px[list(UPPER_MIDDLE)].mean(axis=0)
    return abs(float(across[0] * offset[1] - across[1] * offset[0])) / width ** 2


def seen_lids(mu_px: np.ndarray) -> Iterator[tuple[str, list[int], np.ndarray]]:
    """Per eye whose lid contour is all there: its side, the contour's rows in ``mu_px`` and the
    (16, 2) points as float64."""
    for side, indices in MESH_INDICES.items():
        rows = list(indices[:REFINED_POINTS])
        lids = mu_px[rows].astype(np.float64)
        if np.isfinite(lids).all():
            yield side, rows, lids


def stretch_lids(lid_px: np.ndarray, shut_reading: float, open_reference: float) -> np.ndarray:
    """(16, 2) one eye's lid contour (image pixels, the iris model's order) with its opening g
    (:func:`lid_opening`) mapped to ``open_reference (g - shut_reading) / (open_reference -
    shut_reading)`` (0 at or under ``shut_reading``) where g < ``open_reference``. Each upper-lid
    point moves across the corners' line toward its lower-lid partner: on rendered blinks the
    lower lid is read where it is and the upper one stops above it (docs/landmark_models.md,
    section 3b, stop 28). Corners and lower lid stay."""
    opening = lid_opening(lid_px)
    if not 0.0 < opening < open_reference:
        return lid_px
    stretched = max(opening - shut_reading, 0.0) * open_reference / (open_reference - shut_reading)
    half = REFINED_POINTS // 2
    across = lid_px[half] - lid_px[0]
    normal = np.array([-across[1], across[0]]) / np.linalg.norm(across)
    lower, upper = lid_px[1:half], lid_px[half + 1:]    # partners: the same side's corner first
    out = np.array(lid_px, dtype=np.float64, copy=True)
    out[half + 1:] = upper - (1.0 - stretched / opening) * ((upper - lower) @ normal)[:, None] * normal
    return out


def refine_eyes(frames: Sequence[Frame], mu_px: Sequence[np.ndarray], iris: IrisModel,
                mesh_weight: float = 0.0) -> list[np.ndarray]:
    """Per frame: the mesh's (N, 2) image points with each eye's lid contour (its first
    :data:`REFINED_POINTS` points) replaced by the iris model's, or by the mean of both with
    ``mesh_weight`` on the mesh's, and the iris centres appended ((N + 2, 2),
    :data:`IRIS_CENTRES` order; one batched model call for all eyes)."""
    crops, transforms = [], []
    for frame, mu in zip(frames, mu_px):
        for side, indices in MESH_INDICES.items():
            roi = eye_roi(mu[indices[0]].astype(np.float64), mu[indices[8]].astype(np.float64))
            crop, transform = roi.crop(frame.image, iris.size_px)
            crop = crop.astype(np.float32) * np.float32(1.0 / frame.white_level)
            crops.append(crop[:, ::-1] if MIRRORED[side] else crop)
            transforms.append(transform)
    contours, irises = iris.predict(np.ascontiguousarray(np.stack(crops)))
    out, k = [], 0
    for mu in mu_px:
        refined = np.array(mu, copy=True)
        centres = np.zeros((len(IRIS_CENTRES), 2))
        for e, (side, indices) in enumerate(MESH_INDICES.items()):
            crop_points = np.concatenate([contours[k, :REFINED_POINTS], irises[k, :1]]).astype(np.float64)
            if MIRRORED[side]:
                crop_points[:, 0] = iris.size_px - crop_points[:, 0]
            image_points = transforms[k].to_image(crop_points)
            lids = list(indices[:REFINED_POINTS])
            refined[lids] = mesh_weight * refined[lids] + (1.0 - mesh_weight) * image_points[:REFINED_POINTS]
            centres[e] = image_points[REFINED_POINTS]
            k += 1
        out.append(np.concatenate([refined, centres]).astype(mu.dtype))
    return out


class EyeRefinedLandmarker(Landmarker):
    """A MediaPipe face-mesh :class:`Landmarker` whose lid points come from the iris model, with
    the iris centres after the mesh's points."""

    def __init__(self, model: LandmarkModel, detector, iris: IrisModel, realtime: bool = False,
                 refine_detections: bool = True):
        # The refined model is a landmark model of its own (its embedding on a head and its
        # lids' sigma differ).
        sigma = np.array(model.metadata.sigma_roi_fraction, dtype=np.float64)
        own_lids = model.metadata.name in MESHES_WITH_OWN_LIDS
        self.mesh_lid_weight = OWN_LIDS_WEIGHT if own_lids else 0.0
        shut = LID_SHUT_READINGS.get(model.metadata.name)
        self.lid_stretch = None if shut is None else (shut, LID_OPEN_REFERENCE)  # where measured
        sigma[[i for indices in MESH_INDICES.values() for i in indices[:REFINED_POINTS]]] = \
            MEAN_LID_SIGMA_ROI_FRACTION if own_lids else LID_SIGMA_ROI_FRACTION
        mesh = dataclasses.replace(model.metadata, name=model.metadata.name + SUFFIX, sigma_roi_fraction=sigma)
        super().__init__(LandmarkModel(model.session, mesh, model.onnx_path), detector, realtime, refine_detections)
        self.iris = iris
        first = mesh.num_landmarks
        centres = {IRIS_CENTRES[side]: first + e for e, side in enumerate(MESH_INDICES)}  # refine_eyes' order
        self._metadata = dataclasses.replace(
            mesh, landmark_set=mesh.landmark_set + SUFFIX, num_landmarks=first + len(centres),
            sigma_roi_fraction=np.concatenate([sigma, np.full(len(centres), IRIS_SIGMA_ROI_FRACTION)]),
            regions={**mesh.regions, "irises": tuple(centres.values())},
            semantic_points={**mesh.semantic_points, **centres})

    @property
    def metadata(self) -> LandmarkMetadata:
        return self._metadata

    def model_files(self) -> tuple[Path, ...]:
        return super().model_files() + (self.iris.onnx_path,)

    @classmethod
    def from_setup(cls, device: str = "cpu", landmarks: str = "face_mesh_468" + SUFFIX, realtime: bool = False,
                   progress: Callable[[str], None] = print) -> "EyeRefinedLandmarker":
        """``landmarks``: a face mesh name plus :data:`SUFFIX` (e.g. ``"face_mesh_468_iris"``)."""
        from fitter_backend.model_setup import ensure_mediapipe_models

        if not landmarks.endswith(SUFFIX):
            raise LandmarkModelError(f"{landmarks!r} does not name an iris-refined face mesh (…{SUFFIX})")
        face = Landmarker.from_setup(device, landmarks.removesuffix(SUFFIX), realtime, progress)
        iris = IrisModel.load(ensure_mediapipe_models(progress)["iris_landmark"], device)
        return cls(face.model, face.detector, iris, realtime)

    def _predict(self, frames: Sequence[Frame], rois: dict[int, SquareRoi | AffineRoi]) -> dict[int, tuple]:
        results = super()._predict(frames, rois)
        threshold = self.model.metadata.presence_threshold
        views = [v for v, (_, _, presence) in results.items() if presence >= threshold]
        refined = refine_eyes([frames[v] for v in views], [results[v][0] for v in views], self.iris,
                              self.mesh_lid_weight) if views else []
        for view, mu in zip(views, refined):
            sigma = results[view][1]
            iris_sigma = np.full(len(IRIS_CENTRES), IRIS_SIGMA_ROI_FRACTION * rois[view].size_px, sigma.dtype)
            results[view] = (mu, np.concatenate([sigma, iris_sigma]), results[view][2])
        for view in set(results) - set(views):  # a doubtful face: lids not refined, irises not read
            mu, sigma, presence = results[view]
            results[view] = (np.concatenate([mu, np.full((len(IRIS_CENTRES), 2), np.nan, mu.dtype)]),
                             np.concatenate([sigma, np.full(len(IRIS_CENTRES), np.inf, sigma.dtype)]), presence)
        return results

    def process(self, frames: Sequence[Frame]) -> list[FrameLandmarks]:
        """As the face mesh's, with an iris centre missing (NaN, sigma inf) behind a lid open less
        than OPEN_EYE_GAP (after the ROI tracking, which takes every point)."""
        out = []
        for result in super().process(frames):
            mu, sigma = result.mu_px.copy(), result.sigma_px.copy()
            for side, _, lids in seen_lids(mu):
                if lid_opening(lids) < OPEN_EYE_GAP:
                    centre = self.metadata.semantic_points[IRIS_CENTRES[side]]
                    mu[centre], sigma[centre] = np.nan, np.inf
            out.append(dataclasses.replace(result, mu_px=mu, sigma_px=sigma))
        return out

    def observations(self, readings: list[FrameLandmarks]) -> list[FrameLandmarks]:
        """The readings with each eye's lids stretched as measured for this face mesh (:func:`stretch_lids`)."""
        if not self.lid_stretch:
            return readings
        out = []
        for result in readings:
            mu = result.mu_px.copy()
            for _, rows, lids in seen_lids(mu):
                mu[rows] = stretch_lids(lids, *self.lid_stretch)
            out.append(dataclasses.replace(result, mu_px=mu))
        return out

