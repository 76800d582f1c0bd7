"""Figures of one fit result folder on a real clip, where no ground truth exists.

``python -m fitter_backend.evaluation.fit_figures RESULT_DIR [--blink 110,229-232] [--open-mouth 110,200]``
prints what the solver-side work of the capture-fidelity issue is judged by:

- the fraction of keyed ARKit weights outside [0, 1];
- the median normalised landmark residual (RMS of (x - mu) / sigma per frame; ~1 when
  sigma matches what the landmarks know);
- mouth opening: the correlation of jawOpen (and of the jaw bone's opening angle) with the
  landmarks' inner-lip gap (iBUG 62 to 66, pixels), and the fitted gap against the observed one;
- jitter: the RMS second difference over frames of the fitted iBUG-68 points, in pixels
  (and the same figure of the landmarks themselves, what the fit should smooth);
- eyeBlink and jawOpen at chosen frames.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fitter_backend.fitting.cameras import Cameras, project
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices, surface_points

UPPER_INNER_LIP, LOWER_INNER_LIP = "ibug_62", "ibug_66"


def _frames(spec: str) -> list[int]:
    """'110,229-232' -> [110, 229, 230, 231, 232]."""
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


def fitted_ibug_px(model: HeadModel, fit: dict) -> np.ndarray:
    """(N, 68, 2) the fitted head's iBUG points projected into camera 0."""
    vertices = posed_vertices(model, fit["identity"], fit["expression"], fit["joint_rotations"], fit["translation_m"])
    points = model.semantic_points
    names = [f"ibug_{k:02d}" for k in range(68)]
    index = np.array([points.names.index(name) for name in names])
    ibug = surface_points(vertices, model.triangles, points)[:, index]
    cameras = Cameras.create(fit["image_size_px"], fit["focal_px"], fit["camera_rotation"], fit["camera_translation_m"])
    return project(ibug, cameras, 0, derivatives=False).pixels


def jitter_px(points_px: np.ndarray) -> float:
    """RMS over frames and points of the second difference x[i+1] - 2 x[i] + x[i-1] (pixels)."""
    second = points_px[2:] - 2 * points_px[1:-1] + points_px[:-2]
    return float(np.sqrt(np.nanmean(np.sum(second ** 2, axis=-1))))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[keep], b[keep])[0, 1]) if keep.sum() > 2 and np.std(a[keep]) > 0 else float("nan")


def fit_figures(folder: Path, model: HeadModel, blink_frames: list[int], open_mouth_frames: list[int]) -> dict:
    with np.load(folder / "fit.npz", allow_pickle=False) as data:
        fit = {k: data[k] for k in data.files}
    with np.load(folder / "landmarks.npz", allow_pickle=False) as data:
        mu = data["mu_px"][:, 0].astype(np.float64)
        semantic = dict(zip(data["semantic_names"].tolist(), data["semantic_indices"].tolist()))
    report = json.loads((folder / "report.json").read_text())["fit"]
    names = list(fit["expression_names"])
    weights = fit["expression"][:, model.expression_bounded]
    observed = mu[:, [semantic[f"ibug_{k:02d}"] for k in range(68)]]
    fitted = fitted_ibug_px(model, fit)
    observed_gap = observed[:, 66, 1] - observed[:, 62, 1]
    fitted_gap = fitted[:, 66, 1] - fitted[:, 62, 1]
    jaw_open = fit["expression"][:, names.index("jawOpen")]
    jaw_angle = fit["joint_rotations"][:, model.joint_index("jaw"), 0]
    # The jaw bone opens the mouth by a positive or negative X rotation depending on the rig:
    # its sign is read from the correlation, its share from a least-squares fit of the gap.
    opening = np.stack([jaw_open, jaw_angle, np.ones_like(jaw_open)], axis=1)
    keep = np.isfinite(observed_gap)
    coefficients = np.linalg.lstsq(opening[keep], observed_gap[keep], rcond=None)[0]
    open_frames = np.flatnonzero(observed_gap > np.nanpercentile(observed_gap, 90))
    blink = [names.index("eyeBlinkLeft"), names.index("eyeBlinkRight")]
    return {
        "frames": int(len(jaw_open)),
        "energy_initial": report.get("energy_initial"), "energy_final": report.get("energy_final"),
        "median_frame_rms": report.get("median_frame_rms"),
        "focal_px": float(fit["focal_px"][0]),
        "arkit_outside_0_1": float(np.mean((weights < 0) | (weights > 1))),
        "arkit_min": float(weights.min()), "arkit_max": float(weights.max()),
        "r_jawOpen_gap": _correlation(jaw_open, observed_gap),
        "r_jaw_bone_gap": _correlation(jaw_angle, observed_gap),
        "r_jaw_combined_gap": _correlation(opening[:, :2] @ coefficients[:2], observed_gap),
        "r_fitted_gap": _correlation(fitted_gap, observed_gap),
        "open_frames_gap_ratio": float(np.median(fitted_gap[open_frames] / observed_gap[open_frames])),
        "jitter_fit_px": jitter_px(fitted), "jitter_landmarks_px": jitter_px(observed),
        "eyeBlink_at": {int(i): [round(float(fit["expression"][i, b]), 3) for b in blink]
                        for i in blink_frames if i < len(jaw_open)},
        "jawOpen_at": {int(i): [round(float(jaw_open[i]), 3), round(float(jaw_angle[i]), 3),
                                round(float(fitted_gap[i]), 1), round(float(observed_gap[i]), 1)]
                       for i in open_mouth_frames if i < len(jaw_open)},
    }


def main(argv: list[str] | None = None) -> None:
    from fitter_backend.head_models.loading import load_head_model

    parser = argparse.ArgumentParser(prog="python -m fitter_backend.evaluation.fit_figures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="fit result folders (fit.npz, landmarks.npz)")
    parser.add_argument("--head", default="open")
    parser.add_argument("--blink", default="", help="frames with closed eyes, e.g. 110,229-232")
    parser.add_argument("--open-mouth", default="", help="frames with an open mouth, e.g. 110,200 "
                        "(printed: jawOpen, jaw bone X angle, fitted and observed inner-lip gap px)")
    args = parser.parse_args(argv)
    model = load_head_model(args.head)
    for folder in args.folders:
        figures = fit_figures(folder, model, _frames(args.blink), _frames(args.open_mouth))
        print(folder)
        for key, value in figures.items():
            print(f"  {key:<24} {value:.4g}" if isinstance(value, float) else f"  {key:<24} {value}")


if __name__ == "__main__":
    main()
