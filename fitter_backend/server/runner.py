"""One fit job, from a validated ``fit`` request to a finished result folder.

The job reports progress through a callback that also checks for cancellation: the callback
raises :class:`JobCancelled` and the job unwinds, leaving nothing behind. Results are
written into a temporary sibling of the requested folder and renamed into place at the end,
so the requested folder exists only once it is complete (and then holds result.json).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.export.result_folder import (check_output, make_parents, publish, remove_created,
                                                 staging_folder)
from fitter_backend.export.result_files import finish_result, finish_video_result
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.paths import opencv_path
from fitter_backend.landmarks import BOOTSTRAP_LANDMARKS, DEFAULT_LANDMARKS, DENSE_LANDMARKS, WHOLE_HEAD_LANDMARKS
from fitter_backend.video.synthetic import SyntheticLandmarks, synthetic_landmarks

#: The protocol's landmark choices -> the landmark stage's models.
LANDMARK_MODELS = {"whole_head": WHOLE_HEAD_LANDMARKS, "dense": DENSE_LANDMARKS, "bootstrap": BOOTSTRAP_LANDMARKS}
#: What a request without ``landmarks`` gets: the backend's default landmark model.
DEFAULT_LANDMARK_CHOICE = next(choice for choice, name in LANDMARK_MODELS.items() if name == DEFAULT_LANDMARKS)

# Share of the job's time each step takes (for the overall fraction and the ETA).
STEPS = {"loading head model": (0.0, 0.05), "preparing landmarks": (0.05, 0.1), "fitting": (0.1, 0.92),
         "video": (0.05, 0.92), "writing results": (0.92, 1.0)}

Report = Callable[[str, float], None]   # (stage, overall fraction in [0, 1])


class JobCancelled(Exception):
    """Raised from a progress report once the job was asked to stop."""


class HeadModelCache:
    """The last loaded head model by spec and file time: later jobs skip the loading."""

    def __init__(self) -> None:
        self._models: dict[tuple, HeadModel] = {}

    def load(self, spec: str) -> HeadModel:
        from fitter_backend.head_models.loading import load_head_model
        path = Path(spec).expanduser()
        key = (spec, path.stat().st_mtime_ns if spec != "open" and path.is_file() else None)
        if key not in self._models:
            self._models.clear()
            self._models[key] = load_head_model(spec)
        return self._models[key]


def step_reporter(report: Report, step: str) -> Callable[[str, float], None]:
    """A (stage, fraction within the step) callback mapped onto the job's overall fraction."""
    low, high = STEPS[step]

    def inner(stage: str, fraction: float) -> None:
        report(stage, low + (high - low) * min(max(fraction, 0.0), 1.0))
    return inner


def prepare_output(out: str, inputs: list[str] = ()) -> tuple[Path, Path, list[Path]]:
    """The requested result folder (checked: see :func:`result_folder.check_output`; it must be new
    or empty), a fresh temporary sibling to write into, and the parent folders made for it."""
    if not Path(out).is_absolute():
        raise FitError(f"result folder {out!r} must be an absolute path")
    target = check_output(out, inputs, replace_results=False)
    created = make_parents(target)
    try:
        return target, staging_folder(target), created
    except BaseException:
        remove_created(created)
        raise


def synthetic_fit(model: HeadModel, source: dict, mode: str, folder: Path, report: Report) -> SyntheticLandmarks:
    """Fit a synthetic shot's landmarks (:mod:`fitter_backend.video.synthetic`) into ``folder``."""
    from fitter_backend.fitting import realtime, sequence, synthetic
    from fitter_backend.fitting.result_io import save_fit_result
    step_reporter(report, "preparing landmarks")("generating a synthetic shot", 0.0)
    shot = synthetic_landmarks(model, source["frames"], source["seed"])
    fitting = step_reporter(report, "fitting")
    if mode == "realtime":
        result = realtime.fit_realtime(model, shot.points, shot.observations, shot.cameras, progress=fitting,
                                       frame_rate_hz=synthetic.FPS)
    else:
        result = sequence.fit_sequence(model, shot.points, shot.observations, shot.cameras, progress=fitting)
    save_fit_result(result, model, folder)
    return shot


