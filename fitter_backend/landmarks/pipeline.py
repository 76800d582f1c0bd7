"""Frames -> ROI -> batched crops -> landmarks in image pixels, with per-frame flags.

One :class:`Landmarker` follows one face per view. Each step takes the frames of all views
at one instant and runs every model call as one batch over the views. A frame's ROI comes
from the previous frame's landmarks; the detector runs for the first frame, after a lost
face, and again on the same frame when the landmark model's presence falls below its
threshold. A ROI that came from the detector is refined once from the landmarks it gave.
Flags per frame and view: ``no_face`` (nothing detected: mu is NaN), ``low_confidence``
(presence below threshold: mu kept for inspection, not for fitting), ``redetected`` and
``multiple_faces`` (several faces seen; the largest, most central one is followed).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from fitter_backend.landmarks.names import BOOTSTRAP_LANDMARKS, SHIPPED_MODELS_DIR
from fitter_backend.models.contract import LandmarkMetadata
from fitter_backend.models.errors import LandmarkModelError, NoFaceError
from fitter_backend.landmarks.model import LandmarkModel
from fitter_backend.roi.detector import FaceDetector
from fitter_backend.roi.regions import AffineRoi, SquareRoi
from fitter_backend.roi.tracker import OfflineRoiTracker, RealtimeRoiTracker
from fitter_backend.video.frames import Frame, FrameSource
from fitter_backend.video.multiview import MultiViewSource

FLAGS = ("no_face", "low_confidence", "redetected", "multiple_faces")


@dataclasses.dataclass(frozen=True)
class FrameLandmarks:
    """Landmarks of one view at one frame, image pixels (project convention).

    mu_px (N, 2) (NaN when no_face); sigma_px (N,); presence in [0, 1] (0 when no_face).
    """

    index: int
    mu_px: np.ndarray
    sigma_px: np.ndarray
    presence: float
    roi: SquareRoi | AffineRoi | None
    flags: frozenset[str]
    faces_detected: int = 0

    @property
    def valid(self) -> bool:
        return not ({"no_face", "low_confidence"} & self.flags)


@dataclasses.dataclass
class LandmarkTrack:
    """Landmarks of a whole shot: T frames, V views, N landmarks.

    mu_px (T, V, N, 2), sigma_px (T, V, N), presence (T, V), flags name -> (T, V) bool,
    roi_centre_px (T, V, 2) and roi_size_px (T, V) (NaN without a ROI).
    """

    landmark_set: str
    frame_indices: np.ndarray
    timestamps_s: np.ndarray
    mu_px: np.ndarray
    sigma_px: np.ndarray
    presence: np.ndarray
    flags: dict[str, np.ndarray]
    roi_centre_px: np.ndarray
    roi_size_px: np.ndarray
    view_names: tuple[str, ...]
    image_sizes_px: np.ndarray
    semantic_points: dict[str, int]
    notes: list[str]

    @property
    def valid(self) -> np.ndarray:
        """(T, V) frames whose landmarks the fitter may use."""
        return ~(self.flags["no_face"] | self.flags["low_confidence"])

    def save_npz(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez_compressed(
            path, landmark_set=self.landmark_set, frame_indices=self.frame_indices, timestamps_s=self.timestamps_s,
            mu_px=self.mu_px, sigma_px=self.sigma_px, presence=self.presence, roi_centre_px=self.roi_centre_px,
            roi_size_px=self.roi_size_px, view_names=np.array(self.view_names), image_sizes_px=self.image_sizes_px,
            semantic_names=np.array(list(self.semantic_points)),
            semantic_indices=np.array(list(self.semantic_points.values()), dtype=np.int64),
            notes=np.array(self.notes, dtype=str), **{f"flag_{k}": v for k, v in self.flags.items()})
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> "LandmarkTrack":
        with np.load(path, allow_pickle=False) as data:
            return cls(str(data["landmark_set"]), data["frame_indices"], data["timestamps_s"], data["mu_px"],
                       data["sigma_px"], data["presence"], {k: data[f"flag_{k}"] for k in FLAGS},
                       data["roi_centre_px"], data["roi_size_px"], tuple(str(v) for v in data["view_names"]),
                       data["image_sizes_px"],
                       dict(zip((str(n) for n in data["semantic_names"]), (int(i) for i in data["semantic_indices"]))),
                       [str(n) for n in data["notes"]])


def prefetch(items: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``items`` in a background thread, at most ``depth`` ahead (decoding overlaps
    inference; memory stays bounded). Errors surface in the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            buffer.put(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(0.01)


class FrameLandmarker:
    """What the landmark stage offers whatever runs inside: ``process`` (one instant, all
    views), ``reset``, and ``track`` (a whole shot) built on them."""

    landmark_set: str                 # the name the track records
    semantic_points: dict[str, int]   # named points (iBUG-68 ...) -> landmark index

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, frames: Sequence[Frame]) -> list[FrameLandmarks]:
        raise NotImplementedError

    def observations(self, readings: list[FrameLandmarks]) -> list[FrameLandmarks]:
        """What the fitter is given for one instant's :meth:`process` readings: the readings, unless
        a model corrects a measured bias of them. Set-up places each point from the readings."""
        return readings

    def track(self, source: FrameSource | MultiViewSource,
              progress: Callable[[int, int], None] | None = None) -> LandmarkTrack:
        """Landmarks for every frame of a source (one view or synchronised views), as the fitter
        takes them (:meth:`observations`).
        Raises NoFaceError when no frame of any view has a usable face."""
        self.reset()
        views = source.views if isinstance(source, MultiViewSource) else [source]
        names = tuple(c.name for c in source.cameras) if isinstance(source, MultiViewSource) else (source.name,)
        steps = (m.frames for m in source) if isinstance(source, MultiViewSource) else ((f,) for f in source)
        total = len(source)
        rows: list[list[FrameLandmarks]] = []
        timestamps = []
        notes = [note for view in views for note in view.notes]
        multiple_noted = set()
        for step, frames in enumerate(prefetch(steps)):
            row = self.observations(self.process(frames))
            for view, result in enumerate(row):
                if "multiple_faces" in result.flags and view not in multiple_noted:
                    multiple_noted.add(view)
                    notes.append(f"{result.faces_detected} faces detected in frame {result.index} of {names[view]}; "
                                 f"following the largest, most central one")
            rows.append(row)
            timestamps.append(frames[0].timestamp_s)
            if progress:
                progress(step + 1, total)
        track = self._stack(rows, np.array(timestamps), names, np.array([v.size for v in views]), notes)
        if not track.valid.any():
            raise NoFaceError(f"no face found in any of the {len(rows)} frames of {', '.join(names)}")
        for view, name in enumerate(names):
            for flag, what in (("no_face", "without a face"), ("low_confidence", "with low landmark confidence")):
                count = int(track.flags[flag][:, view].sum())
                if count:
                    notes.append(f"{count} of {len(rows)} frames of {name} {what} (flagged, not fitted)")
        return track

    def _stack(self, rows: list[list[FrameLandmarks]], timestamps: np.ndarray, names: tuple[str, ...],
               sizes: np.ndarray, notes: list[str]) -> LandmarkTrack:
        def roi_centre(result: FrameLandmarks) -> np.ndarray:
            if result.roi is None:
                return np.full(2, np.nan)
            return result.roi.transform(1).to_image(np.array([0.5, 0.5]))

        return LandmarkTrack(
            landmark_set=self.landmark_set,
            frame_indices=np.array([row[0].index for row in rows], dtype=np.int64),
            timestamps_s=timestamps,
            mu_px=np.array([[r.mu_px for r in row] for row in rows], dtype=np.float32),
            sigma_px=np.array([[r.sigma_px for r in row] for row in rows], dtype=np.float32),
            presence=np.array([[r.presence for r in row] for row in rows], dtype=np.float32),
            flags={flag: np.array([[flag in r.flags for r in row] for row in rows], dtype=bool) for flag in FLAGS},
            roi_centre_px=np.array([[roi_centre(r) for r in row] for row in rows], dtype=np.float32),
            roi_size_px=np.array([[np.nan if r.roi is None else r.roi.size_px for r in row] for row in rows],
                                 dtype=np.float32),
            view_names=names, image_sizes_px=sizes, semantic_points=self.semantic_points,
            notes=notes)


class Landmarker(FrameLandmarker):
    """Landmarks for frames: ROI tracking per view, batched model calls across views.

    realtime: affine ROIs from eye and mouth anchors instead of offline squares.
    refine_detections: after a detection, predict again in the ROI from those landmarks.
    """

    def __init__(self, model: LandmarkModel, detector: FaceDetector, realtime: bool = False,
                 refine_detections: bool = True):
        self.model, self.detector = model, detector
        self.realtime, self.refine_detections = realtime, refine_detections
        self.trackers: list[OfflineRoiTracker] = []

    @classmethod
    def from_setup(cls, device: str = "cpu", landmarks: str = BOOTSTRAP_LANDMARKS, realtime: bool = False,
                   progress: Callable[[str], None] = print) -> "Landmarker":
        """The MediaPipe models built by set-up (built now if missing) or a dense model shipped
        in ``onnx_models/models/``. landmarks: "face_mesh_468" (always built), "face_mesh_478"
        (built only where the shared fixture bundle exists, i.e. on development machines) or
        a shipped model's name (e.g. "dense_320_mobilenet_v2")."""
        from fitter_backend.model_setup import ensure_mediapipe_models  # set-up only when asked for
        models = ensure_mediapipe_models(progress)
        shipped = SHIPPED_MODELS_DIR / f"{landmarks}.onnx"
        if shipped.is_file():
            path = shipped
        elif landmarks in models:
            path = models[landmarks]
        else:
            built = sorted(name for name in models if name not in ("face_detector", "iris_landmark"))
            shipped_names = sorted(p.stem for p in SHIPPED_MODELS_DIR.glob("*.onnx"))
            raise LandmarkModelError(f"no landmark model {landmarks!r}; set-up built {built}, "
                                     f"onnx_models/models/ ships {shipped_names}")
        return cls(LandmarkModel.load(path, device=device),
                   FaceDetector.load(models["face_detector"], device=device), realtime=realtime)

    @property
    def metadata(self) -> LandmarkMetadata:
        """The contract of the points this landmarker reports (its network's, unless it adds some)."""
        return self.model.metadata

    @property
    def landmark_set(self) -> str:
        return self.metadata.landmark_set

    @property
    def num_landmarks(self) -> int:
        return self.metadata.num_landmarks

    @property
    def semantic_points(self) -> dict[str, int]:
        return dict(self.metadata.semantic_points)

    def model_files(self) -> tuple[Path, ...]:
        """The network files whose output decides where the points land (a new conversion
        of one places them anew on a head)."""
        return (self.model.onnx_path,)

    def reset(self) -> None:
        """Forget all tracked faces (the next frames start from detection)."""
        self.trackers = []

    def new_tracker(self) -> OfflineRoiTracker:
        """A tracker for one more face in one view, with the ROI kind this model needs."""
        meta = self.model.metadata
        if self.realtime or meta.roi.crop == "affine":
            return RealtimeRoiTracker(self.detector, meta.roi, meta.anchors)
        return OfflineRoiTracker(self.detector, meta.roi)

    def _predict(self, frames: Sequence[Frame], rois: dict[int, SquareRoi | AffineRoi]) -> dict[int, tuple]:
        """One batched model call: view -> (mu_px image, sigma_px image, presence)."""
        if not rois:
            return {}
        size = self.model.input_size
        views = list(rois)
        crops, transforms = [], []
        for view in views:
            crop, transform = rois[view].crop(frames[view].image, size)
            crops.append(crop.astype(np.float32) * np.float32(1.0 / frames[view].white_level))
            transforms.append(transform)
        mu, sigma, presence = self.model.predict(np.stack(crops))
        return {view: (transform.to_image(mu[b]).astype(np.float32), sigma[b] / np.float32(transform.scale),
                       float(presence[b])) for b, (view, transform) in enumerate(zip(views, transforms))}

    def process(self, frames: Sequence[Frame]) -> list[FrameLandmarks]:
        """Landmarks for the frames of all views at one instant (one frame per view, in the
        same view order on every call)."""
        if not self.trackers:
            self.trackers = [self.new_tracker() for _ in frames]
        if len(frames) != len(self.trackers):
            raise LandmarkModelError(f"{len(frames)} views given, the Landmarker follows {len(self.trackers)}")
        threshold = self.model.metadata.presence_threshold
        flags: list[set[str]] = [set() for _ in frames]
        faces = [0] * len(frames)
        rois: dict[int, SquareRoi | AffineRoi] = {}
        detected: set[int] = set()

        def detect(view: int) -> None:
            detection = self.trackers[view].detect(frames[view].image, frames[view].white_level)
            faces[view] = detection.faces
            detected.add(view)
            if detection.faces > 1:
                flags[view].add("multiple_faces")
            if detection.roi is None:
                rois.pop(view, None)
            else:
                rois[view] = detection.roi

        for view, tracker in enumerate(self.trackers):
            roi = tracker.predicted_roi()
            if roi is None:
                detect(view)
            else:
                rois[view] = roi
        results = self._predict(frames, rois)
        lost = [v for v in results if v not in detected and results[v][2] < threshold]
        for view in lost:
            flags[view].add("redetected")
            detect(view)
            results.pop(view)
        results.update(self._predict(frames, {v: rois[v] for v in lost if v in rois}))
        if self.refine_detections:
            refined = {v: self.trackers[v].roi_from_landmarks(results[v][0]) for v in detected
                       if v in results and results[v][2] >= threshold}
            for view, result in self._predict(frames, refined).items():
                if result[2] >= threshold:
                    results[view], rois[view] = result, refined[view]

        out = []
        count = self.metadata.num_landmarks
        for view, frame in enumerate(frames):
            if view not in results:
                flags[view].add("no_face")
                self.trackers[view].update(None)
                out.append(FrameLandmarks(frame.index, np.full((count, 2), np.nan, np.float32),
                                          np.full(count, np.inf, np.float32), 0.0, None, frozenset(flags[view]),
                                          faces[view]))
                continue
            mu, sigma, presence = results[view]
            if presence < threshold:
                flags[view].add("low_confidence")
            self.trackers[view].update(mu if presence >= threshold else None)
            out.append(FrameLandmarks(frame.index, mu, sigma, presence, rois[view], frozenset(flags[view]),
                                      faces[view]))
        return out
