"""Choosing a few well-spread points out of many."""
from __future__ import annotations

import numpy as np


def farthest_points(positions: np.ndarray, count: int) -> np.ndarray:
    """Sorted indices of up to ``count`` rows of ``positions`` (M, D), each the farthest from
    those chosen before it (a greedy even spread)."""
    if len(positions) <= count:
        return np.arange(len(positions))
    chosen = [0]
    distance = np.linalg.norm(positions - positions[0], axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(positions - positions[chosen[-1]], axis=1))
    return np.sort(np.array(chosen))
