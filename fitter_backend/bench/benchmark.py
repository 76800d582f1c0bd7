"""Runs the benchmark: fits every problem, measures accuracy and speed, runs the baselines.

Times are wall (perf_counter) and CPU (process_time) seconds of this process; with
OPENBLAS_NUM_THREADS=1 and one torch thread every solver runs on one core, so CPU time is
the fair figure on a machine shared with other work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import platform
import sys
from typing import Callable

import numpy as np
import scipy

from fitter_backend.bench import metrics
from fitter_backend.bench.baseline_fitter import baseline_kernels
from fitter_backend.bench.baselines import Clock, SolverRun, solve_scipy_trf, solve_torch_lbfgs
from fitter_backend.bench.problems import PROBLEMS, Problem, first_frames, make_problems
from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.initialise import initial_parameters
from fitter_backend.fitting.problem import FitSettings, Layout, Parameters
from fitter_backend.fitting.sequence import fit_sequence
from fitter_backend.fitting.synthetic import FPS, SyntheticShot

Log = Callable[[str], None]
#: A baseline has matched our energy when within this relative margin of it.
ENERGY_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    frames: int = 300
    landmarks: int = 700
    baseline_frames: int = 30
    baseline_cap_s: float = 300.0
    skip_baselines: bool = False
    problems: tuple[str, ...] = tuple(PROBLEMS)
    seed: int = 0
    flame_identity: int = 100
    flame_expression: int = 50
    cameras: int = 4
    against_baseline: bool = False
    baseline_repeats: int = 2


#: --quick: a smoke run in seconds.
QUICK = dict(frames=8, landmarks=80, baseline_frames=4, baseline_cap_s=20.0, flame_identity=20,
             flame_expression=10)


def accuracy(shot: SyntheticShot, params: Parameters) -> dict:
    """Vertex, identity and focal errors and jitter of fitted parameters against the truth."""
    model, truth = shot.model, shot.truth
    fitted_faces = metrics.face_vertices(model, params)
    true_faces = metrics.face_vertices(model, truth)
    median, p90 = metrics.median_and_p90(metrics.vertex_errors_mm(fitted_faces, true_faces))
    focal = metrics.focal_error_percent(params.cameras.focal_px, truth.cameras.focal_px)
    return {
        "vertex_median_mm": median,
        "vertex_p90_mm": p90,
        "unaligned_median_mm": float(np.median(metrics.vertex_errors_mm(fitted_faces, true_faces, align=False))),
        "identity_median_mm": metrics.identity_error_mm(model, params.identity, truth.identity),
        "focal_error_pct": float(np.max(focal)),
        "jitter_mm": metrics.jitter_mm(fitted_faces),
        "jitter_error_mm": metrics.jitter_error_mm(fitted_faces, true_faces),
    }


def _timing(clock: Clock, frames: int) -> dict:
    wall, cpu = clock.wall(), clock.cpu()
    return {"wall_s": wall, "cpu_s": cpu, "ms_per_frame_wall": 1000 * wall / frames,
            "ms_per_frame_cpu": 1000 * cpu / frames}


def run_joint_fit(shot: SyntheticShot, settings: FitSettings) -> dict:
    """fit_sequence from scratch (PnP start included in the time)."""
    clock = Clock()
    result = fit_sequence(shot.model, shot.landmarks, shot.observations, shot.cameras, settings)
    out = _timing(clock, shot.observations.num_frames)
    out.update(accuracy(shot, result.params))
    out["energy"] = result.report["energy_final"]
    out["iterations"] = result.report["iterations_accepted"]
    return out


def realtime_fitter():
    """fit_realtime, or None where this build has no real-time mode."""
    try:
        from fitter_backend.fitting.realtime import fit_realtime
    except ImportError:
        return None
    return fit_realtime


def run_realtime(shot: SyntheticShot, settings: FitSettings) -> dict | None:
    """Real-time mode; besides the total, the per-frame cost of tracking is timed from the
    first progress report (after frame 0) to the end, so one-off calibration is excluded."""
    fit_realtime = realtime_fitter()
    if fit_realtime is None:
        return None
    n = shot.observations.num_frames
    marks: list[tuple[float, float]] = []

    def progress(_stage: str, _fraction: float) -> None:
        if not marks:
            marks.append((clock.wall(), clock.cpu()))

    clock = Clock()
    result = fit_realtime(shot.model, shot.landmarks, shot.observations, shot.cameras, settings, progress=progress,
                          frame_rate_hz=FPS)
    out = _timing(clock, n)
    if marks and n > 1:
        out["tracking_ms_per_frame_wall"] = 1000 * (out["wall_s"] - marks[0][0]) / (n - 1)
        out["tracking_ms_per_frame_cpu"] = 1000 * (out["cpu_s"] - marks[0][1]) / (n - 1)
    out.update(accuracy(shot, result.params))
    out["energy"] = result.report["energy_final"]
    return out


def run_problem(problem: Problem, log: Log) -> dict:
    """Joint fit (and without E_temporal on monocular shots) and real-time mode of one problem."""
    shot = problem.shot
    model = shot.model
    figures = {
        "key": problem.key,
        "title": problem.title,
        "frames": shot.observations.num_frames,
        "landmarks": len(shot.landmarks),
        "cameras": shot.cameras.count,
        "extrinsics_known": bool(shot.cameras.extrinsics_known.all()),
        "model": {"name": model.name, "vertices": model.num_vertices, "identity": model.num_identity,
                  "expression": model.num_expression, "joints": model.num_joints,
                  "face_vertices": int(model.regions["face"].sum())},
        "truth_jitter_mm": metrics.jitter_mm(metrics.face_vertices(model, shot.truth)),
    }
    settings = FitSettings()
    # A converged fit should reach an energy at or below the truth's (it is the MAP estimate).
    truth_energy = ShotEnergy(model, shot.landmarks, shot.observations, settings).evaluate(
        shot.truth, Layout.for_problem(model, shot.cameras), False)
    figures["truth_energy"] = truth_energy.energy
    log(f"{problem.title}: joint fit of {figures['frames']} frames")
    figures["joint"] = run_joint_fit(shot, settings)
    figures["no_temporal"] = None
    if problem.monocular:
        log(f"{problem.title}: joint fit without E_temporal")
        figures["no_temporal"] = run_joint_fit(shot, dataclasses.replace(settings, temporal_weight=0.0))
    log(f"{problem.title}: real-time mode")
    figures["realtime"] = run_realtime(shot, settings)
    return figures


def _solver_figures(shot: SyntheticShot, params: Parameters, energy: float, wall_s: float, cpu_s: float) -> dict:
    out = {"energy": energy, "wall_s": wall_s, "cpu_s": cpu_s}
    out.update(accuracy(shot, params))
    return out


def run_baselines(problem: Problem, config: BenchConfig, log: Log) -> dict:
    """Ours and both baselines on the first ``baseline_frames`` frames, from the same start."""
    shot = first_frames(problem.shot, config.baseline_frames)
    model, settings = shot.model, FitSettings()
    layout = Layout.for_problem(model, shot.cameras)
    energy = ShotEnergy(model, shot.landmarks, shot.observations, settings)
    start, _ = initial_parameters(model, shot.landmarks, shot.observations, shot.cameras)
    out = {"problem": problem.key, "title": problem.title, "frames": config.baseline_frames,
           "cap_s": config.baseline_cap_s, "energy_tolerance": ENERGY_TOLERANCE,
           "start_energy": energy.evaluate(start, layout, False).energy,
           "solvers": {}}

    log(f"baselines on {problem.title}, {config.baseline_frames} frames: ours")
    clock = Clock()
    ours = fit_sequence(model, shot.landmarks, shot.observations, shot.cameras, settings, initial=start)
    wall, cpu = clock.wall(), clock.cpu()
    target = ours.report["energy_final"]
    out["solvers"]["ours"] = _solver_figures(shot, ours.params, target, wall, cpu)

    runs: list[SolverRun] = []
    log(f"baselines: scipy least_squares trf (cap {config.baseline_cap_s:g} s)")
    runs.append(solve_scipy_trf(energy, start, layout, config.baseline_cap_s))
    if importlib.util.find_spec("torch") is None:
        out["torch_missing"] = "PyTorch is not installed in this environment (use ./run.sh bench)"
    else:
        log(f"baselines: torch L-BFGS (cap {config.baseline_cap_s:g} s)")
        runs.append(solve_torch_lbfgs(energy, start, layout, config.baseline_cap_s))
    for run in runs:
        figures = _solver_figures(shot, run.params, run.energy, run.wall_s, run.cpu_s)
        reached = run.time_to_energy(target, ENERGY_TOLERANCE)
        # Time to match our energy; a baseline that never does is charged its whole run,
        # which is a lower bound on that time when the cap stopped it.
        wall_b, cpu_b = reached if reached else (run.wall_s, run.cpu_s)
        figures.update({
            "evaluations": run.evaluations, "capped": run.capped, "message": run.message,
            "reached_our_energy": reached is not None,
            "time_to_our_energy_wall_s": wall_b, "time_to_our_energy_cpu_s": cpu_b,
            "speed_ratio_cpu": cpu_b / max(cpu, 1e-9), "speed_ratio_wall": wall_b / max(wall, 1e-9),
            "ratio_is_lower_bound": reached is None and run.capped,
        })
        out["solvers"][run.name] = figures
    return out


def environment() -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def run_against_baseline(problem: Problem, repeats: int, log: Log) -> dict:
    """Joint fit and real-time mode with the current and the frozen kernels
    (:mod:`fitter_backend.bench.baseline_fitter`), alternating in this process, ``repeats``
    times each; the fastest CPU time of each counts (the machine may be shared)."""
    shot, settings = problem.shot, FitSettings()
    runs: dict[str, dict[str, list[dict]]] = {"baseline": {"joint": [], "realtime": []},
                                              "current": {"joint": [], "realtime": []}}
    for repeat in range(repeats):
        for which in ("baseline", "current"):
            log(f"{problem.title}: {which} kernels, repeat {repeat + 1} of {repeats}")
            with baseline_kernels() if which == "baseline" else contextlib.nullcontext():
                runs[which]["joint"].append(run_joint_fit(shot, settings))
                runs[which]["realtime"].append(run_realtime(shot, settings))
    out = {"problem": problem.key, "title": problem.title, "repeats": repeats}
    for mode, key in (("joint", "ms_per_frame_cpu"), ("realtime", "tracking_ms_per_frame_cpu")):
        best = {which: min(runs[which][mode], key=lambda r: r[key]) for which in runs}
        out[mode] = {which: {"ms_per_frame_cpu": best[which][key],
                             "vertex_median_mm": best[which]["vertex_median_mm"],
                             "identity_median_mm": best[which]["identity_median_mm"],
                             "energy": best[which]["energy"]} for which in runs}
        out[mode]["speedup_cpu"] = best["baseline"][key] / max(best["current"][key], 1e-12)
    return out


def kernels_first_call_s(problem: Problem) -> float:
    """Seconds of the first derivative evaluation and the first real-time run (its causal
    filter) in this process: numba compiles the kernels here, or loads them from its cache
    beside the package, so that no timed fit pays for it."""
    shot = first_frames(problem.shot, 3)
    energy = ShotEnergy(shot.model, shot.landmarks, shot.observations, FitSettings())
    clock = Clock()
    energy.evaluate(shot.truth, Layout.for_problem(shot.model, shot.cameras), True)
    run_realtime(shot, FitSettings())
    return clock.cpu()


def run(config: BenchConfig, log: Log) -> dict:
    """All figures of the benchmark, JSON-ready."""
    log(f"building {len(config.problems)} problems ({config.frames} frames, {config.landmarks} landmarks)")
    problems = make_problems(config.problems, config.frames, config.landmarks, config.seed,
                             config.flame_identity, config.flame_expression, config.cameras)
    results = {"config": dataclasses.asdict(config), "problems": [], "baselines": [], "against_baseline": [],
               "kernels_first_call_s": kernels_first_call_s(problems[0])}
    for problem in problems:
        results["problems"].append(run_problem(problem, log))
        if config.against_baseline:
            results["against_baseline"].append(run_against_baseline(problem, config.baseline_repeats, log))
    if not config.skip_baselines:
        # The baselines are slow: they run on the first monocular problem only.
        mono = [p for p in problems if p.monocular]
        if mono:
            results["baselines"].append(run_baselines(mono[0], config, log))
    results["environment"] = environment()
    return results
