"""One fit job, from a validated ``fit`` request to a finished result folder.

The job reports progress through a callback that also checks for cancellation: the callback
raises :class:`JobCancelled` and the job unwinds, leaving nothing behind. Results are
written into a temporary sibling of the requested folder and renamed into place at the end,
so the requested folder exists only once it is complete.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.export.result_files import write_result
from fitter_backend.head_models.head_model import HeadModel

SYNTHETIC_LANDMARKS = 300      # dense stand-in landmarks of a synthetic shot
SYNTHETIC_FPS = 25.0

# Share of the job's time each step takes (for the overall fraction and the ETA).
STEPS = {"loading head model": (0.0, 0.05), "preparing landmarks": (0.05, 0.1),
         "fitting": (0.1, 0.92), "writing results": (0.92, 1.0)}

Report = Callable[[str, float], None]   # (stage, overall fraction in [0, 1])


class JobCancelled(Exception):
    """Raised from a progress report once the job was asked to stop."""


class HeadModelCache:
    """Loaded head models by spec and file time: later jobs skip the loading."""

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


def prepare_output(out: str) -> tuple[Path, Path]:
    """The requested result folder and a fresh temporary sibling to write into."""
    target = Path(out)
    if not target.is_absolute():
        raise FitError(f"result folder {out!r} must be an absolute path")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FitError(f"result folder {target} already exists and is not empty; choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return target, partial


def video_fitting_available() -> bool:
    spec = importlib.util.find_spec("fitter_backend.pipeline")
    if spec is None:
        return False
    from fitter_backend import pipeline
    return hasattr(pipeline, "fit_videos")


def synthetic_job(model: HeadModel, source: dict, mode: str, report: Report):
    """Fit a generated talking-head shot; returns (result, frame indices, fps, mu, sigma)."""
    from fitter_backend.fitting import realtime, sequence, synthetic
    step_reporter(report, "preparing landmarks")("generating a synthetic shot", 0.0)
    landmarks = synthetic.area_sampled_points(model, SYNTHETIC_LANDMARKS, seed=source["seed"])
    shot = synthetic.make_shot(model, landmarks, num_frames=source["frames"], seed=source["seed"])
    fit = realtime.fit_realtime if mode == "realtime" else sequence.fit_sequence
    result = fit(model, landmarks, shot.observations, shot.cameras, progress=step_reporter(report, "fitting"))
    frames = np.arange(source["frames"])
    return result, frames, SYNTHETIC_FPS, shot.observations.mu_px, shot.observations.sigma_px


def video_job(source: dict) -> None:
    missing = [p for p in source["paths"] if not Path(p).is_file()]
    if missing:
        raise FitError(f"video file not found: {missing[0]}")
    if not video_fitting_available():
        raise FitError("video fitting is not available in this backend version "
                       "(use a synthetic source to try the rig)")
    raise FitError("video fitting is not wired to this server yet")


def run_fit_job(request: dict, report: Report, models: HeadModelCache) -> Path:
    """Run a validated ``fit`` request; returns the finished result folder."""
    source = request["source"]
    target, partial = prepare_output(request["out"])
    try:
        started = time.perf_counter()
        step_reporter(report, "loading head model")("loading head model", 0.0)
        model = models.load(request["head"])
        if source["kind"] == "video":
            video_job(source)
        result, frames, fps, mu, sigma = synthetic_job(model, source, request["mode"], report)
        step_reporter(report, "writing results")("writing results", 0.0)
        info = {"job": request["job"], "mode": request["mode"], "source": source, "head": request["head"],
                "landmarks": request.get("landmarks", "dense"), "device": request.get("device", "cpu"),
                "job_seconds": round(time.perf_counter() - started, 3)}
        write_result(partial, model, result, frames, fps, info, mu, sigma)
        if target.exists():  # an empty folder made by the caller: a rename cannot replace it
            target.rmdir()
        partial.replace(target)
        return target
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

