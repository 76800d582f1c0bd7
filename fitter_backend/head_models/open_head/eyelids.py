"""eyeBlink that closes the lids exactly at 1.

MakeHuman's eyeBlink units overshoot: seen from the front, the upper lid meets the lower lid
at a weight of 0.45 (outer corner) to 0.9 (inner corner) and crosses it beyond, so an
animator's eyeBlink = 1 pushes the upper lid through the lower one and a fitter needs only
~0.6 to close an eye. Here each unit is rescaled, smoothly across the eye, so that every
column of the eye's opening closes at exactly 1:

1. in the frontal view of the neutral head, for each pixel column of the eye's opening
   (where the eyeball shows) take the lid margins just above and below it;
2. the unit moves the margins linearly, so they meet at w = gap / closing rate;
3. those weights, smoothed across columns (weighted by the gap: at the corners, where the
   gap vanishes, a pixel's error is large) and interpolated at each vertex's x (clamped to the
   opening), scale the unit's motion there;
4. the margins sit on triangles, not at vertices, so steps 1-3 are repeated on the rescaled
   unit (:data:`ROUNDS` in all): the mean head's columns then close at 1 within a few percent.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.open_head.semantic_points import (
    EYE_LEFT,
    EYE_RIGHT,
    _column_extremes,
    _largest_component,
    _Scene,
    front_scene,
    triangle_parts,
)

#: The units rescaled, with the eyeball whose opening they close.
BLINK_UNITS = {"eyeBlinkLeft": EYE_LEFT, "eyeBlinkRight": EYE_RIGHT}
MARGIN_M = 0.01          # the view covers the eyeballs plus this on every side
SMOOTH_COLUMNS = 9       # moving-average width across columns (0.25 mm each)
ROUNDS = 3


def closing_weights(scene: _Scene, vertices: np.ndarray, triangles: np.ndarray, unit: np.ndarray, eye: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel column of an eye's opening: x (K,) in metres, the lid gap (K,) in metres and
    the weight (K,) of ``unit`` (V, 3) at which the upper margin meets the lower one."""
    opening = _largest_component(scene.part == eye)
    if opening.sum() < 20:
        raise HeadModelError("open head: an eyeball does not show between the eyelids")
    xs, gaps, weights = [], [], []
    for col in np.flatnonzero(opening.any(axis=0)):
        top, bottom = _column_extremes(opening, col)
        try:
            upper, lower = scene.point((top - 1, col), "upper lid"), scene.point((bottom + 1, col), "lower lid")
        except HeadModelError:  # the margin is not skin there (a corner): no column
            continue
        (tu, bu), (tl, bl) = upper, lower
        gap = bu @ vertices[triangles[tu], 1] - bl @ vertices[triangles[tl], 1]
        rate = bl @ unit[triangles[tl], 1] - bu @ unit[triangles[tu], 1]
        if gap > 0 and rate > 0:
            xs.append(scene.xy(top, col)[0])
            gaps.append(gap)
            weights.append(gap / rate)
    if len(xs) < 5:
        raise HeadModelError("open head: an eyeBlink unit does not close its eye")
    return np.array(xs), np.array(gaps), np.array(weights)


def vertex_scales(x_vertices: np.ndarray, xs: np.ndarray, gaps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(V,) scale per vertex: ``weights`` over columns ``xs`` (ascending), smoothed with the
    gaps as weights and interpolated at each vertex's x (constant beyond the opening)."""
    kernel = np.ones(SMOOTH_COLUMNS)
    smoothed = np.convolve(weights * gaps, kernel, "same") / np.convolve(gaps, kernel, "same")
    return np.interp(x_vertices, xs, smoothed)


def close_lids_at_one(template: np.ndarray, triangles: np.ndarray, parts: dict[str, np.ndarray],
                      regions: dict[str, np.ndarray], basis: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(V, 3, E) expression basis whose eyeBlink units close the lids exactly at 1 (see the
    module docstring). template (V, 3) the neutral head; parts and regions as in the build."""
    triangle_part = triangle_parts(triangles, parts)
    eyeballs = template[parts["eyeball_left"] | parts["eyeball_right"]]
    bounds = (eyeballs[:, 0].min() - MARGIN_M, eyeballs[:, 0].max() + MARGIN_M,
              eyeballs[:, 1].min() - MARGIN_M, eyeballs[:, 1].max() + MARGIN_M)
    scene = front_scene(template, triangles, triangle_part, regions["face"][triangles].all(1), bounds)
    out = basis.copy()
    for name, eye in BLINK_UNITS.items():
        channel = names.index(name)
        for _ in range(ROUNDS):
            xs, gaps, weights = closing_weights(scene, template, triangles, out[:, :, channel], eye)
            out[:, :, channel] *= vertex_scales(template[:, 0], xs, gaps, weights)[:, None]
    return out
