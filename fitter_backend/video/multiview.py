"""Synchronised views: several videos plus a calibration file (format in docs/landmark_models.md).

The calibration is JSON (parsed, never evaluated). Cameras follow the fitter's convention
(:mod:`fitter_backend.fitting.cameras`): camera space +X right, +Y up, looking down -Z;
``X_cam = R @ X_world + t_m``; the first camera is the world frame (R = I, t = 0).
Video paths are relative to the calibration file and may not leave its folder.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fitter_backend.video.errors import CalibrationError, VideoError
from fitter_backend.video.frames import Frame, FrameSource, open_video

FORMAT = "facecap-calibration"
FORMAT_VERSION = 1
CAMERA_KEYS = {"name", "video", "image_size_px", "focal_px", "R", "t_m"}
#: focal_px / the longer image side: about 180 degrees (0.05) to 0.6 degrees (100) of view.
FOCAL_RANGE = (0.05, 100.0)


@dataclasses.dataclass(frozen=True)
class CameraCalibration:
    """One camera. focal_px None means unknown (the fitter optimises it)."""

    name: str
    image_size_px: tuple[int, int]      # (width, height)
    focal_px: float | None
    rotation: np.ndarray                 # (3, 3) world -> camera
    translation_m: np.ndarray            # (3,)
    video: Path | None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matrix(value, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A nested JSON list of plain finite numbers with the given shape."""
    rows = value if len(shape) == 2 else [value]
    width = shape[-1]
    if not (isinstance(rows, list) and len(rows) == (shape[0] if len(shape) == 2 else 1) and all(
            isinstance(row, list) and len(row) == width and all(_is_number(v) for v in row) for row in rows)):
        raise CalibrationError(f"{where}: expected finite numbers of shape {shape}, got {str(value)[:80]}")
    return np.array(value, dtype=np.float64)


def load_calibration(calibration_json: str | Path) -> list[CameraCalibration]:
    """Parse and validate a calibration file; returns the cameras, world camera first."""
    path = Path(calibration_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationError(f"calibration file {path} is unreadable: {error}") from None
    except json.JSONDecodeError as error:
        raise CalibrationError(f"calibration file {path} is not valid JSON: {error}") from None
    except RecursionError:
        raise CalibrationError(f"calibration file {path} is nested too deeply to be a calibration") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise CalibrationError(f"calibration file {path}: expected an object with format {FORMAT!r} "
                               f"and format_version {FORMAT_VERSION}")
    cameras_data = data.get("cameras")
    if not isinstance(cameras_data, list) or not cameras_data:
        raise CalibrationError(f"calibration file {path}: 'cameras' must be a non-empty list")
    folder = path.resolve().parent
    cameras, names = [], set()
    for number, entry in enumerate(cameras_data):
        where = f"calibration file {path}: cameras[{number}]"
        if not isinstance(entry, dict):
            raise CalibrationError(f"{where}: expected an object")
        unknown = set(entry) - CAMERA_KEYS
        if unknown:
            raise CalibrationError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(CAMERA_KEYS)})")
        missing = {"name", "image_size_px", "R", "t_m"} - set(entry)
        if missing:
            raise CalibrationError(f"{where}: missing {sorted(missing)} (focal_px and video are optional)")
        name = entry["name"]
        if not isinstance(name, str) or not name or name in names:
            raise CalibrationError(f"{where}: name must be a unique non-empty string, got {name!r}")
        names.add(name)
        size = entry["image_size_px"]
        if not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise CalibrationError(f"{where}: image_size_px must be [width, height] in whole pixels, got {size!r}")
        focal = entry.get("focal_px")
        low, high = (k * max(size) for k in FOCAL_RANGE)
        if focal is not None and not (_is_number(focal) and low <= focal <= high):
            raise CalibrationError(f"{where}: focal_px must be between {low:g} and {high:g} px for a "
                                   f"{size[0]}x{size[1]} image, or null (unknown); got {focal!r}")
        rotation = _matrix(entry["R"], (3, 3), f"{where}.R")
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-4 or np.linalg.det(rotation) < 0:
            raise CalibrationError(f"{where}.R is not a rotation matrix (orthonormal, determinant +1)")
        translation = _matrix(entry["t_m"], (3,), f"{where}.t_m")
        video = None
        if entry.get("video") is not None:
            video = _video_path(entry["video"], folder, where)
        cameras.append(CameraCalibration(name, (size[0], size[1]), None if focal is None else float(focal),
                                         rotation, translation, video))
    world = cameras[0]
    if np.abs(world.rotation - np.eye(3)).max() > 1e-6 or np.abs(world.translation_m).max() > 1e-9:
        raise CalibrationError(f"calibration file {path}: the first camera ({world.name}) is the world frame "
                               f"and must have R = identity and t_m = [0, 0, 0]")
    return cameras


def _video_path(value, folder: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise CalibrationError(f"{where}.video must be a relative path string, got {value!r}")
    relative = Path(value)
    resolved = (folder / relative).resolve()
    if relative.is_absolute() or not resolved.is_relative_to(folder):
        raise CalibrationError(f"{where}.video {value!r} must stay inside the calibration file's folder {folder}")
    return resolved


@dataclasses.dataclass(frozen=True)
class MultiFrame:
    """The frames of all views at one source frame number, in camera order."""

    index: int
    frames: tuple[Frame, ...]


class MultiViewSource:
    """Synchronised views: iterate :class:`MultiFrame`; ``cameras`` and ``views`` in the same order."""

    def __init__(self, cameras: list[CameraCalibration], views: list[FrameSource]):
        self.cameras, self.views = cameras, views

    def __len__(self) -> int:
        return len(self.views[0])

    @property
    def fps(self) -> float:
        return self.views[0].fps

    def __iter__(self) -> Iterator[MultiFrame]:
        for frames in zip(*self.views, strict=True):
            yield MultiFrame(frames[0].index, tuple(frames))


def open_multiview(paths: list[str | Path] | None, calibration_json: str | Path,
                   frame_range: tuple[int, int | None] | None = None, stride: int = 1) -> MultiViewSource:
    """Open synchronised views. ``paths`` gives one video (or image sequence) per camera, in
    the calibration's camera order; None takes each camera's ``video`` entry instead.
    Frame counts and image sizes must agree with each other and with the calibration."""
    cameras = load_calibration(calibration_json)
    if paths is None:
        missing = [c.name for c in cameras if c.video is None]
        if missing:
            raise CalibrationError(f"calibration file {calibration_json}: cameras {missing} name no video, "
                                   f"and no video paths were given")
        paths = [c.video for c in cameras]
    if len(paths) != len(cameras):
        raise CalibrationError(f"{len(paths)} videos given for the {len(cameras)} cameras in {calibration_json}")
    views = []
    for camera, path in zip(cameras, paths):
        view = open_video(path)  # full length first: counts must agree before any range is cut
        if tuple(view.size) != camera.image_size_px:
            raise CalibrationError(f"{view.name} is {view.size[0]}x{view.size[1]} pixels but camera {camera.name} "
                                   f"in {calibration_json} is calibrated for "
                                   f"{camera.image_size_px[0]}x{camera.image_size_px[1]}")
        views.append(view)
    counts = {len(v) for v in views}
    if len(counts) > 1:
        listing = ", ".join(f"{c.name} {len(v)} ({v.name})" for c, v in zip(cameras, views))
        raise VideoError(f"views have different frame counts: {listing}; synchronised views must match")
    if frame_range is not None or stride != 1:
        views = [open_video(path, frame_range, stride) for path in paths]
    return MultiViewSource(cameras, views)