def calibration_file(folder: Path, paths: list[Path], cameras: list[dict]) -> Path:
    """The landmark stage's calibration JSON from the add-on's Blender cameras.

    A Blender camera's matrix_world maps its local frame (the backend's camera convention)
    to Blender's world; camera 0 is the backend's world, so X_c = M_c^-1 M_0 X_0.
    """
    import cv2
    first = np.asarray(cameras[0]["matrix_world"], dtype=np.float64) if cameras[0]["matrix_world"] else None
    entries = []
    for number, (path, camera) in enumerate(zip(paths, cameras)):
        capture = cv2.VideoCapture(opencv_path(path))
        size = [int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))]
        capture.release()
        if min(size) <= 0:
            raise FitError(f"cannot read the frame size of {path}")
        if camera["matrix_world"] is None or first is None:
            raise FitError(f"view {number + 1} ({path.name}) needs its camera's position for multi-view fitting")
        matrix = np.asarray(camera["matrix_world"], dtype=np.float64)
        if np.abs(np.linalg.norm(matrix[:3, :3], axis=0) - 1).max() > 1e-3:
            raise FitError(f"the camera of view {number + 1} ({path.name}) is scaled; set its scale to 1")
        # Only a rotation and a translation can be inverted safely (a singular one raised LinAlgError).
        if (np.abs(matrix[:3, :3].T @ matrix[:3, :3] - np.eye(3)).max() > 1e-3 or np.linalg.det(matrix[:3, :3]) < 0
                or np.abs(matrix[3] - [0, 0, 0, 1]).max() > 1e-9):
            raise FitError(f"the camera of view {number + 1} ({path.name}) is not a rigid transform (sheared, "
                           "mirrored or projective); give it a plain rotation and position")
        relative = np.linalg.inv(matrix) @ first
        entries.append({"name": f"view{number + 1}", "image_size_px": size, "focal_px": camera["focal_px"],
                        "R": relative[:3, :3].tolist() if number else np.eye(3).tolist(),
                        "t_m": relative[:3, 3].tolist() if number else [0.0, 0.0, 0.0]})
    path = folder / "calibration.json"
    path.write_text(json.dumps({"format": "facecap-calibration", "format_version": 1, "cameras": entries}))
    return path


def video_fit(request: dict, folder: Path, report: Report, cancelled: Callable[[], bool]) -> None:
    """Run the landmark stage and the fit on the request's videos into ``folder``."""
    from fitter_backend import pipeline
    source = request["source"]
    paths = [Path(p) for p in source["paths"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FitError(f"video file not found: {missing[0]}")
    landmarks = request.get("landmarks", DEFAULT_LANDMARK_CHOICE)
    if landmarks not in LANDMARK_MODELS:
        raise FitError(f"the {landmarks} landmark model is not available in this backend version; "
                       f"choose one of: {', '.join(LANDMARK_MODELS)}")
    step = step_reporter(report, "video")
    with tempfile.TemporaryDirectory(prefix="facecap-calibration-") as scratch:
        calibration = (calibration_file(Path(scratch), paths, source["cameras"]) if "cameras" in source
                       else None)
        job = pipeline.FitJob(videos=tuple(paths), out=folder, head=request["head"], calibration=calibration,
                              realtime=request["mode"] == "realtime",
                              frame_range=(source["frame_start"], source["frame_end"] + 1),
                              landmarks=LANDMARK_MODELS[landmarks], device=request.get("device", "cpu"),
                              previews=False, pupil_distance_mm=request.get("pupil_distance_mm"))
        try:
            pipeline.fit_videos(job, progress=lambda stage, fraction, message: step(
                f"{stage}: {message}" if message and stage != "done" else stage, fraction), cancelled=cancelled)
        except pipeline.JobCancelled:
            raise JobCancelled(request["job"]) from None
        if calibration is not None:
            shutil.copy(calibration, folder / "calibration.json")


def run_fit_job(request: dict, report: Report, models: HeadModelCache,
                cancelled: Callable[[], bool] = lambda: False) -> Path:
    """Run a validated ``fit`` request; returns the finished result folder."""
    source = request["source"]
    target, partial, created = prepare_output(request["out"], source.get("paths", []))
    try:
        started = time.perf_counter()
        step_reporter(report, "loading head model")("loading head model", 0.0)
        model = models.load(request["head"])
        if source["kind"] == "video":
            video_fit(request, partial, report, cancelled)
        else:
            shot = synthetic_fit(model, source, request["mode"], partial, report)
        step_reporter(report, "writing results")("writing results", 0.0)
        info = {"job": request["job"], "mode": request["mode"], "source": source, "head": request["head"],
                "landmarks": request.get("landmarks", DEFAULT_LANDMARK_CHOICE), "device": request.get("device", "cpu"),
                "job_seconds": round(time.perf_counter() - started, 3)}
        if source["kind"] == "video":
            finish_video_result(partial, model, info)
        else:
            finish_result(partial, model, shot.frame_indices, shot.fps, info, shot.observations.mu_px,
                          shot.observations.sigma_px)
        publish(partial, target, replace_results=False)
        return target
    except OSError as error:  # disk full, permissions changed under the job, ...
        shutil.rmtree(partial, ignore_errors=True)
        remove_created(created)
        raise FitError(f"cannot write the results to {target}: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        remove_created(created)
        raise

