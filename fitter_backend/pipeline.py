"""The end-to-end job: video -> face ROI -> landmarks -> fit -> result folder.

A result folder holds ``landmarks.npz`` (the landmark track), ``fit.npz`` + ``fit.json``
(per-frame parameters, see :mod:`fitter_backend.fitting.result_io`), ``report.json`` (what
happened: stages, timings, notes, flagged frames) and ``previews/`` (overlay PNGs and a
short overlay video). It is written to a hidden sibling folder and renamed into place at
the end, so a folder with ``report.json`` is always complete; a failed or cancelled job
leaves any earlier result untouched.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from fitter_backend.errors import FacecapError
from fitter_backend.export.result_folder import (OutputError, check_output, make_parents, publish, remove_created,
                                                 staging_folder)
from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.problem import FitSettings, Observations
from fitter_backend.fitting.realtime import fit_realtime
from fitter_backend.fitting.result_io import save_fit_result
from fitter_backend.fitting.sequence import FitResult, fit_sequence
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.loading import load_head_model
from fitter_backend.landmarks import DEFAULT_LANDMARKS, load_landmarker
from fitter_backend.landmarks.embedding import load_embedding
from fitter_backend.landmarks.pipeline import LandmarkTrack
from fitter_backend.preview import write_previews
from fitter_backend.video import open_multiview, open_video
from fitter_backend.video.frames import Frame
from fitter_backend.video.multiview import load_calibration

#: progress(stage, fraction of the whole job in [0, 1], message)
Progress = Callable[[str, float, str], None]

# Share of the job's time each stage takes (measured on a 512x512 clip), for the ETA.
STAGE_SHARES = {"landmarks": 0.14, "fit": 0.65, "previews": 0.21}


class JobCancelled(FacecapError):
    """The job was cancelled; nothing was written."""


@dataclasses.dataclass(frozen=True)
class FitJob:
    """What to fit. ``videos``: one per camera; ``calibration``: JSON (see docs/landmark_models.md),
    required for several videos and optional for one (a known focal)."""

    videos: tuple[Path, ...]
    out: Path
    head: str = "open"
    calibration: Path | None = None
    realtime: bool = False
    frame_range: tuple[int, int | None] | None = None
    stride: int = 1
    landmarks: str = DEFAULT_LANDMARKS
    device: str = "cpu"
    previews: bool = True
    pupil_distance_mm: float | None = None   # the actor's, when known: the scale one camera lacks


def _cameras(track: LandmarkTrack, calibration: Path | None) -> Cameras:
    if calibration is None:
        (width, height), = track.image_sizes_px
        return Cameras.monocular(int(width), int(height))
    calibrated = load_calibration(calibration)
    if len(calibrated) != track.mu_px.shape[1]:
        raise FacecapError(f"calibration {calibration} describes {len(calibrated)} cameras but "
                           f"{track.mu_px.shape[1]} videos were given")
    return Cameras.create([c.image_size_px for c in calibrated], [c.focal_px for c in calibrated],
                          [cv2.Rodrigues(np.ascontiguousarray(c.rotation))[0].ravel() for c in calibrated],
                          [c.translation_m for c in calibrated], names=[c.name for c in calibrated])


def _open_source(job: FitJob):
    """The job's frames: one video's FrameSource, or a multi-view source of synchronised frames."""
    if len(job.videos) == 1 and job.calibration is None:
        return open_video(job.videos[0], frame_range=job.frame_range, stride=job.stride)
    return open_multiview(list(job.videos), job.calibration, frame_range=job.frame_range, stride=job.stride)


def _views(source) -> Iterator[list[Frame]]:
    """Each time step's frames of every camera, from either kind of source."""
    for item in source:
        yield list(item.frames) if hasattr(item, "frames") else [item]


def _fps(source) -> float:
    return float(getattr(source, "fps", 25.0) or 25.0)


def _discard(partial: Path | None, created: list[Path]) -> None:
    """Remove what a failed write left: the partial folder and the parent folders it made."""
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    remove_created(created)


