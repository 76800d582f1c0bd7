"""Whole-head accuracy on clips the project renders with known geometry.

The annotated photographs score only the face's 68 points. To see what landmarks off the
face add, the open head is rendered (random identity, talking, turning up to ``yaw_deg``)
and the end-to-end job runs on the clip with each landmark model. The fitted identity's
neutral head is then compared with the true one: whole-head rigid alignment (no scale, so
a wrong head size counts), then the median vertex distance per region in mm.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fitter_backend.bench.metrics import vertex_errors_mm
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices


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


def evaluate_clips(landmark_models: Sequence[str], seeds: Sequence[int], num_frames: int, yaw_deg: float,
                   size_px: int = 512,
                   progress: Callable[[str], None] | None = None) -> dict[str, list[dict[str, float]]]:
    """Per landmark model, one :func:`region_errors_mm` dict per rendered clip (seed) of the
    open head."""
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.pipeline import FitJob, fit_videos
    from fitter_backend.sample_clip import render_sample_clip, sample_performance

    model = load_head_model("open")

    results: dict[str, list[dict[str, float]]] = {name: [] for name in landmark_models}
    with tempfile.TemporaryDirectory(prefix="facecap-whole-head-") as folder:
        for seed in seeds:
            clip = render_sample_clip(model, Path(folder) / f"actor_{seed}.mp4", num_frames, size_px, seed, yaw_deg)
            _, true_identity = sample_performance(model, num_frames, seed, yaw_deg)
            for k, name in enumerate(landmark_models):
                if progress:
                    progress(f"clip {seed}: {name}")
                out = fit_videos(FitJob(videos=(clip,), out=Path(folder) / f"fit_{seed}_{k}", landmarks=name,
                                        previews=False))
                with np.load(out / "fit.npz", allow_pickle=False) as fit:
                    results[name].append(region_errors_mm(model, fit["identity"], true_identity))
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
