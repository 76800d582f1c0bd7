"""Whole-head accuracy on clips the project renders with known geometry.

The annotated photographs score only the face's 68 points. To see what landmarks off the
face add, the open head is rendered (random identity, talking, turning up to ``yaw_deg``)
and the end-to-end job runs on the clip with each landmark model. The fitted identity's
neutral head is then compared with the true one: whole-head rigid alignment (no scale, so
a wrong head size counts), then the median vertex distance per region in mm; and the
head's size, depth and focal length errors in % (:func:`scale_errors_pct`).
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fitter_backend.bench.metrics import vertex_errors_mm
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices, surface_points


def scored_regions(model: HeadModel) -> dict[str, np.ndarray]:
    """(V,) masks of the regions scored: the face, the ears, the rest of the head's skin
    (scalp, back of head, neck) and all skin together."""
    skin = model.skin
    face = model.regions["face"] & skin
    ears = model.regions["ears"] & skin if "ears" in model.regions else np.zeros_like(skin)
    return {"face": face, "ears": ears, "rest_of_head": skin & ~face & ~ears, "whole_head": skin}


def region_errors_mm(model: HeadModel, fitted_identity: np.ndarray, true_identity: np.ndarray) -> dict[str, float]:
    """Median distance (mm) per :func:`scored_regions` region between the neutral heads of two
    identities, the fitted one rigidly aligned on the whole head's skin."""
    regions = scored_regions(model)
    skin = regions["whole_head"]
    fitted = posed_vertices(model, np.asarray(fitted_identity))[0][skin]
    truth = posed_vertices(model, np.asarray(true_identity))[0][skin]
    distance = vertex_errors_mm(fitted, truth)
    return {name: float(np.median(distance[mask[skin]])) for name, mask in regions.items()}


def scale_errors_pct(model: HeadModel, fit: dict, true_identity: np.ndarray, true_vertices: np.ndarray,
                     true_focal_px: float) -> dict[str, float]:
    """Monocular scale figures of a fit (``fit.npz`` arrays) in %: head size (outer eye corners
    iBUG 36-45 apart on the neutral heads), depth (median over frames of the skin's mean
    distance along the optical axis; camera 0 is the world frame) and focal length."""
    corners = [model.semantic_points.names.index(f"ibug_{k}") for k in (36, 45)]
    picked = dataclasses.replace(model.semantic_points, triangle=model.semantic_points.triangle[corners],
                                 barycentric=model.semantic_points.barycentric[corners],
                                 names=tuple(model.semantic_points.names[k] for k in corners))

    def eye_distance(identity: np.ndarray) -> float:
        left, right = surface_points(posed_vertices(model, identity), model.triangles, picked)[0]
        return float(np.linalg.norm(left - right))

    skin = model.skin
    fitted = posed_vertices(model, fit["identity"], fit["expression"], fit["joint_rotations"], fit["translation_m"])
    depth_fit = np.median(-fitted[:, skin, 2].mean(axis=1))
    depth_true = np.median(-true_vertices[:, skin, 2].mean(axis=1))
    return {"size_%": 100 * (eye_distance(fit["identity"]) / eye_distance(true_identity) - 1),
            "depth_%": 100 * (depth_fit / depth_true - 1),
            "focal_%": 100 * (float(fit["focal_px"][0]) / true_focal_px - 1)}


def evaluate_clips(landmark_models: Sequence[str], seeds: Sequence[int], num_frames: int, yaw_deg: float,
                   size_px: int = 512,
                   progress: Callable[[str], None] | None = None) -> dict[str, list[dict[str, float]]]:
    """Per landmark model, one :func:`region_errors_mm` dict per rendered clip (seed) of the
    open head."""
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.pipeline import FitJob, fit_videos
    from fitter_backend.sample_clip import render_sample_clip, sample_clip_focal_px, sample_performance

    model = load_head_model("open")

    results: dict[str, list[dict[str, float]]] = {name: [] for name in landmark_models}
    with tempfile.TemporaryDirectory(prefix="facecap-whole-head-") as folder:
        for seed in seeds:
            clip = render_sample_clip(model, Path(folder) / f"actor_{seed}.mp4", num_frames, size_px, seed, yaw_deg)
            true_vertices, true_identity = sample_performance(model, num_frames, seed, yaw_deg)
            for k, name in enumerate(landmark_models):
                if progress:
                    progress(f"clip {seed}: {name}")
                out = fit_videos(FitJob(videos=(clip,), out=Path(folder) / f"fit_{seed}_{k}", landmarks=name,
                                        previews=False))
                with np.load(out / "fit.npz", allow_pickle=False) as data:
                    fit = {key: data[key] for key in data.files}
                results[name].append({**region_errors_mm(model, fit["identity"], true_identity),
                                      **scale_errors_pct(model, fit, true_identity, true_vertices,
                                                         sample_clip_focal_px(size_px))})
    return results


def format_table(results: dict[str, list[dict[str, float]]]) -> str:
    """Mean over clips of each region's median error, one row per landmark model."""
    regions = list(next(iter(results.values()))[0])
    width = max(len(name) for name in results) + 2
    lines = [f"{'landmarks':<{width}}" + "".join(f"{r:>14}" for r in regions) + "   clips"]
    for name, rows in results.items():
        lines.append(f"{name:<{width}}" + "".join(f"{np.mean([row[r] for row in rows]):>14.2f}" for r in regions)
                     + f"   {len(rows):>5}")
    return "\n".join(lines)
