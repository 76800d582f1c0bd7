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
- eyeBlink and jawOpen at chosen frames;
- with ``--regions``: per landmark region, sigma against the residual's constant offset
  (semantic bias) and its variation over frames (tracking precision).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fitter_backend.evaluation.capture_measures import correlation, load_fitted_shot
from fitter_backend.evaluation.label_translation import label_points_px
from fitter_backend.fitting.cameras import project
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


def jitter_px(points_px: np.ndarray) -> float:
    """RMS over frames and points of the second difference x[i+1] - 2 x[i] + x[i-1] (pixels)."""
    second = points_px[2:] - 2 * points_px[1:-1] + points_px[:-2]
    return float(np.sqrt(np.nanmean(np.sum(second ** 2, axis=-1))))


def fit_figures(folder: Path, model: HeadModel, blink_frames: list[int], open_mouth_frames: list[int]) -> dict:
    shot = load_fitted_shot(folder)
    report = shot.report["fit"]
    weights = shot.expression[:, model.expression_bounded]
    observed = shot.landmark_ibug()
    fitted = label_points_px(model, shot.params)
    observed_gap = observed[:, 66, 1] - observed[:, 62, 1]
    fitted_gap = fitted[:, 66, 1] - fitted[:, 62, 1]
    jaw_open = shot.weight("jawOpen")
    jaw_angle = shot.rotations[:, model.joint_index("jaw"), 0]
    # The jaw bone opens the mouth by a positive or negative X rotation depending on the rig:
    # its sign is read from the correlation, its share from a least-squares fit of the gap.
    opening = np.stack([jaw_open, jaw_angle, np.ones_like(jaw_open)], axis=1)
    keep = np.isfinite(observed_gap)
    coefficients = np.linalg.lstsq(opening[keep], observed_gap[keep], rcond=None)[0]
    open_frames = np.flatnonzero(observed_gap > np.nanpercentile(observed_gap, 90))
    blink = [shot.weight("eyeBlinkLeft"), shot.weight("eyeBlinkRight")]
    return {
        "frames": int(len(jaw_open)),
        "energy_initial": report.get("energy_initial"), "energy_final": report.get("energy_final"),
        "median_frame_rms": report.get("median_frame_rms"),
        "focal_px": float(shot.cameras.focal_px[0]),
        "arkit_outside_0_1": float(np.mean((weights < 0) | (weights > 1))),
        "arkit_min": float(weights.min()), "arkit_max": float(weights.max()),
        "r_jawOpen_gap": correlation(jaw_open, observed_gap),
        "r_jaw_bone_gap": correlation(jaw_angle, observed_gap),
        "r_jaw_combined_gap": correlation(opening[:, :2] @ coefficients[:2], observed_gap),
        "r_fitted_gap": correlation(fitted_gap, observed_gap),
        "open_frames_gap_ratio": float(np.median(fitted_gap[open_frames] / observed_gap[open_frames])),
        "jitter_fit_px": jitter_px(fitted), "jitter_landmarks_px": jitter_px(observed),
        "eyeBlink_at": {int(i): [round(float(b[i]), 3) for b in blink]
                        for i in blink_frames if i < len(jaw_open)},
        "jawOpen_at": {int(i): [round(float(jaw_open[i]), 3), round(float(jaw_angle[i]), 3),
                                round(float(fitted_gap[i]), 1), round(float(observed_gap[i]), 1)]
                       for i in open_mouth_frames if i < len(jaw_open)},
    }


def residual_by_region(folder: Path, model: HeadModel, landmark_model: str) -> dict[str, dict[str, float]]:
    """Per MediaPipe region (plus ``other`` face points and ``head`` points of a combination):
    the landmarks' sigma, and their residual against the fit split into the shot's constant
    offset per landmark (``bias``: semantic mismatch, what the identity absorbs) and what
    varies over frames (``noise``: the precision that matters for tracking), all as fractions
    of the ROI side like the SIGMA table; ``rms_z`` the RMS of residual / sigma per axis."""
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.embedding import landmark_embedding
    from fitter_backend.paths import data_dir

    landmarker = load_landmarker(landmark_model, progress=lambda m: None)
    points = landmark_embedding(model, landmarker, progress=lambda m: None)
    shot = load_fitted_shot(folder)
    with np.load(folder / "landmarks.npz", allow_pickle=False) as data:
        sigma = data["sigma_px"][:, 0].astype(np.float64)
        roi = data["roi_size_px"][:, 0].astype(np.float64)
    mu = shot.mu_px
    vertices = posed_vertices(model, shot.identity, shot.expression, shot.rotations, shot.translation_m)
    fitted = project(surface_points(vertices, model.triangles, points), shot.cameras, 0, derivatives=False).pixels
    residual = (fitted - mu) / roi[:, None, None]
    bias = np.nanmean(residual, axis=0)
    regions = {k: v for k, v in json.loads((data_dir() / "models" / "mediapipe_regions.json").read_text()).items()
               if max(v) < 468}
    listed = {i for v in regions.values() for i in v}
    regions["other"] = [i for i in range(min(468, mu.shape[1])) if i not in listed]
    if mu.shape[1] > 468:
        regions["head"] = list(range(468, mu.shape[1]))

    def rms(values: np.ndarray) -> float:
        return float(np.sqrt(np.nanmean(np.sum(values ** 2, axis=-1)) / 2))

    return {name: {"sigma": float(np.nanmedian(sigma[:, index] / roi[:, None])), "total": rms(residual[:, index]),
                   "noise": rms(residual[:, index] - bias[index]), "bias": rms(bias[index]),
                   "rms_z": rms((fitted - mu)[:, index] / sigma[:, index, None])}
            for name, index in ((k, np.array(v)) for k, v in regions.items())}


def main(argv: list[str] | None = None) -> None:
    from fitter_backend.head_models.loading import load_head_model

    parser = argparse.ArgumentParser(prog="python -m fitter_backend.evaluation.fit_figures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="fit result folders (fit.npz, landmarks.npz)")
    parser.add_argument("--head", default="open")
    parser.add_argument("--blink", default="", help="frames with closed eyes, e.g. 110,229-232")
    parser.add_argument("--open-mouth", default="", help="frames with an open mouth, e.g. 110,200 "
                        "(printed: jawOpen, jaw bone X angle, fitted and observed inner-lip gap px)")
    parser.add_argument("--regions", metavar="LANDMARKS", default="",
                        help="also print sigma and the residual's bias/noise split per region for this "
                             "landmark model (e.g. face_mesh_468+dense_320_mobilenet_v2)")
    args = parser.parse_args(argv)
    model = load_head_model(args.head)
    for folder in args.folders:
        figures = fit_figures(folder, model, _frames(args.blink), _frames(args.open_mouth))
        print(folder)
        for key, value in figures.items():
            print(f"  {key:<24} {value:.4g}" if isinstance(value, float) else f"  {key:<24} {value}")
        if args.regions:
            print(f"  {'region (ROI fraction)':<24}" + "".join(f"{k:>9}" for k in ("sigma", "total", "noise", "bias", "rms_z")))
            for name, row in residual_by_region(folder, model, args.regions).items():
                print(f"  {name:<24}" + "".join(f"{v:>9.4f}" for v in row.values()))


if __name__ == "__main__":
    main()
