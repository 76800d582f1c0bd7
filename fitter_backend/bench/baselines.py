"""Generic solvers on the fitter's energy, for the speed comparison of the benchmark.

- ``scipy.optimize.least_squares`` (method 'trf', x_scale 'jac') on
  ``ShotEnergy.residual_vector``, its Jacobian by finite differences grouped with the
  sparsity pattern of :func:`flat.jacobian_sparsity`;
- PyTorch L-BFGS (strong Wolfe line search) on the same energy ported to torch
  (:mod:`fitter_backend.bench.torch_energy`), the paper's offline solver.

Both move the flat vector of :mod:`fitter_backend.bench.flat` from the same start point,
record the energy after every evaluation, and stop at a wall-time cap, keeping the best
point they evaluated.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.optimize

from fitter_backend.bench.flat import flat_size, jacobian_sparsity, parameters_at
from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.problem import Layout, Parameters

SCIPY_TRF = "scipy least_squares trf"
TORCH_LBFGS = "torch L-BFGS"


class _TimeUp(Exception):
    """Raised inside a solver's callback when its wall-time cap is reached."""


class Clock:
    """Wall (perf_counter) and CPU (process_time) seconds since creation."""

    def __init__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0


@dataclasses.dataclass
class SolverRun:
    """A baseline solve: the best point evaluated, its energy, the time taken, whether the
    cap stopped it, and ``trace`` (K, 3): wall s, CPU s, energy after each evaluation."""

    name: str
    params: Parameters
    energy: float
    wall_s: float
    cpu_s: float
    evaluations: int
    capped: bool
    message: str
    trace: np.ndarray

    def time_to_energy(self, target: float, tolerance: float = 0.0) -> tuple[float, float] | None:
        """(wall s, CPU s) of the first evaluation at or below ``target`` (1 + ``tolerance``);
        None if never."""
        hits = np.flatnonzero(self.trace[:, 2] <= target * (1.0 + tolerance))
        return (float(self.trace[hits[0], 0]), float(self.trace[hits[0], 1])) if len(hits) else None


class _Recorder:
    """Keeps the trace and the best point of a solve, and enforces the cap."""

    def __init__(self, cap_s: float, size: int):
        self.clock = Clock()
        self.cap_s = cap_s
        self.trace: list[tuple[float, float, float]] = []
        self.best_energy = np.inf
        self.best_x = np.zeros(size)  # the start point, should the cap stop the solve at once

    def check(self) -> None:
        if self.clock.wall() > self.cap_s:
            raise _TimeUp

    def record(self, x: np.ndarray, energy: float) -> None:
        self.trace.append((self.clock.wall(), self.clock.cpu(), energy))
        if energy < self.best_energy:
            self.best_energy, self.best_x = energy, x.copy()


def _finish(name: str, energy: ShotEnergy, start: Parameters, layout: Layout, recorder: _Recorder,
            capped: bool, message: str) -> SolverRun:
    wall, cpu = recorder.clock.wall(), recorder.clock.cpu()
    params = parameters_at(start, layout, recorder.best_x)
    value = energy.evaluate(params, layout, False).energy
    return SolverRun(name, params, value, wall, cpu, len(recorder.trace), capped, message,
                     np.array(recorder.trace).reshape(-1, 3))


def solve_scipy_trf(energy: ShotEnergy, start: Parameters, layout: Layout, cap_s: float) -> SolverRun:
    """scipy's trust-region-reflective least squares with a sparse finite-difference Jacobian."""
    size = flat_size(layout, start.num_frames)
    recorder = _Recorder(cap_s, size)
    sparsity = jacobian_sparsity(energy, start, layout)  # counted in the solver's time

    def residuals(x: np.ndarray) -> np.ndarray:
        recorder.check()
        r = energy.residual_vector(parameters_at(start, layout, x), layout)
        recorder.record(x, 0.5 * float(r @ r))
        return r

    try:
        result = scipy.optimize.least_squares(residuals, np.zeros(size), jac="2-point", jac_sparsity=sparsity,
                                              method="trf", x_scale="jac")
        capped, message = False, str(result.message)
    except _TimeUp:
        capped, message = True, f"stopped at the {cap_s:g} s cap"
    return _finish(SCIPY_TRF, energy, start, layout, recorder, capped, message)


def solve_torch_lbfgs(energy: ShotEnergy, start: Parameters, layout: Layout, cap_s: float,
                      iterations_per_step: int = 20) -> SolverRun:
    """PyTorch L-BFGS with strong Wolfe line search on the ported energy, one thread."""
    import torch

    from fitter_backend.bench.torch_energy import DTYPE, TorchShotEnergy

    torch.set_num_threads(1)
    size = flat_size(layout, start.num_frames)
    recorder = _Recorder(cap_s, size)
    model = TorchShotEnergy(energy, layout, start)
    x = torch.zeros(size, dtype=DTYPE, requires_grad=True)
    optimiser = torch.optim.LBFGS([x], lr=1.0, max_iter=iterations_per_step, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        recorder.check()
        optimiser.zero_grad()
        loss = model.energy(x)
        loss.backward()
        recorder.record(x.detach().numpy(), float(loss.detach()))
        return loss

    capped, message = False, "converged (no progress in a step)"
    try:
        while True:
            evaluations, best = len(recorder.trace), recorder.best_energy
            optimiser.step(closure)
            progress = best - recorder.best_energy
            if len(recorder.trace) - evaluations <= 1 or progress <= 1e-12 * abs(recorder.best_energy):
                break
    except _TimeUp:
        capped, message = True, f"stopped at the {cap_s:g} s cap"
    return _finish(TORCH_LBFGS, energy, start, layout, recorder, capped, message)
