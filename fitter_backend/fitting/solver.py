"""Levenberg-Marquardt on a shot's energy, over a chosen subset of the unknowns."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.normal_equations import solve
from fitter_backend.fitting.problem import Layout, Parameters

INITIAL_DAMPING = 1e-4
MAX_DAMPING = 1e10


@dataclasses.dataclass(frozen=True)
class Active:
    """Which unknowns a solve may change: per-frame columns, shared columns, and whether the
    identity and expression derivatives are needed at all."""

    frame_columns: np.ndarray
    shared_columns: np.ndarray
    identity: bool
    expression: bool


@dataclasses.dataclass
class SolveLog:
    """Energies after each accepted step, and counts."""

    energies: list[float] = dataclasses.field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    on_step: Callable[[int], None] | None = None  # called with the stage's step count (progress, cancel)


def levenberg_marquardt(energy: ShotEnergy, params: Parameters, layout: Layout, active: Active,
                        iterations: int, relative_tolerance: float, log: SolveLog) -> Parameters:
    """Minimise the energy over the active unknowns; returns the best parameters found.

    Bounded expression weights stay in [0, 1]: a projected LM step, with weights on a bound
    that the gradient pushes outward held fixed (the active set) and the rest projected.

    A step is kept only when it lowers the energy, so the energy never grows; a step that
    makes the energy non-finite is rejected like any other, and a solve that cannot make
    progress stops with a warning in ``log``.
    """
    params = layout.projected(params)
    current = energy.evaluate(params, layout, True, active.identity, active.expression,
                              with_shared=len(active.shared_columns) > 0)
    if not np.isfinite(current.energy):
        raise FitError("the energy is not finite at the start of the solve (bad initialisation or inputs)")
    if not log.energies:
        log.energies.append(current.energy)
    damping = INITIAL_DAMPING
    previous_small = False
    for step in range(iterations):
        fixed = layout.fixed_columns(params, current.equations.frame_gradient)
        while True:
            try:
                delta_frames, delta_shared = solve(current.equations, active.frame_columns,
                                                   active.shared_columns, damping, fixed)
                # Weights the step would take through a bound go to the bound, and the rest
                # is solved again given that (a projected step alone is a poor step).
                crossing, to_bound = layout.crossings(params, delta_frames)
                if crossing.any():
                    delta_frames, delta_shared = solve(current.equations, active.frame_columns,
                                                       active.shared_columns, damping, fixed | crossing, to_bound)
                candidate = layout.apply(params, delta_frames, delta_shared)
                trial = energy.evaluate(candidate, layout, False)  # cheap: no derivatives until accepted
                improved = np.isfinite(trial.energy) and trial.energy < current.energy
            except FitError:
                improved = False
            if improved:
                break
            log.rejected += 1
            damping *= 4.0
            if damping > MAX_DAMPING:
                log.warnings.append("the solve stopped early: no step lowered the energy")
                return params
        decrease = (current.energy - trial.energy) / max(current.energy, 1e-300)
        params = candidate
        log.energies.append(trial.energy)
        log.accepted += 1
        if log.on_step:
            log.on_step(step + 1)
        # A small decrease ends the stage after a near Gauss-Newton step, or after two in a row:
        # one heavily damped step after rejections is short by design, not a sign of convergence,
        # but waiting for the damping to fall back crawled on at 1e-6 to 1e-8 a step.
        small = decrease < relative_tolerance
        converged = small and (damping <= INITIAL_DAMPING or previous_small)
        previous_small = small
        if converged or step == iterations - 1:
            break   # no derivatives for a step that will not be taken (a fifth of real time's)
        damping = max(damping / 3.0, 1e-12)
        current = energy.evaluate(params, layout, True, active.identity, active.expression,
                                  with_shared=len(active.shared_columns) > 0)
    return params
