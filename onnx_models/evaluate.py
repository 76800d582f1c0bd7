"""Figures of a dense landmark model: synthetic held-out NME per region, sigma calibration,
68-point NME on real annotated faces beside MediaPipe's, and onnxruntime speed.

    python -m onnx_models.evaluate --model onnx_models/models/dense_320_mobilenet_v2.onnx

Synthetic NME: mean |mu - truth| / crop side, in percent, on the cached validation set
(held-out identities), per region of the landmark set. Calibration: fraction of landmarks
with |error| <= k sigma for k = 1, 2, 3; a calibrated isotropic 2D Gaussian gives
1 - exp(-k^2 / 2) = 39.3, 86.5, 98.9 %.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import fitter_backend  # noqa: F401  (thread defaults)
from fitter_backend.landmarks import LandmarkModel
from onnx_models.dataset import DatasetSpec, load, resized
from onnx_models.synthetic import NEGATIVE_OFFSETS, negative_sample

GAUSSIAN_2D_COVERAGE = {k: 1 - np.exp(-k * k / 2) for k in (1, 2, 3)}
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "landmarks"


def synthetic_figures(model: LandmarkModel, data: dict, batch: int = 32, negatives: int = 200) -> dict:
    """NME (percent of the crop side) overall, per region, visible/hidden; sigma coverage;
    presence on the held-out heads and on ``negatives`` head-free crops."""
    size = model.input_size
    batches = [model.predict(data["images"][start:start + batch]) for start in range(0, len(data["images"]), batch)]
    mu, sigma, presence = (np.concatenate(column) for column in zip(*batches))
    errors = np.linalg.norm(mu - data["landmarks_px"], axis=-1)
    relative = errors / size
    visible = data["visible"]
    out = {"samples": len(errors), "nme_percent": float(100 * relative.mean()),
           "nme_visible_percent": float(100 * relative[visible].mean()),
           "nme_hidden_percent": float(100 * relative[~visible].mean()) if (~visible).any() else None,
           "per_region_nme_percent": {}, "sigma_coverage_percent": {}}
    for region, indices in model.metadata.regions.items():
        out["per_region_nme_percent"][region] = float(100 * relative[:, list(indices)].mean())
    # Per-axis sigma: |e| <= k sigma holds for 1 - exp(-k^2/2) of a calibrated isotropic Gaussian.
    ratio = errors / sigma
    for k in (1, 2, 3):
        out["sigma_coverage_percent"][f"{k}_sigma"] = {
            "all": float(100 * (ratio <= k).mean()), "visible": float(100 * (ratio[visible] <= k).mean()),
            "gaussian": float(100 * GAUSSIAN_2D_COVERAGE[k])}
    out["median_sigma_px"] = {"visible": float(np.median(sigma[visible])),
                              "hidden": float(np.median(sigma[~visible])) if (~visible).any() else None}
    if model.metadata.presence is not None:
        threshold = model.metadata.presence_threshold
        found = presence >= threshold
        empty = np.stack([negative_sample(NEGATIVE_OFFSETS["evaluation"] + k, size) for k in range(negatives)])
        rejected = model.predict(empty)[2] < threshold
        out["presence"] = {"heads_found_percent": float(100 * found.mean()),
                           "empty_rejected_percent": float(100 * rejected.mean()), "empty_crops": negatives}
    return out


def real_face_figures(model: LandmarkModel, fixtures: Path, mean_face_px: np.ndarray | None = None) -> dict:
    """68-point NME on the annotated fixture faces, this model beside MediaPipe's face mesh:
    each image is cropped around its annotated face (as ``fitter_backend.evaluation`` does, so
    crowd images give the annotated face), then both run from the same detector, each with the
    ROI its contract asks for (offline squares for MediaPipe; affine crops from the detector's
    keypoints for a model trained on them); the 68 points are the models' ``ibug_*`` semantic
    points. A face counts as found when the landmark stage marks it valid (presence above the
    threshold). ``mean_face_px`` (N, 2): the training set's mean landmarks in the model's crop,
    placed by the same first (detection) ROI: what the ROI alone gives, the network's baseline.
    ``nme68_aligned_percent``: after the best 2D similarity onto the annotation (shape error
    alone); ``median_size_ratio``: predicted face size over annotated (placement and size)."""
    from fitter_backend.evaluation.annotated import annotated_sets
    from fitter_backend.evaluation.label_translation import IBUG68, crop_around
    from fitter_backend.evaluation.nme import INNER_POINTS, box_size_px, inter_ocular_px, nme, similarity_aligned
    from fitter_backend.landmarks.pipeline import Landmarker
    from fitter_backend.model_setup import ensure_mediapipe_models
    from fitter_backend.roi import FaceDetector
    from fitter_backend.video.frames import Frame, open_video

    models = ensure_mediapipe_models(progress=lambda message: None)
    detector = FaceDetector.load(models["face_detector"])
    landmarkers = {"dense": Landmarker(model, detector),
                   "mediapipe_468": Landmarker(LandmarkModel.load(models["face_mesh_468"]), detector)}
    out = {}
    dense_ibug = [model.metadata.semantic_points[n] for n in IBUG68]
    for set_name, faces in annotated_sets(fixtures).items():
        row: dict = {"faces": len(faces)}
        found: dict[str, list] = {name: [] for name in [*landmarkers, *(["mean_face"] if mean_face_px is not None else [])]}
        for face in faces:
            image = next(iter(open_video(face.image_path))).image
            crop, origin = crop_around(image, face.points_px)
            frame = Frame(0, np.ascontiguousarray(crop), 0.0, 255 if image.dtype == np.uint8 else 65535)
            if mean_face_px is not None:
                first = landmarkers["dense"].new_tracker().detect(frame.image, frame.white_level).roi
                if first is not None:
                    placed = first.transform(model.input_size).to_image(mean_face_px)
                    found["mean_face"].append((placed[dense_ibug] + origin, face.points_px))
            for name, landmarker in landmarkers.items():
                landmarker.reset()
                result = landmarker.process([frame])[0]
                if result.valid:
                    semantic = landmarker.model.metadata.semantic_points
                    points = result.mu_px[[semantic[n] for n in IBUG68]].astype(float) + origin
                    found[name].append((points, face.points_px))
        for name, pairs in found.items():
            if not pairs:
                row[name] = {"found": 0}
                continue
            predicted, truth = np.array([p for p, _ in pairs]), np.array([t for _, t in pairs])
            eyes = inter_ocular_px(truth)
            aligned, scale = similarity_aligned(predicted, truth)
            row[name] = {"found": len(pairs), "nme68_percent": float(100 * nme(predicted, truth, eyes).mean()),
                         "nme51_percent": float(100 * nme(predicted, truth, eyes, INNER_POINTS).mean()),
                         "nme68_box_percent": float(100 * nme(predicted, truth, box_size_px(truth)).mean()),
                         "nme68_aligned_percent": float(100 * nme(aligned, truth, eyes).mean()),
                         "median_size_ratio": float(np.median(1 / scale))}
        out[set_name] = row
    return out


def detection_scale(data: dict, roi_scale: float = 1.15, count: int = 200) -> dict:
    """The crop side (``roi_scale`` x the landmarks' longer extent, as in training) over the
    longer side of BlazeFace's box on synthetic crops (upscaled 3x so the detector's 128 px
    input sees a typical face size): the contract's ``roi.scale_from_detection``."""
    import cv2

    from fitter_backend.model_setup import ensure_mediapipe_models
    from fitter_backend.roi import FaceDetector

    detector = FaceDetector.load(ensure_mediapipe_models(progress=lambda message: None)["face_detector"])
    ratios = []
    for image, points in zip(data["images"][:count], data["landmarks_px"][:count]):
        faces = detector.detect(cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR))
        if faces:
            extent = 3 * float((points.max(0) - points.min(0)).max())
            ratios.append(roi_scale * extent / max(faces, key=lambda f: f.size_px).size_px)
    return {"images": min(count, len(data["images"])), "found": len(ratios), "median": float(np.median(ratios)),
            "quartiles": [float(q) for q in np.percentile(ratios, [25, 75])]}


