"""Capture fidelity on clips the project renders with known blinks, winks, squints, wide eyes,
gaze shifts and jaw and lip motion (issue 13's evaluation, rendered half).

Each clip is the open head with a random identity turning up to ``yaw_deg``, performing a
fixed script of eye and mouth events (:func:`scripted_expressions`) and gaze shifts
(:func:`scripted_gaze`), rendered by the
project's rasteriser at a known focal length and distance, then fitted by the product's own
job (:func:`fitter_backend.pipeline.fit_videos`). The fit is compared with the truth:
lid openings, blink events and gaze per eye, the inner-lip gap, ARKit weights outside [0, 1],
head size, depth and focal, face shape (aligned with scale as NoW does, aligned without it, and
in camera space) and jitter; and the
landmark stage alone: how well its lid and lip gaps follow the true ones.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fitter_backend.bench.metrics import MM_PER_M, jitter_error_mm, rigid_align
from fitter_backend.evaluation.capture_measures import (
    ARKIT_EYE,
    BLINK_CLOSED,
    EYEBALL_INDEX,
    EYES,
    IBUG_NAMES,
    INNER_LIPS,
    correlation,
    event_recall_precision,
    eye_corner_distance_mm,
    gaze_correlation,
    gaze_error_deg,
    gap_and_width,
    head_frame_vertices,
    load_fitted_shot,
    opening_ratios,
    outside_unit_range,
    slope,
)
from fitter_backend.fitting.cameras import Cameras, focal_from_hfov, project
from fitter_backend.fitting.synthetic import _smooth_noise, performance
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices, surface_points

#: Per clip (cycled): camera distance in metres and horizontal field of view in degrees.
CLIP_SETUPS = ((0.6, 40.0), (0.75, 28.0), (0.5, 50.0))
BLINK_PROFILE = (0.4, 1.0, 1.0, 1.0, 0.4)
#: The script, as fractions of the clip: (start, what). Blinks and winks take
#: len(BLINK_PROFILE) frames; spans end at the next entry's start.
SCRIPT = ((0.06, "blink"), (0.16, "jaw"), (0.32, "wink_right"), (0.42, "squint"), (0.56, "wink_left"),
          (0.64, "wide"), (0.76, "blink"), (0.84, "talk"), (0.90, "blink"), (1.0, "end"))


def _bump(length: int) -> np.ndarray:
    """(length,) raised cosine from 0 up to 1 and back."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(length) + 0.5) / length)


