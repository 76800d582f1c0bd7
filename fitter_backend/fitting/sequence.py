"""Offline fit of a whole shot: one identity, per-frame expression and pose, cameras.

Coarse to fine (paper, section 3.2): PnP start with the mean head, then LM on the rigid
pose and focal, then with expression and joints, then with identity as well.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.initialise import initial_parameters
from fitter_backend.fitting.placement import with_placement_sigma
from fitter_backend.fitting.problem import (FitSettings, Layout, Observations, Parameters,
                                            validate_observations)
from fitter_backend.fitting.solver import Active, SolveLog, levenberg_marquardt
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints

Progress = Callable[[str, float], None]

# Per-frame flags.
NO_LANDMARKS = "no_landmarks"        # nothing observed in any camera ...
INTERPOLATED = "interpolated"        # ... so the parameters are carried by E_temporal and the priors
HIGH_RESIDUAL = "high_residual"      # normalised RMS above settings.high_residual_rms


@dataclasses.dataclass
class FitResult:
    """Everything a fit produces. ``frame_rms`` (N,) is the RMS of (x - mu) / sigma over a
    frame's observed landmarks (NaN without any); ``flags`` per frame; ``report`` is a
    JSON-ready summary (energies, iterations, timings, warnings)."""

    params: Parameters
    frame_rms: np.ndarray
    flags: list[list[str]]
    report: dict


def stage_actives(layout: Layout, cameras: Cameras) -> list[tuple[str, Active]]:
    """The three stages of the coarse-to-fine solve as sets of active unknowns."""
    rot = layout.rotation_slice
    rigid_frame = np.r_[rot.start:rot.start + 3, layout.translation_slice]
    all_frame = np.arange(layout.frame_size)
    # Focal trades off against head size and depth, so it moves only together with identity.
    extrinsic_cols = np.arange(layout.num_identity + len(layout.focal_cameras), layout.shared_size)
    return [
        ("rigid", Active(rigid_frame, extrinsic_cols, identity=False, expression=False)),
        ("expression", Active(all_frame, extrinsic_cols, identity=False, expression=True)),
        ("identity", Active(all_frame, np.arange(layout.shared_size), identity=True, expression=True)),
    ]


def frame_flags(frame_rms: np.ndarray, present: np.ndarray, settings: FitSettings) -> list[list[str]]:
    flags = []
    for i in range(len(frame_rms)):
        f = []
        if not present[i].any():
            f += [NO_LANDMARKS, INTERPOLATED]
        elif frame_rms[i] > settings.high_residual_rms:
            f.append(HIGH_RESIDUAL)
        flags.append(f)
    return flags


def identity_keyframes(present: np.ndarray, count: int) -> np.ndarray | None:
    """Frames (spread evenly over those with landmarks) on which identity and cameras are
    solved first, without E_temporal; every observed frame when the shot is short. None when
    ``count`` is 0 (solve the whole shot with E_temporal from the start).

    E_temporal penalises the projected landmarks' motion, true motion included; solved together
    with identity and focal it buys less motion with a closer camera and a shorter focal
    (rendered 60-frame clips, default landmarks: focal -27 to -40 %, -17 to -31 % without it)."""
    observed = np.flatnonzero(present.any(axis=(1, 2)))
    if count <= 0 or len(observed) == 0:
        return None
    if len(observed) <= 1.5 * count:
        return observed
    return observed[np.unique(np.linspace(0, len(observed) - 1, count).round().astype(int))]


def _fit_keyframes(energy: ShotEnergy, params: Parameters, layout: Layout, stages: list,
                   keyframes: np.ndarray, settings: FitSettings, log: SolveLog) -> Parameters:
    """All three stages on the keyframes alone (not neighbours: no temporal term); the
    identity and cameras found there are kept for the whole shot."""
    sub_energy = energy.restricted(keyframes, settings=dataclasses.replace(settings, temporal_weight=0.0))
    sub = Parameters(params.identity, params.expression[keyframes], params.rotations[keyframes],
                     params.translation_m[keyframes], params.cameras)
    for (_, active), iterations in zip(stages, settings.stage_iterations):
        if iterations:
            sub = levenberg_marquardt(sub_energy, sub, layout, active, iterations,
                                      settings.relative_tolerance, log)
    out = params.copy()
    out.identity, out.cameras = sub.identity.copy(), sub.cameras.copy()
    out.expression[keyframes], out.rotations[keyframes] = sub.expression, sub.rotations
    out.translation_m[keyframes] = sub.translation_m
    return out


def fit_sequence(model: HeadModel, landmarks: SurfacePoints, observations: Observations, cameras: Cameras,
                 settings: FitSettings = FitSettings(), initial: Parameters | None = None,
                 progress: Progress | None = None) -> FitResult:
    """Fit one shot. ``initial`` skips the PnP start (e.g. to continue an earlier fit)."""
    validate_observations(observations, landmarks, model, cameras)
    started = time.perf_counter()
    layout = Layout.for_problem(model, cameras)
    if initial is None:
        params, _ = initial_parameters(model, landmarks, observations, cameras)
    else:
        params = initial.copy()
    energy = ShotEnergy(model, landmarks, with_placement_sigma(observations, model, landmarks, params), settings)
    # The start's energy over the whole shot, comparable with the final one (the solve's own
    # first energy may cover only the identity keyframes).
    energy_initial = energy.evaluate(layout.projected(params), layout, derivatives=False).energy
    timings = {"initialise_s": time.perf_counter() - started}
    log = SolveLog()
    stages = stage_actives(layout, params.cameras)
    keyframes = identity_keyframes(energy.present, settings.identity_keyframes)
    # A short shot's "keyframes" are all its frames: that stage is its identity stage, and
    # without E_temporal (real time's calibration sample) it would be the whole solve.
    short = keyframes is not None and len(keyframes) == int(energy.present.any(axis=(1, 2)).sum())
    if short and settings.temporal_weight == 0:
        keyframes, short = None, False
    plan = ([("identity" if short else "identity keyframes", None, 0)] if keyframes is not None else [])
    plan += [(name, active, iterations) for (name, active), iterations in zip(stages, settings.stage_iterations)]
    if keyframes is not None:
        # Identity and cameras come from the keyframes; all frames (PnP-started) then follow with
        # them fixed. Solving them again with E_temporal on (a joint "polish", until stop 21)
        # bought less motion with a smaller, closer head and a shorter focal: on rendered clips
        # focal -10.9 -> -7.0 %, head size -12.7 -> -11.7 % without it, real figures unchanged.
        plan = [plan[0], ("frames", stages[1][1], settings.frame_iterations)]
    for step, (name, active, iterations) in enumerate(plan):
        if progress:
            progress(f"fitting: {name}", step / len(plan))
            log.on_step = (lambda k, step=step, name=name, iterations=iterations:
                           progress(f"fitting: {name}", (step + min(k / max(iterations, 1), 1.0)) / len(plan)))
        t0 = time.perf_counter()
        if active is None:
            params = _fit_keyframes(energy, params, layout, stages, keyframes, settings, log)
        elif iterations:
            params = levenberg_marquardt(energy, params, layout, active, iterations,
                                         settings.relative_tolerance, log)
        timings[f"{name}_s"] = time.perf_counter() - t0
    evaluation = energy.evaluate(params, layout, derivatives=False)
    if progress:
        progress("fitting: done", 1.0)
    timings["total_s"] = time.perf_counter() - started
    flags = frame_flags(evaluation.frame_rms, energy.present, settings)
    report = {
        "frames": observations.num_frames,
        "cameras": params.cameras.count,
        "landmarks": len(landmarks),
        "energy_initial": energy_initial,
        "energy_final": evaluation.energy,
        "energy_terms": evaluation.terms,
        "iterations_accepted": log.accepted,
        "iterations_rejected": log.rejected,
        "median_frame_rms": float(np.nanmedian(evaluation.frame_rms)) if np.isfinite(evaluation.frame_rms).any()
        else None,
        "frames_without_landmarks": int(sum(NO_LANDMARKS in f for f in flags)),
        "frames_high_residual": int(sum(HIGH_RESIDUAL in f for f in flags)),
        "focal_px": params.cameras.focal_px.tolist(),
        "timings": timings,
        "warnings": list(log.warnings),
    }
    return FitResult(params, evaluation.frame_rms, flags, report)
