"""Gauss-Newton normal equations of a shot, kept in their block structure, and their solve.

Unknowns are per-frame blocks y_i (p each) and shared unknowns z (q: identity, cameras).
Rows of the energy touch one frame (landmarks, priors, intersections), two neighbouring
frames (temporal) or only z (identity prior), so J^T J is

    [ A  B ]    A block-tridiagonal (N blocks of p x p, neighbours coupled),
    [ B' D ]    B (N p x q), D (q x q).

It is solved by the Schur complement on z: a block-tridiagonal Cholesky of A handles all
frames in O(N p^3), never a dense solve over all frames.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from fitter_backend.errors import FitError


class NormalEquations:
    """Accumulates J^T J and J^T r of residual rows, with 0.5 |r|^2 as the energy."""

    def __init__(self, num_frames: int, frame_size: int, shared_size: int):
        self.frame_frame = np.zeros((num_frames, frame_size, frame_size))
        self.frame_next = np.zeros((max(num_frames - 1, 0), frame_size, frame_size))  # block (i+1, i)
        self.frame_shared = np.zeros((num_frames, frame_size, shared_size))
        self.shared_shared = np.zeros((shared_size, shared_size))
        self.frame_gradient = np.zeros((num_frames, frame_size))
        self.shared_gradient = np.zeros(shared_size)
        self.has_temporal = False

    def add_frame_rows(self, frames: np.ndarray, residual: np.ndarray, d_frame: np.ndarray,
                       d_shared: np.ndarray | None) -> None:
        """Rows of single frames: residual (n, R), d_frame (n, R, p), d_shared (n, R, q) or None.

        J^T J is formed in float32 (twice the speed; Gauss-Newton only needs it approximately),
        the gradient J^T r in float64 (it decides where the solve converges).
        """
        d_frame32 = d_frame.astype(np.float32, copy=False)
        d_frame_t = d_frame32.transpose(0, 2, 1)
        self.frame_frame[frames] += d_frame_t @ d_frame32
        self.frame_gradient[frames] += (d_frame.transpose(0, 2, 1) @ residual[..., None])[..., 0]
        if d_shared is not None:
            d_shared32 = d_shared.astype(np.float32, copy=False)
            self.frame_shared[frames] += d_frame_t @ d_shared32
            flat = d_shared32.reshape(-1, d_shared.shape[-1])
            self.shared_shared += flat.T @ flat
            self.shared_gradient += d_shared.reshape(-1, d_shared.shape[-1]).T @ residual.reshape(-1)

    def add_stacked_rows(self, frames: np.ndarray, residual: np.ndarray, jacobian: np.ndarray,
                         gradient: np.ndarray | None = None) -> None:
        """Rows of single frames with frame and shared columns side by side: residual (n, R),
        jacobian (n, R, p + q') float32 with q' = q, or 0 when the rows leave z out; ``gradient``
        (n, p + q'), J^T r when the caller has it already (in float64, like here).

        One Gram matrix per frame covers J^T J's frame, frame-shared and shared blocks; as
        ``J.T @ J`` of one 2-D array, numpy computes it with BLAS's symmetric rank-k update
        (half the products of three separate ones).
        """
        p = self.frame_frame.shape[1]
        for i, frame in enumerate(frames):
            rows = jacobian[i]
            gram = rows.T @ rows
            self.frame_frame[frame] += gram[:p, :p]
            g = residual[i] @ rows if gradient is None else gradient[i]
            self.frame_gradient[frame] += g[:p]
            if rows.shape[1] > p:
                self.frame_shared[frame] += gram[:p, p:]
                self.shared_shared += gram[p:, p:]
                self.shared_gradient += g[p:]

    def add_pair_rows(self, frames: np.ndarray, residual: np.ndarray, d_this: np.ndarray,
                      d_previous: np.ndarray, d_shared: np.ndarray | None) -> None:
        """Rows coupling frame i (in ``frames``, all >= 1) with frame i - 1."""
        self.has_temporal = True
        self.add_frame_rows(frames, residual, d_this, d_shared)
        self.add_frame_rows(frames - 1, residual, d_previous, None)
        d_previous_t = d_previous.astype(np.float32).transpose(0, 2, 1)
        self.frame_next[frames - 1] += d_this.astype(np.float32).transpose(0, 2, 1) @ d_previous.astype(np.float32)
        if d_shared is not None:
            self.frame_shared[frames - 1] += d_previous_t @ d_shared.astype(np.float32)

    def add_shared_rows(self, residual: np.ndarray, d_shared: np.ndarray) -> None:
        self.shared_shared += d_shared.T @ d_shared
        self.shared_gradient += d_shared.T @ residual

    def add_frame_column_pairs(self, columns_a: np.ndarray, columns_b: np.ndarray, residual: np.ndarray,
                               d_a: np.ndarray, d_b: np.ndarray) -> None:
        """Rows of single frames that each touch two of its columns, K rows per frame (all N
        frames): residual, d_a = dr/dy[columns_a] and d_b = dr/dy[columns_b] all (N, K);
        columns (K,). Accumulated entry by entry (a dense (N, K, p) Jacobian would be mostly zeros)."""
        frames = np.arange(residual.shape[0])[:, None]
        np.add.at(self.frame_frame, (frames, columns_a, columns_a), d_a * d_a)
        np.add.at(self.frame_frame, (frames, columns_b, columns_b), d_b * d_b)
        np.add.at(self.frame_frame, (frames, columns_a, columns_b), d_a * d_b)
        np.add.at(self.frame_frame, (frames, columns_b, columns_a), d_a * d_b)
        np.add.at(self.frame_gradient, (frames, columns_a), d_a * residual)
        np.add.at(self.frame_gradient, (frames, columns_b), d_b * residual)

    def add_frame_differences(self, columns_a: np.ndarray, columns_b: np.ndarray, residual: np.ndarray,
                              weight: float) -> None:
        """Rows r = weight (y[a] - y[b]) of every frame, one per pair of columns (K,) (residual
        (N, K) already scaled); the columns all distinct, so plain indexing adds each entry once."""
        square = weight * weight
        self.frame_frame[:, columns_a, columns_a] += square
        self.frame_frame[:, columns_b, columns_b] += square
        self.frame_frame[:, columns_a, columns_b] -= square
        self.frame_frame[:, columns_b, columns_a] -= square
        self.frame_gradient[:, columns_a] += weight * residual
        self.frame_gradient[:, columns_b] -= weight * residual

    def add_frame_changes(self, columns: np.ndarray, residual: np.ndarray, weight: float) -> None:
        """Rows r = weight (y_i[c] - y_{i-1}[c]) for frames i = 1 .. N - 1 and columns c (K,),
        all distinct (residual (N - 1, K) already scaled): add_pair_rows' sums, entry by entry
        (a dense (N - 1, K, p) Jacobian would be mostly zeros)."""
        self.has_temporal = True
        square = weight * weight
        self.frame_frame[1:, columns, columns] += square
        self.frame_frame[:-1, columns, columns] += square
        self.frame_next[:, columns, columns] -= square
        self.frame_gradient[1:, columns] += weight * residual
        self.frame_gradient[:-1, columns] -= weight * residual

    def add_frame_diagonal(self, columns: slice, residual: np.ndarray, weight: float | np.ndarray) -> None:
        """Prior rows r = weight * y[columns] (residual already scaled), one per column;
        ``weight`` a number or one per column."""
        n, width = residual.shape
        index = np.arange(columns.start, columns.start + width)
        self.frame_frame[:, index, index] += weight * weight
        self.frame_gradient[:, index] += weight * residual


def solve(equations: NormalEquations, frame_columns: np.ndarray, shared_columns: np.ndarray,
          damping: float, fixed: np.ndarray | None = None,
          fixed_step: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt step on the active columns: (H + damping diag(H)) delta = -g.

    ``fixed`` (N, p) bool prescribes the step of single frame unknowns (bound constraints):
    ``fixed_step`` (N, p) there (zero when None), and the others are solved for given it,
    their gradient moved by H times the prescribed step. Returns (delta_frames (N, p),
    delta_shared (q,)) with zeros in inactive columns.
    """
    fc, sc = frame_columns, shared_columns
    a = equations.frame_frame[:, fc[:, None], fc[None, :]]
    g_y = equations.frame_gradient[:, fc]
    b = equations.frame_shared[:, fc[:, None], sc[None, :]]
    d = equations.shared_shared[sc[:, None], sc[None, :]]
    g_z = equations.shared_gradient[sc]
    prescribed = None if fixed_step is None or fixed is None else np.where(fixed, fixed_step, 0.0)[:, fc]
    if prescribed is not None and prescribed.any():
        # g + H delta_fixed: the frame's own block, its temporal neighbours and the shared rows.
        g_y = g_y + np.einsum("npq,nq->np", a, prescribed)
        if equations.has_temporal and len(a) > 1:
            off = equations.frame_next[:, fc[:, None], fc[None, :]]
            g_y[1:] += np.einsum("npq,nq->np", off, prescribed[:-1])
            g_y[:-1] += np.einsum("nqp,nq->np", off, prescribed[1:])
        g_z = g_z + np.einsum("npq,np->q", b, prescribed)
    a = _damped(a, damping)
    d = _damped(d[None], damping)[0]
    free = None if fixed is None or not fixed[:, fc].any() else ~fixed[:, fc]
    if free is not None:
        a = a * (free[:, :, None] & free[:, None, :])
        a[:, np.arange(len(fc)), np.arange(len(fc))] += ~free
        g_y, b = g_y * free, b * free[:, :, None]
    rhs = np.concatenate([b, g_y[:, :, None]], axis=2)  # solve A [X_B | x_g] = [B | g_y]
    if equations.has_temporal and len(a) > 1:
        off = equations.frame_next[:, fc[:, None], fc[None, :]]
        if free is not None:
            off = off * (free[1:, :, None] & free[:-1, None, :])
        solved = _block_tridiagonal_solve(a, off, rhs)
    else:
        try:  # independent frames: one batched solve in C
            solved = np.linalg.solve(a, rhs)
        except np.linalg.LinAlgError:
            raise FitError("the normal equations are singular (degenerate problem)") from None
    x_b, x_g = solved[:, :, :-1], solved[:, :, -1]
    delta_frames = np.zeros(equations.frame_gradient.shape)
    delta_shared = np.zeros(equations.shared_gradient.shape)
    if len(sc):
        schur = d - np.einsum("npq,npr->qr", b, x_b)
        schur_rhs = g_z - np.einsum("npq,np->q", b, x_g)
        delta_z = -scipy.linalg.solve(schur, schur_rhs, assume_a="pos")
        delta_shared[sc] = delta_z
        delta_frames[:, fc] = -(x_g - np.einsum("npq,q->np", x_b, -delta_z))
    else:
        delta_frames[:, fc] = -x_g
    if prescribed is not None:
        delta_frames[:, fc] += prescribed
    if not (np.all(np.isfinite(delta_frames)) and np.all(np.isfinite(delta_shared))):
        raise FitError("the linear solve produced non-finite values (degenerate problem)")
    return delta_frames, delta_shared


def _damped(blocks: np.ndarray, damping: float) -> np.ndarray:
    """Marquardt damping, with a floor so unconstrained columns stay solvable."""
    out = blocks.copy()
    diagonal = np.einsum("npp->np", blocks)
    index = np.arange(blocks.shape[1])
    floor = 1e-9 * max(float(np.max(diagonal, initial=0.0)), 1.0)
    out[:, index, index] += damping * np.maximum(diagonal, floor) + floor
    return out


def _block_tridiagonal_solve(diagonal: np.ndarray, below: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a symmetric positive definite block-tridiagonal system (block Thomas algorithm).

    diagonal (N, p, p); below (N-1, p, p) with below[i] the block (i+1, i); rhs (N, p, k).
    The pivots D_i = A_ii - A_{i,i-1} D_{i-1}^-1 A_{i,i-1}^T are Schur complements of an SPD
    matrix, hence SPD themselves; each step is a few small dense products.
    """
    n = len(diagonal)
    pivot_inverse = np.empty_like(diagonal)
    forward = np.empty_like(rhs)
    pivot, forward[0] = diagonal[0], rhs[0]
    for i in range(n):
        if i:
            gain = below[i - 1] @ pivot_inverse[i - 1]
            pivot = diagonal[i] - gain @ below[i - 1].T
            forward[i] = rhs[i] - gain @ forward[i - 1]
        try:
            pivot_inverse[i] = np.linalg.inv(pivot)
        except np.linalg.LinAlgError:
            raise FitError("the normal equations are singular (degenerate problem)") from None
    out = np.empty_like(rhs)
    out[-1] = pivot_inverse[-1] @ forward[-1]
    for i in range(n - 2, -1, -1):
        out[i] = pivot_inverse[i] @ (forward[i] - below[i].T @ out[i + 1])
    return out
