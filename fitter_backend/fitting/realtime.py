"""Real-time mode (paper, section 3.2): identity and cameras are fitted once on the first
frames and then frozen (refitted every ``refit_interval`` frames on a sample of the frames
seen so far); every frame then solves only its own expression and pose, warm-started
from the previous frame's solution (the eyeLook units from 0), with a light E_temporal pulling
towards its projection, and the solution is passed through a causal smoother
(:mod:`fitter_backend.fitting.causal_filter`) before it is keyed.
Frames are processed strictly in order, using nothing from the future.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.causal_filter import FrameSmoother
from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.initialise import initial_parameters
from fitter_backend.fitting.placement import with_placement_sigma
from fitter_backend.fitting.problem import (FitSettings, Layout, Observations, Parameters,
                                            validate_observations)
from fitter_backend.fitting.sequence import FitResult, Progress, fit_sequence, frame_flags
from fitter_backend.fitting.solver import Active, SolveLog, levenberg_marquardt
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints

CALIBRATION_SAMPLE = 24     # frames used to fit identity and cameras
# The sample is spread over the first this many frames: over 60 rather than 30 it sees more of
# the head's turns, at the same cost (rendered held-out clips: focal -14.6 -> -9.0 %, depth
# -21.1 -> -15.4 %, left blink recall 0.81 -> 0.88; docs/landmark_models.md, section 3b, stop 30).
CALIBRATION_FRAMES = 60
# LM iterations per frame. Warm-started from the last frame, the second, third and fourth steps
# lowered a frame's energy by a median 0.5 %, 0.03 % and 0.001 %: the fourth cost a fifth of the
# time for nothing one can see
# (docs/benchmark_fit.md, stop 33: open head 4.97 / 5.65 -> 4.37 / 4.63 ms a tracked frame,
# vertex error 0.3862 -> 0.3864 mm; rendered and real capture figures within 0.012).
FRAME_ITERATIONS = 3


def _sample(frames: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, frames - 1, min(frames, count)).round().astype(int))


def fit_realtime(model: HeadModel, landmarks: SurfacePoints, observations: Observations, cameras: Cameras,
                 settings: FitSettings = FitSettings(), calibration_frames: int = CALIBRATION_FRAMES,
                 refit_interval: int = 0, progress: Progress | None = None, frame_rate_hz: float = 30.0) -> FitResult:
    """Frame-by-frame fit; see the module docstring. ``refit_interval`` 0 never refits;
    ``frame_rate_hz`` sets the smoother's time scale."""
    validate_observations(observations, landmarks, model, cameras)
    if not (np.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise FitError(f"frame rate must be a positive number of frames per second, got {frame_rate_hz!r}")
    started = time.perf_counter()
    n = observations.num_frames
    layout = Layout.for_problem(model, cameras)
    params, _ = initial_parameters(model, landmarks, observations, cameras)
    # The calibration's fit_sequence widens its own sample's sigma; the frames use these.
    energy = ShotEnergy(model, landmarks, with_placement_sigma(observations, model, landmarks, params),
                        dataclasses.replace(settings, temporal_weight=settings.realtime_temporal_weight))
    log = SolveLog()

    def calibrate(seen: int) -> None:
        """Identity and cameras from a sample of the frames seen so far (no temporal term:
        the sample's frames are not neighbours)."""
        sample = _sample(seen, CALIBRATION_SAMPLE)
        sub = Observations(observations.mu_px[sample], observations.sigma_px[sample])
        initial = Parameters(params.identity, params.expression[sample], params.rotations[sample],
                             params.translation_m[sample], params.cameras)
        fitted = fit_sequence(model, landmarks, sub, params.cameras,
                              settings=dataclasses.replace(settings, temporal_weight=0.0), initial=initial)
        params.identity = fitted.params.identity
        params.cameras = fitted.params.cameras
        params.expression[sample] = fitted.params.expression
        params.rotations[sample] = fitted.params.rotations
        params.translation_m[sample] = fitted.params.translation_m

    calibrate(min(n, max(calibration_frames, 1)))
    calibrated_s = time.perf_counter() - started
    active = Active(np.arange(layout.frame_size), np.zeros(0, int), identity=False, expression=True)
    frame_layout = dataclasses.replace(layout, focal_cameras=np.zeros(0, int), extrinsic_cameras=np.zeros(0, int))
    # The eyeLook units start every frame at 0, not at the last frame's values: carried over, a
    # lid the gaze lowered stays theirs through a blink (their product with eyeBlink is penalised,
    # so a warm start never hands it over), and the blink is missed (wojtek 229-233: eyeBlink
    # 0.1-0.3 beside eyeLookDown 1.0; docs/landmark_models.md, section 3b, stop 28).
    gaze_units = np.unique(model.conjugate_expressions)
    previous_projection = previous_eyes = None
    # Several cameras see the head's depth and pose well enough frame by frame: there the
    # smoother only lags (4 synthetic cameras: vertex error 0.200 -> 0.224 mm, jitter of the
    # error 0.543 -> 0.612 mm/frame^2, depth lagging 3.5 mm), so it smooths one camera's shots.
    smoother = (FrameSmoother(settings.realtime_smoothing, frame_rate_hz, model.joint_parents, model.eyeball_joints)
                if settings.realtime_smoothing and cameras.count == 1 else None)
    solved = None   # the last frame's solution before smoothing: the next one starts from it
    frames_started = time.perf_counter()
    for i in range(n):
        if refit_interval and i and i % refit_interval == 0:
            calibrate(i)
        if i:  # warm start from the previous frame
            params.expression[i], params.rotations[i], params.translation_m[i] = solved
            params.expression[i, gaze_units] = 0.0
        frame = np.array([i])
        frame_energy = energy.restricted(frame, previous_projection, eye_anchor=previous_eyes)
        single = Parameters(params.identity, params.expression[frame], params.rotations[frame],
                            params.translation_m[frame], params.cameras)
        single = levenberg_marquardt(frame_energy, single, frame_layout, active, FRAME_ITERATIONS,
                                     settings.relative_tolerance, log)
        solved = (single.expression[0].copy(), single.rotations[0].copy(), single.translation_m[0].copy())
        keyed = solved
        if smoother and energy.present[i].any():
            keyed = smoother(*solved)
        elif smoother:      # a frame without a face (flagged): the first one after it starts afresh
            smoother.reset()
        params.expression[i], params.rotations[i], params.translation_m[i] = keyed
        previous_projection = frame_energy.projected_landmarks(single)[0]
        previous_eyes = single.rotations[0, model.eyeball_joints]
        if progress and i % 25 == 0:
            progress("real-time fit", i / n)
    frames_s = time.perf_counter() - frames_started
    evaluation = energy.evaluate(params, layout, derivatives=False)
    flags = frame_flags(evaluation.frame_rms, energy.present, settings)
    report = {
        "mode": "realtime",
        "frames": n,
        "cameras": params.cameras.count,
        "landmarks": len(landmarks),
        "energy_final": evaluation.energy,
        "energy_terms": evaluation.terms,
        "median_frame_rms": float(np.nanmedian(evaluation.frame_rms)) if np.isfinite(evaluation.frame_rms).any()
        else None,
        "focal_px": params.cameras.focal_px.tolist(),
        "timings": {"calibration_s": calibrated_s, "frames_s": frames_s, "per_frame_ms": 1000 * frames_s / n,
                    "total_s": time.perf_counter() - started},
        "warnings": sorted(set(log.warnings)),
    }
    return FitResult(params, evaluation.frame_rms, flags, report)