def fit_videos(job: FitJob, progress: Progress | None = None,
               cancelled: Callable[[], bool] = lambda: False) -> Path:
    """Run the job; returns the result folder. Raises FacecapError (or JobCancelled)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    done_share = 0.0

    def report(stage: str, fraction: float, message: str = "") -> None:
        if cancelled():
            raise JobCancelled(f"job cancelled during {stage}")
        if progress:
            progress(stage, done_share + STAGE_SHARES.get(stage, 0.0) * min(max(fraction, 0.0), 1.0), message)

    def finish(stage: str, t0: float) -> None:
        nonlocal done_share
        timings[f"{stage}_s"] = time.perf_counter() - t0
        done_share += STAGE_SHARES.get(stage, 0.0)

    if not job.videos:
        raise FacecapError("no video given: expected one video per camera")
    settings = dataclasses.replace(FitSettings(), pupil_distance_mm=job.pupil_distance_mm)  # bad values fail here
    if len(job.videos) > 1 and job.calibration is None:
        raise FacecapError(f"{len(job.videos)} videos need a calibration file (--camera calib.json) "
                           "that says where each camera is")
    out = check_output(job.out, inputs=[*job.videos, *([job.calibration] if job.calibration else [])])
    model: HeadModel = load_head_model(job.head)
    landmarker = load_landmarker(job.landmarks, device=job.device, realtime=job.realtime,
                                 progress=lambda m: report("landmarks", 0.0, m))
    points = load_embedding(model, landmarker)  # set-up's work: fails here, before the long stages
    source = _open_source(job)

    t0 = time.perf_counter()
    report("landmarks", 0.0, f"{len(source)} frames")
    track = landmarker.track(source, progress=lambda i, n: report("landmarks", i / n, f"frame {i}/{n}"))
    finish("landmarks", t0)

    t0 = time.perf_counter()
    observations = Observations.from_landmarks(track.mu_px, track.sigma_px, track.valid)
    cameras = _cameras(track, job.calibration)
    fit_progress = lambda stage, f: report("fit", f, stage)  # noqa: E731
    frame_rate_hz = _fps(source) / job.stride    # of the frames fitted
    if job.realtime:
        result: FitResult = fit_realtime(model, points, observations, cameras, settings, progress=fit_progress,
                                         frame_rate_hz=frame_rate_hz)
    else:
        result = fit_sequence(model, points, observations, cameras, settings, progress=fit_progress)
    finish("fit", t0)

    created = []
    partial = None
    try:
        created = make_parents(out)
        partial = staging_folder(out)
        track.save_npz(partial / "landmarks.npz")
        save_fit_result(result, model, partial)
        previews = []
        if job.previews:
            t0 = time.perf_counter()
            previews = write_previews(_views(_open_source(job)), frame_rate_hz, model, track,
                                      result, partial / "previews", progress=lambda f: report("previews", f))
            finish("previews", t0)
        timings["total_s"] = time.perf_counter() - started
        frames = len(track.frame_indices)
        summary = {
            "format": "facecap-job", "format_version": 1,
            "videos": [str(v) for v in job.videos], "head_model": model.name, "landmarks": job.landmarks,
            "mode": "realtime" if job.realtime else "offline", "frames": frames,
            "frames_fitted": int(np.sum([not f for f in result.flags])),
            "frames_flagged": {i: f for i, f in zip(track.frame_indices.tolist(), result.flags) if f},
            "notes": track.notes + result.report.get("warnings", []),
            "timings": timings,
            "frames_per_second": {k[:-2]: frames / v for k, v in timings.items()
                                  if v > 0 and k != "total_s"},
            "fit": result.report, "previews": [str(p.relative_to(partial)) for p in previews],
        }
        (partial / "report.json").write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
        if cancelled():
            raise JobCancelled("job cancelled before its results were moved into place")
        publish(partial, out)
    except OSError as error:  # disk full, permissions changed under the job, ...
        _discard(partial, created)
        named = f" ({error.filename})" if error.filename else ""
        raise OutputError(f"cannot write the results to {out}: {error.strerror or error}{named}; "
                          "earlier results are unchanged") from None
    except BaseException:
        _discard(partial, created)
        raise
    if progress:
        progress("done", 1.0, str(out))
    return out