def scripted_expressions(model: HeadModel, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(N, E) ARKit weights in [0, 1]: blinks, winks, a squint, wide eyes, a jaw opening and
    talking at the :data:`SCRIPT`'s times, with light lip motion throughout."""
    names = model.expression_names
    expression = np.zeros((num_frames, len(names)))

    def add(name: str, start: int, values: np.ndarray) -> None:
        stop = min(num_frames, start + len(values))
        expression[start:stop, names.index(name)] = np.maximum(expression[start:stop, names.index(name)],
                                                               values[: stop - start])

    for name, peak in (("mouthSmileLeft", 0.2), ("mouthSmileRight", 0.2), ("mouthFunnel", 0.2),
                       ("browInnerUp", 0.3)):
        add(name, 0, peak * np.clip(_smooth_noise(rng, num_frames, 1, 0.5, 2.0)[:, 0], 0, None))
    starts = [(int(round(f * num_frames)), what) for f, what in SCRIPT]
    blink = np.asarray(BLINK_PROFILE)
    for (start, what), (stop, _) in zip(starts[:-1], starts[1:]):
        span = _bump(stop - start)
        if what in ("blink", "wink_right", "wink_left"):
            sides = {"blink": ("Left", "Right"), "wink_right": ("Right",), "wink_left": ("Left",)}[what]
            for side in sides:
                add(f"eyeBlink{side}", start, blink)
        elif what == "jaw":
            add("jawOpen", start, 0.7 * span)
        elif what == "squint":
            for side in ("Left", "Right"):
                add(f"eyeSquint{side}", start, 0.8 * span)
                add(f"cheekSquint{side}", start, 0.4 * span)
        elif what == "wide":
            for side in ("Left", "Right"):
                add(f"eyeWide{side}", start, 0.8 * span)
        elif what == "talk":
            talk = np.clip(_smooth_noise(rng, stop - start, 3, 2.0, 5.0), 0, None)
            for k, (name, peak) in enumerate((("jawOpen", 0.6), ("mouthFunnel", 0.4), ("mouthClose", 0.1))):
                add(name, start, peak * talk[:, k])
    return expression


#: Gaze shifts on top of the performance's small eye motion, as fractions of the clip: (start,
#: stop, eye-joint axis-angle in radians): to the subject's left, to the right, then down.
#: Frames whose eyes look at least this far from straight ahead count as a gaze shift.
GAZE_SHIFT_DEG = 10.0
GAZE_SCRIPT = ((0.20, 0.30, (0.0, 0.35, 0.0)), (0.44, 0.54, (0.0, -0.35, 0.0)), (0.66, 0.74, (0.2, 0.0, 0.0)))


def scripted_gaze(num_frames: int) -> np.ndarray:
    """(N, 3) eye-joint rotations (both eyes) of :data:`GAZE_SCRIPT`, eased in and out."""
    gaze = np.zeros((num_frames, 3))
    for start, stop, rotation in GAZE_SCRIPT:
        first, last = int(round(start * num_frames)), int(round(stop * num_frames))
        gaze[first:last] += _bump(last - first)[:, None] * np.asarray(rotation)
    return gaze


def render_capture_clip(model: HeadModel, path: Path, num_frames: int, seed: int, yaw_deg: float,
                        size_px: int = 512) -> dict:
    """Render one scripted clip; returns its truth: identity, expression, vertices (N, V, 3)
    in camera 0's frame, cameras."""
    from fitter_backend.sample_clip import render_views

    rng = np.random.default_rng(seed)
    distance_m, hfov_deg = CLIP_SETUPS[(seed - 1) % len(CLIP_SETUPS)]
    identity, _, rotations, translation = performance(model, num_frames, rng, yaw_deg, distance_m)
    translation[:, 1] -= model.template[:, 1].mean()  # the head, not the neck base, on the optical axis
    expression = scripted_expressions(model, num_frames, rng)
    rotations[:, model.eyeball_joints] += scripted_gaze(num_frames)[:, None]
    vertices = posed_vertices(model, identity, expression, rotations, translation)
    cameras = Cameras.monocular(size_px, size_px, focal_px=focal_from_hfov(size_px, hfov_deg))
    render_views(model, vertices, cameras, [path])
    return {"identity": identity, "expression": expression, "rotations": rotations, "vertices": vertices,
            "cameras": cameras}


def _ibug(model: HeadModel, vertices: np.ndarray) -> np.ndarray:
    """(N, V, 3) -> (N, 68, 3) the head model's iBUG points."""
    return surface_points(vertices, model.triangles, model.semantic_points.subset(IBUG_NAMES))


def _rms_radius(points: np.ndarray) -> float:
    """(V, 3) -> RMS distance of the points from their centroid."""
    return float(np.sqrt(np.mean(np.sum((points - points.mean(axis=0)) ** 2, axis=1))))


def clip_figures(model: HeadModel, truth: dict, folder: Path) -> dict[str, float]:
    """Compare the fit in ``folder`` with ``truth`` (see :func:`render_capture_clip`)."""
    shot = load_fitted_shot(folder)
    fitted = posed_vertices(model, shot.identity, shot.expression, shot.rotations, shot.translation_m)
    true_v = truth["vertices"]
    names = model.expression_names
    out: dict[str, float] = {}
    true_px = project(_ibug(model, true_v), truth["cameras"], 0, derivatives=False).pixels
    true_pts = _ibug(model, head_frame_vertices(model, truth["identity"], truth["expression"], truth["rotations"]))
    fit_pts = _ibug(model, head_frame_vertices(model, shot.identity, shot.expression, shot.rotations))
    true_ratio, landmark_ratio = opening_ratios(true_px), opening_ratios(shot.landmark_ibug())
    # Gaze per eye (eyeball_joints order: left, right), fitted and with the eyes held straight ahead.
    gaze_fit = gaze_error_deg(model, shot.rotations, truth["rotations"])
    ahead = gaze_error_deg(model, np.zeros_like(shot.rotations), truth["rotations"])
    for side, feature in EYES.items():
        true_gap = gap_and_width(true_pts, feature)[0]
        fit_gap = gap_and_width(fit_pts, feature)[0]
        out[f"lid_corr_{side}"] = correlation(fit_gap, true_gap)
        blink_true = truth["expression"][:, names.index(f"eyeBlink{ARKIT_EYE[side]}")]
        blink_fit = shot.weight(f"eyeBlink{ARKIT_EYE[side]}")
        recall, precision, _, _ = event_recall_precision(blink_true >= BLINK_CLOSED, blink_fit >= BLINK_CLOSED)
        out[f"blink_recall_{side}"], out[f"blink_precision_{side}"] = recall, precision
        out[f"landmark_lid_corr_{side}"] = correlation(landmark_ratio[f"eye_{side}"], true_ratio[f"eye_{side}"])
        closed, still = blink_true >= BLINK_CLOSED, np.abs(true_gap - np.median(true_gap)) < 0.3e-3
        # How far a closed lid's gap falls, as a fraction of the open gap: truth, landmarks, fit.
        for what, series in (("true", true_ratio[f"eye_{side}"]), ("landmark", landmark_ratio[f"eye_{side}"]),
                             ("fitted", gap_and_width(fit_pts, feature)[0] / gap_and_width(fit_pts, feature)[1])):
            out[f"closed_over_open_{what}_{side}"] = float(np.median(series[closed]) / np.median(series[still]))
        out[f"eyeBlink_closed_{side}"] = float(np.median(blink_fit[closed]))
        # The script's other eye and cheek units: does the fitted weight follow the true one?
        for unit in ("eyeSquint", "eyeWide", "mouthSmile"):
            name = f"{unit}{ARKIT_EYE[side]}"
            out[f"{unit}_corr_{side}"] = correlation(shot.weight(name), truth["expression"][:, names.index(name)])
        # Gaze on open eyes and on those looking GAZE_SHIFT_DEG or more away.
        eye = EYEBALL_INDEX[side]
        shifted = ~closed & (ahead[:, eye] >= GAZE_SHIFT_DEG)
        for key, frames in (("gaze", ~closed), ("gaze_shift", shifted)):
            out[f"{key}_err_deg_{side}"] = float(np.median(gaze_fit[frames, eye]))
            out[f"{key}_ahead_err_deg_{side}"] = float(np.median(ahead[frames, eye]))
        out[f"gaze_corr_{side}"] = float(gaze_correlation(model, shot.rotations[~closed], truth["rotations"][~closed])[eye])
    true_mouth, fit_mouth = gap_and_width(true_pts, INNER_LIPS)[0], gap_and_width(fit_pts, INNER_LIPS)[0]
    out["mouth_corr"] = correlation(fit_mouth, true_mouth)
    out["landmark_mouth_corr"] = correlation(landmark_ratio["mouth"], true_ratio["mouth"])
    out["jawOpen_corr"] = correlation(shot.weight("jawOpen"), true_mouth)
    out["lips_apart_corr"] = correlation(shot.lips_apart(), true_mouth)
    for name in ("mouthFunnel", "browInnerUp"):
        out[f"{name}_corr"] = correlation(shot.weight(name), truth["expression"][:, names.index(name)])
    out["arkit_outside_pct"] = 100 * outside_unit_range(shot.expression)
    neutral_fit = posed_vertices(model, shot.identity)[0]
    neutral_true = posed_vertices(model, truth["identity"])[0]
    out["head_size_err_pct"] = 100 * (eye_corner_distance_mm(model, shot.identity)
                                      / eye_corner_distance_mm(model, truth["identity"]) - 1)
    face = model.regions["face"] & model.skin
    # The whole face's size (RMS distance from its centre), beside the eye corners alone.
    out["face_size_err_pct"] = 100 * (_rms_radius(neutral_fit[face]) / _rms_radius(neutral_true[face]) - 1)
    out["depth_err_pct"] = 100 * float(np.mean(fitted[:, face, 2].mean(1) / true_v[:, face, 2].mean(1)) - 1)
    out["focal_err_pct"] = 100 * float(shot.cameras.focal_px[0] / truth["cameras"].focal_px[0] - 1)
    for key, scale in (("shape_aligned_mm", True), ("shape_rigid_mm", False)):  # NoW aligns with scale
        out[key] = float(np.median(MM_PER_M * np.linalg.norm(
            rigid_align(neutral_fit[face], neutral_true[face], scale) - neutral_true[face], axis=-1)))
    out["shape_unaligned_mm"] = float(np.median(MM_PER_M * np.linalg.norm(fitted[:, face] - true_v[:, face], axis=-1)))
    out["jitter_added_mm"] = jitter_error_mm(fitted[:, face], true_v[:, face])
    # What the camera view shows: the fitted iBUG points over the true ones (a lag shows here).
    fitted_px = project(_ibug(model, fitted), shot.cameras, 0, derivatives=False).pixels
    out["image_err_px"] = float(np.median(np.linalg.norm(fitted_px - true_px, axis=-1)))
    # How far the mouth opens in the image against the truth (gap / width; 1 = full amplitude):
    # the fit can open it no further than the landmarks see it open.
    out["landmark_mouth_scale"] = slope(landmark_ratio["mouth"], true_ratio["mouth"])
    out["mouth_scale"] = slope(opening_ratios(fitted_px)["mouth"], true_ratio["mouth"])
    return out


def evaluate_rendered(landmark_models: Sequence[str], seeds: Sequence[int], num_frames: int, yaw_deg: float,
                      progress: Callable[[str], None] | None = None,
                      realtime: bool = False) -> dict[str, list[dict[str, float]]]:
    """Per landmark model, one :func:`clip_figures` dict per rendered clip (seed); fitted offline,
    or frame by frame as ``fit --realtime`` does."""
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.pipeline import FitJob, fit_videos

    model = load_head_model("open")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in landmark_models}
    with tempfile.TemporaryDirectory(prefix="facecap-capture-") as folder:
        for seed in seeds:
            clip = Path(folder) / f"capture_{seed}.mp4"
            truth = render_capture_clip(model, clip, num_frames, seed, yaw_deg)
            for k, name in enumerate(landmark_models):
                if progress:
                    progress(f"rendered clip {seed}: {name}")
                out = fit_videos(FitJob(videos=(clip,), out=Path(folder) / f"fit_{seed}_{k}", landmarks=name,
                                        realtime=realtime, previews=False))
                results[name].append(clip_figures(model, truth, out))
    return results


