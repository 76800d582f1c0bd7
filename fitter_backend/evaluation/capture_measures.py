"""What the capture evaluation measures, as small pure functions shared by rendered and real clips.

Lid and lip gaps use the iBUG-68 points: on a mesh the head model's semantic points, on
landmarks the landmark model's iBUG counterparts. An eye's opening is the mean of its two
upper-lid points minus the mean of its two lower-lid points along "up"; the inner-lip gap
the same for the inner lips' midpoints (62, 66). Gaps are signed, so lids or lips that cross
read below zero. "Up" is +Y for 3D points, which must be in the head's own frame
(:func:`head_frame_vertices`), and for 2D image points the normal of the eye's (or mouth's)
corner line pointing up the image. Ratios divide by the corner-to-corner width, so they
compare across image sizes.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.problem import Parameters

#: Subject's right eye (image left) and left eye: corners (outer, inner), upper lid, lower lid.
EYES = {"right": {"corners": (36, 39), "upper": (37, 38), "lower": (41, 40)},
        "left": {"corners": (45, 42), "upper": (43, 44), "lower": (47, 46)}}
INNER_LIPS = {"corners": (60, 64), "upper": (62,), "lower": (66,)}
#: An eye counts as closed at eyeBlink >= this weight (rendered truth and fitted values alike).
BLINK_CLOSED = 0.5
#: A weight counts as outside [0, 1] when it leaves it by more than this.
RANGE_TOLERANCE = 0.01
ARKIT_EYE = {"right": "Right", "left": "Left"}
#: Each eye's index in per-eye arrays of the head model's ``eyeball_joints`` order (left, right).
EYEBALL_INDEX = {"left": 0, "right": 1}
IBUG_NAMES = tuple(f"ibug_{k:02d}" for k in range(68))


def gap_and_width(points: np.ndarray, feature: dict) -> tuple[np.ndarray, np.ndarray]:
    """points (..., 68, D) in iBUG order (D = 3: head frame, D = 2: image pixels) ->
    (signed gap (...), width (...)) of an eye or the inner lips."""
    upper = points[..., list(feature["upper"]), :].mean(axis=-2)
    lower = points[..., list(feature["lower"]), :].mean(axis=-2)
    a, b = feature["corners"]
    across = points[..., a, :] - points[..., b, :]
    width = np.linalg.norm(across, axis=-1)
    if points.shape[-1] == 3:
        return upper[..., 1] - lower[..., 1], width
    across = across * np.sign(across[..., :1])          # pointing right in the image
    with np.errstate(invalid="ignore", divide="ignore"):  # zero-width features give NaN
        up = np.stack([across[..., 1], -across[..., 0]], axis=-1) / width[..., None]  # image y points down
    return np.einsum("...c,...c->...", upper - lower, up), width


def head_frame_vertices(model, identity: np.ndarray, expression: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """(N, V, 3) vertices with the expression and the jaw and eye joints but no head, neck or
    root motion: the head's own frame, +Y up, for signed gaps."""
    from fitter_backend.head_models.lbs import posed_vertices

    local = np.zeros_like(rotations)
    for name in ("jaw", "eye_L", "eye_R"):
        if name in model.joint_names:
            local[:, model.joint_index(name)] = rotations[:, model.joint_index(name)]
    return posed_vertices(model, identity, expression, local)


def eye_corner_distance_mm(model, identity: np.ndarray) -> float:
    """The neutral head's outer eye corners (iBUG 36 to 45) apart, in mm: its size (adults
    measure about 86-92 mm between the outer canthi)."""
    from fitter_backend.head_models.lbs import posed_vertices, surface_points

    corners = surface_points(posed_vertices(model, identity), model.triangles,
                             model.semantic_points.subset(("ibug_36", "ibug_45")))[0]
    return float(1000.0 * np.linalg.norm(corners[0] - corners[1]))


def gaze_directions(model, rotations: np.ndarray) -> np.ndarray:
    """(N, J, 3) axis-angle joint rotations -> (N, 2, 3) each eye's gaze in the head's frame (its
    joint's turn of the forward axis, +Z), in the head model's ``eyeball_joints`` order."""
    from fitter_backend.head_models.lbs import rodrigues

    return rodrigues(rotations[:, model.eyeball_joints])[..., :, 2]


def gaze_error_deg(model, fitted_rotations: np.ndarray, true_rotations: np.ndarray) -> np.ndarray:
    """(N, 2) angle in degrees between the fitted and the true gaze of each eye."""
    cosine = np.einsum("nec,nec->ne", gaze_directions(model, fitted_rotations), gaze_directions(model, true_rotations))
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def gaze_correlation(model, fitted_rotations: np.ndarray, true_rotations: np.ndarray) -> np.ndarray:
    """(2,) per eye, the mean of the correlations of the fitted with the true gaze's sideways (X)
    and vertical (Y) components over the frames: does the eye follow, whatever its offset."""
    fitted, true = gaze_directions(model, fitted_rotations), gaze_directions(model, true_rotations)
    return np.array([np.mean([correlation(fitted[:, e, c], true[:, e, c]) for c in (0, 1)]) for e in range(2)])


def gaze_jitter_deg(model, rotations: np.ndarray) -> np.ndarray:
    """(2,) per eye (``eyeball_joints`` order), the median over frames of the gaze's second
    difference, in degrees per frame^2: how much the eye shakes."""
    gaze = gaze_directions(model, rotations)
    return np.degrees(np.median(np.linalg.norm(gaze[2:] - 2 * gaze[1:-1] + gaze[:-2], axis=-1), axis=0))