def speed_figures(model: LandmarkModel, repeats: int = 30) -> dict:
    """Median onnxruntime milliseconds per call at batch 1 and 8 (this machine, CPU)."""
    out = {}
    size = model.input_size
    for batch in (1, 8):
        tensor = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        feed = {model.metadata.input.name: tensor}
        model.session.run(None, feed)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.session.run(None, feed)
            times.append(time.perf_counter() - started)
        out[f"batch_{batch}_ms"] = float(1000 * np.median(times))
        out[f"batch_{batch}_ms_per_image"] = float(1000 * np.median(times) / batch)
    return out


def format_report(figures: dict) -> str:
    lines = []
    if "synthetic" in figures:
        s = figures["synthetic"]
        lines.append(f"synthetic held-out ({s['samples']} images): NME {s['nme_percent']:.2f} % of the crop side "
                     f"(visible {s['nme_visible_percent']:.2f}, hidden {s['nme_hidden_percent'] or float('nan'):.2f})")
        lines.append("  per region: " + ", ".join(f"{r} {v:.2f}" for r, v in s["per_region_nme_percent"].items()))
        lines.append("  |error| <= k sigma, all / visible (2D Gaussian): " + ", ".join(
            f"{k}: {v['all']:.1f} / {v['visible']:.1f} ({v['gaussian']:.1f})"
            for k, v in s["sigma_coverage_percent"].items()))
        if "presence" in s:
            pr = s["presence"]
            lines.append(f"  presence: {pr['heads_found_percent']:.1f} % of the heads found, "
                         f"{pr['empty_rejected_percent']:.1f} % of {pr['empty_crops']} head-free crops rejected")
    if "real" in figures:
        lines.append("real faces, 68-point NME % (inter-ocular; 51 inner; box; after a similarity alignment) "
                     "[median predicted / annotated size], dense vs MediaPipe 468 "
                     "(vs the training set's mean face in the dense model's first ROI):")
        for set_name, row in figures["real"].items():
            cells = []
            for name in [n for n in ("dense", "mediapipe_468", "mean_face") if n in row]:
                r = row[name]
                cells.append(f"{name} {r['found']}/{row['faces']} found" if "nme68_percent" not in r else
                             f"{name} {r['nme68_percent']:.2f} / {r['nme51_percent']:.2f} / {r['nme68_box_percent']:.2f}"
                             f" / {r['nme68_aligned_percent']:.2f} [{r['median_size_ratio']:.3f}] ({r['found']}/{row['faces']})")
            lines.append(f"  {set_name:<9} " + " | ".join(cells))
    if "speed" in figures:
        sp = figures["speed"]
        lines.append(f"onnxruntime CPU: batch 1 {sp['batch_1_ms']:.2f} ms, batch 8 {sp['batch_8_ms']:.2f} ms "
                     f"({sp['batch_8_ms_per_image']:.2f} ms/image)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_models.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX file (its .json beside it)")
    parser.add_argument("--val-count", type=int, default=500, help="cached validation samples to use")
    parser.add_argument("--data-size", type=int, default=128, help="side of the cached validation renders")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="annotated real faces (skipped if absent)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--detection-scale", action="store_true",
                        help="also measure roi.scale_from_detection on the synthetic crops")
    args = parser.parse_args(argv)
    model = LandmarkModel.load(args.model)
    meta = model.metadata
    figures = {"model": str(args.model)}
    val = load(DatasetSpec(meta.landmark_set, args.data_size, args.val_count, "val", meta.roi.crop))
    val_input = resized(val, meta.input.size_px)
    figures["synthetic"] = synthetic_figures(model, val_input)
    if args.detection_scale:
        figures["scale_from_detection"] = detection_scale(val)
        print(f"scale_from_detection: {figures['scale_from_detection']}")
    if args.fixtures.is_dir():
        figures["real"] = real_face_figures(model, args.fixtures, val_input["landmarks_px"].mean(axis=0))
    figures["speed"] = speed_figures(model)
    print(format_report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