#: Rows of the printed table: (key prefix, label, target).
ROWS = (
    ("landmark_lid_corr", "landmarks: lid opening corr. with truth", ""),
    ("closed_over_open_true", "truth: closed / open lid gap", ""),
    ("closed_over_open_landmark", "landmarks: closed / open lid gap", ""),
    ("closed_over_open_fitted", "fit: closed / open lid gap", ""),
    ("lid_corr", "fit: lid opening corr. (mm)", ">= 0.8"),
    ("blink_recall", "fit: blink recall (events)", ">= 0.9"),
    ("blink_precision", "fit: blink precision (events)", ">= 0.9"),
    ("eyeBlink_closed", "fit: eyeBlink median, closed frames", ""),
    ("gaze_err_deg", "fit: gaze error, open eyes, deg", ""),
    ("gaze_ahead_err_deg", "eyes held ahead: gaze error, deg", ""),
    ("gaze_shift_err_deg", "fit: gaze error, shifts >= 10 deg", ""),
    ("gaze_shift_ahead_err_deg", "eyes held ahead: same frames, deg", ""),
    ("gaze_corr", "fit: gaze corr. with truth (x, y mean)", ""),
    ("eyeSquint_corr", "fit: eyeSquint corr. with truth", ""),
    ("eyeWide_corr", "fit: eyeWide corr. with truth", ""),
    ("mouthSmile_corr", "fit: mouthSmile corr. with truth", ""),
    ("mouthFunnel_corr", "fit: mouthFunnel corr. with truth", ""),
    ("browInnerUp_corr", "fit: browInnerUp corr. with truth", ""),
    ("landmark_mouth_corr", "landmarks: inner-lip gap corr.", ""),
    ("mouth_corr", "fit: inner-lip gap corr.", ""),
    ("landmark_mouth_scale", "landmarks: mouth opening / true, image", ""),
    ("mouth_scale", "fit: mouth opening / true, image", ""),
    ("jawOpen_corr", "fit: jawOpen corr. with true lip gap", ">= 0.8"),
    ("lips_apart_corr", "fit: jawOpen - mouthClose corr., same", ""),
    ("arkit_outside_pct", "fit: ARKit weights outside [0,1] %", "0"),
    ("head_size_err_pct", "fit: head size error % (eye corners)", "+-5"),
    ("face_size_err_pct", "fit: face size error % (RMS about centre)", ""),
    ("depth_err_pct", "fit: depth error %", ""),
    ("focal_err_pct", "fit: focal error %", "+-10"),
    ("shape_aligned_mm", "fit: face shape, NoW-aligned (+scale), mm", "<= 1.5"),
    ("shape_rigid_mm", "fit: face shape, aligned, no scale, mm", ""),
    ("shape_unaligned_mm", "fit: face, camera space, median mm", ""),
    ("jitter_added_mm", "fit: jitter added, mm/frame^2", ""),
    ("image_err_px", "fit: iBUG points in the image, median px", ""),
)


def format_table(results: dict[str, list[dict[str, float]]]) -> str:
    """Means over clips; per-eye rows show right / left."""
    models = list(results)
    width = max(24, *(len(m) for m in models)) + 2
    lines = [f"{'':<42}{'target':>9}  " + "".join(f"{m:>{width}}" for m in models)]
    for key, label, target in ROWS:
        cells = []
        for name in models:
            rows = results[name]
            if f"{key}_right" in rows[0]:
                values = [np.nanmean([r[f"{key}_{side}"] for r in rows]) for side in ("right", "left")]
                cells.append(f"{values[0]:.2f} / {values[1]:.2f}")
            else:
                cells.append(f"{np.nanmean([r[key] for r in rows]):.2f}")
        lines.append(f"{label:<42}{target:>9}  " + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)
