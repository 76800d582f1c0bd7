"""A shot's unknowns as one flat vector, for generic solvers, and the sparsity of the residuals.

x = [y_0, ..., y_{N-1}, z]: the per-frame blocks (``Layout.frame_size`` each) then the
shared unknowns (identity, focal lengths, extrinsics), as a step from a start point
applied by :meth:`Layout.apply`. The residual rows of ``ShotEnergy.residual_vector`` touch
one frame's block (landmarks, intersections, per-frame priors), a frame and its
predecessor (E_temporal) or none (the identity prior), and every row may touch z.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse

from fitter_backend.fitting.energy import TERMS, ShotEnergy
from fitter_backend.fitting.problem import Layout, Parameters

SHARED_ONLY = -1


def flat_size(layout: Layout, num_frames: int) -> int:
    return num_frames * layout.frame_size + layout.shared_size


def parameters_at(start: Parameters, layout: Layout, x: np.ndarray) -> Parameters:
    """The parameters at ``start`` moved by the flat step ``x``."""
    n, p = start.num_frames, layout.frame_size
    return layout.apply(start, x[: n * p].reshape(n, p), x[n * p:])


class _RowRecorder:
    """Stands in for the energy's tally: keeps each term's residual shape, in row order."""

    def __init__(self):
        self.terms = dict.fromkeys(TERMS, 0.0)
        self.blocks: list[tuple[str, tuple[int, ...]]] = []

    def add(self, term: str, residual: np.ndarray) -> None:
        self.terms[term] += 0.5 * float(np.sum(residual * residual))
        self.blocks.append((term, residual.shape))


def residual_frames(energy: ShotEnergy, params: Parameters, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``energy.residual_vector``: its frame (SHARED_ONLY for rows of the
    shared unknowns alone) and whether it also depends on the previous frame.

    Read from the blocks the energy emits: per chunk of consecutive frames, one landmark
    block (n, 2, S) per camera, temporal blocks (m, 2, T) of the chunk's last m frames paired
    with their predecessors, an intersection block (n, R); then the priors: identity (I,),
    expression and joints (N, K); then the eyes', the depth's and the steady expression units'
    temporal blocks (N - 1, 6), (N - 1, 1) and (N - 1, K) of frames 1.. paired with their
    predecessors.
    """
    if energy.temporal_anchor is not None or energy.eye_anchor is not None:
        raise ValueError("residual_frames covers whole shots, not restricted real-time energies")
    recorder = _RowRecorder()
    energy.evaluate(params, layout, False, tally=recorder)
    cameras = params.cameras.count
    frames, pairs = [], []
    cursor, chunk, landmark_blocks = 0, np.zeros(0, int), 0
    for term, shape in recorder.blocks:
        rows_per_frame = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        if term == "landmarks":
            if landmark_blocks % cameras == 0:  # the first camera's block opens a new chunk
                chunk = np.arange(cursor, cursor + shape[0])
                cursor += shape[0]
            landmark_blocks += 1
            block_frames, pair = chunk, False
        elif term == "temporal" and len(shape) == 2:  # the eyes', depth's or steady units', whole shot
            block_frames, pair = np.arange(1, shape[0] + 1), True
        elif term == "temporal":
            block_frames, pair = chunk[len(chunk) - shape[0]:], True
        elif term == "intersect":
            block_frames, pair = chunk, False
        elif term in ("expression", "joints"):
            block_frames, pair = np.arange(shape[0]), False
        elif term == "identity":
            frames.append(np.full(shape[0], SHARED_ONLY))
            pairs.append(np.zeros(shape[0], bool))
            continue
        else:
            raise ValueError(f"unknown energy term {term!r}: the residual layout has changed")
        frames.append(np.repeat(block_frames, rows_per_frame))
        pairs.append(np.full(len(block_frames) * rows_per_frame, pair))
    return np.concatenate(frames), np.concatenate(pairs)


def jacobian_sparsity(energy: ShotEnergy, params: Parameters, layout: Layout) -> scipy.sparse.csr_matrix:
    """(rows, flat size) bool pattern: a row may depend on its frame's block, its
    predecessor's block for temporal rows, and all shared unknowns."""
    row_frame, row_pair = residual_frames(energy, params, layout)
    n, p, q = params.num_frames, layout.frame_size, layout.shared_size
    rows, cols = [], []
    for frame in (row_frame, np.where(row_pair, row_frame - 1, SHARED_ONLY)):
        which = np.flatnonzero(frame != SHARED_ONLY)
        rows.append(np.repeat(which, p))
        cols.append((frame[which, None] * p + np.arange(p)[None]).ravel())
    if q:
        rows.append(np.repeat(np.arange(len(row_frame)), q))
        cols.append(np.tile(n * p + np.arange(q), len(row_frame)))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return scipy.sparse.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(len(row_frame), n * p + q))