def eyes_apart_deg(model, rotations: np.ndarray) -> np.ndarray:
    """(N,) the angle between the two eyes' gaze in each frame (a few degrees of vergence at a
    camera's distance; more is a wall- or cross-eyed rig)."""
    gaze = gaze_directions(model, rotations)
    return np.degrees(np.arccos(np.clip(np.einsum("nc,nc->n", gaze[:, 0], gaze[:, 1]), -1.0, 1.0)))


def opening_ratios(points: np.ndarray) -> dict[str, np.ndarray]:
    """points (..., 68, D) -> gap / width for ``eye_right``, ``eye_left`` and ``mouth`` (...)."""
    out = {}
    for name, feature in [(f"eye_{side}", spec) for side, spec in EYES.items()] + [("mouth", INNER_LIPS)]:
        gap, width = gap_and_width(points, feature)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = gap / width
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the finite pairs; NaN when either side is constant."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) < 1e-12 or np.std(b[keep]) < 1e-12:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def slope(fitted: np.ndarray, truth: np.ndarray) -> float:
    """Least-squares slope of ``fitted`` on ``truth`` over the finite pairs (1 when one follows the
    other at full amplitude); NaN when the truth is constant."""
    keep = np.isfinite(fitted) & np.isfinite(truth)
    if keep.sum() < 3 or np.std(truth[keep]) < 1e-12:
        return float("nan")
    return float(np.polyfit(truth[keep], fitted[keep], 1)[0])


def runs(closed: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a (N,) bool array, stop exclusive."""
    padded = np.concatenate([[False], np.asarray(closed, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def event_recall_precision(true_closed: np.ndarray, fitted_closed: np.ndarray, slack: int = 1
                           ) -> tuple[float, float, int, int]:
    """Blink events (runs of closed frames): recall = true events met by a fitted event within
    ``slack`` frames, precision = fitted events that meet a true one. Returns recall,
    precision, true events, fitted events (NaN where a count is zero)."""
    truth, fitted = runs(true_closed), runs(fitted_closed)

    def meets(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] < b[1] + slack and b[0] < a[1] + slack

    recall = np.mean([any(meets(t, f) for f in fitted) for t in truth]) if truth else float("nan")
    precision = np.mean([any(meets(f, t) for t in truth) for f in fitted]) if fitted else float("nan")
    return float(recall), float(precision), len(truth), len(fitted)


def outside_unit_range(weights: np.ndarray) -> float:
    """Fraction of weights below -RANGE_TOLERANCE or above 1 + RANGE_TOLERANCE."""
    weights = np.asarray(weights)
    return float(np.mean((weights < -RANGE_TOLERANCE) | (weights > 1 + RANGE_TOLERANCE)))


@dataclasses.dataclass
class FittedShot:
    """A fit read back from its result folder: fit.npz's parameters and the landmark track."""

    identity: np.ndarray
    expression: np.ndarray
    rotations: np.ndarray
    translation_m: np.ndarray
    cameras: Cameras
    expression_names: tuple[str, ...]
    flags: list[str]
    mu_px: np.ndarray            # (T, N, 2) landmarks of the first view
    semantic_points: dict[str, int]
    frame_indices: np.ndarray
    report: dict

    def weight(self, name: str) -> np.ndarray:
        return self.expression[:, self.expression_names.index(name)]

    def lips_apart(self) -> np.ndarray:
        """(T,) jawOpen - mouthClose: how far the ARKit weights part the lips. mouthClose seals
        the lips over an open jaw (a b, p or m in speech), so the lips' gap follows this, while
        jawOpen alone follows the chin."""
        return self.weight("jawOpen") - self.weight("mouthClose")

    @property
    def params(self) -> Parameters:
        """The fitted unknowns as the fitter's own type."""
        return Parameters(self.identity, self.expression, self.rotations, self.translation_m, self.cameras)

    def landmark_ibug(self) -> np.ndarray:
        """(T, 68, 2) the landmark model's iBUG counterparts."""
        return self.mu_px[:, [self.semantic_points[n] for n in IBUG_NAMES]]


def load_fitted_shot(folder: str | Path) -> FittedShot:
    """Read fit.npz, landmarks.npz and report.json of a result folder (first view only)."""
    from fitter_backend.landmarks.pipeline import LandmarkTrack

    folder = Path(folder)
    with np.load(folder / "fit.npz", allow_pickle=False) as fit:
        count = len(fit["focal_px"])
        cameras = Cameras(fit["image_size_px"].astype(np.float64), fit["focal_px"], fit["camera_rotation"],
                          fit["camera_translation_m"], np.zeros(count, bool), np.ones(count, bool))
        shot = dict(identity=fit["identity"], expression=fit["expression"], rotations=fit["joint_rotations"],
                    translation_m=fit["translation_m"], expression_names=tuple(str(n) for n in fit["expression_names"]),
                    flags=[str(f) for f in fit["frame_flags"]])
    track = LandmarkTrack.load_npz(folder / "landmarks.npz")
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return FittedShot(cameras=cameras, mu_px=track.mu_px[:, 0].astype(np.float64),
                      semantic_points=track.semantic_points, frame_indices=track.frame_indices, report=report,
                      **shot)
