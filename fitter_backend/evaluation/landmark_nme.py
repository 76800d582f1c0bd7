"""NME of the pipeline on the annotated fixture sets: the fitted head's iBUG-68 points
(label translation) and, beside them, the landmark model's own points mapped to iBUG-68."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from fitter_backend.evaluation.label_translation import IBUG68, crop_around, fit_image, label_points_px
from fitter_backend.evaluation.nme import INNER_POINTS, box_size_px, inter_ocular_px, nme
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.landmarks.calibrate import AnnotatedFace
from fitter_backend.landmarks.pipeline import FrameLandmarker
from fitter_backend.video.frames import Frame, open_video

#: The two readings of 68 points compared (keys of FaceResult.predicted_px): the fitted
#: head's semantic points ("fit") and the landmark model's own points at their iBUG
#: counterparts ("raw", where its metadata names them, as MediaPipe's does).
METHODS = ("fit", "raw")


@dataclasses.dataclass
class FaceResult:
    """One annotated face: ground truth and predictions (68, 2) in image pixels; ``predicted_px``
    is empty when no usable face was found. fit_rms: the fit's normalised residual."""

    set_name: str
    name: str
    truth_px: np.ndarray
    predicted_px: dict[str, np.ndarray]
    fit_rms: float = float("nan")


def evaluate_face(set_name: str, face: AnnotatedFace, model: HeadModel, points: SurfacePoints,
                  landmarker: FrameLandmarker, full_image: bool = False) -> FaceResult:
    """Crop to the annotated face (or, with ``full_image``, let the landmark stage find it in
    the whole image, as ``fit`` does), run landmarks and a one-frame fit, read the 68 points
    two ways."""
    frame = next(iter(open_video(face.image_path)))
    if full_image:
        crop, origin = frame.image, np.zeros(2)
    else:
        crop, origin = crop_around(frame.image, face.points_px)
    fitted = fit_image(model, points, landmarker, Frame(0, np.ascontiguousarray(crop), 0.0, frame.white_level))
    if fitted.fit is None:
        return FaceResult(set_name, face.name, face.points_px, {})
    semantic = landmarker.semantic_points
    predicted = {"fit": label_points_px(model, fitted.fit.params)[0] + origin}
    if all(name in semantic for name in IBUG68):
        predicted["raw"] = fitted.landmarks.mu_px[[semantic[name] for name in IBUG68]].astype(float) + origin
    return FaceResult(set_name, face.name, face.points_px, predicted, float(fitted.fit.frame_rms[0]))


def evaluate_sets(faces_by_set: dict[str, list[AnnotatedFace]], model: HeadModel, points: SurfacePoints,
                  landmarker: FrameLandmarker, limit: int | None = None,
                  progress: Callable[[str], None] | None = None, full_image: bool = False) -> list[FaceResult]:
    """Every face of every set (see :func:`~fitter_backend.evaluation.annotated.annotated_sets`),
    at most ``limit`` per set; ``full_image``: see :func:`evaluate_face`."""
    results = []
    for set_name, faces in faces_by_set.items():
        for face in faces[:limit]:
            results.append(evaluate_face(set_name, face, model, points, landmarker, full_image))
            if progress:
                progress(face.name)
    return results


def summarise(results: list[FaceResult]) -> dict:
    """Per set: faces, faces found, and per method the mean NME in percent over the found
    faces: 68 points and the 51 inner ones by the inter-ocular distance, 68 by the box size."""
    summary = {}
    for set_name in dict.fromkeys(r.set_name for r in results):
        chosen = [r for r in results if r.set_name == set_name]
        found = [r for r in chosen if r.predicted_px]
        entry: dict = {"faces": len(chosen), "found": len(found)}
        for method in METHODS:
            have = [r for r in found if method in r.predicted_px]
            if not have:
                continue
            truth = np.array([r.truth_px for r in have])
            predicted = np.array([r.predicted_px[method] for r in have])
            eyes, box = inter_ocular_px(truth), box_size_px(truth)
            per_face = nme(predicted, truth, eyes)
            entry[method] = {
                "nme68_percent": float(100 * per_face.mean()),
                "nme51_percent": float(100 * nme(predicted, truth, eyes, INNER_POINTS).mean()),
                "nme68_box_percent": float(100 * nme(predicted, truth, box).mean()),
                "per_face_nme68_percent": {r.name: round(float(100 * v), 2) for r, v in zip(have, per_face)},
            }
        rms = [r.fit_rms for r in found if np.isfinite(r.fit_rms)]
        entry["median_fit_rms"] = float(np.median(rms)) if rms else None
        summary[set_name] = entry
    return summary


def format_table(summary: dict) -> str:
    """The summary as a fixed-width text table (NME in percent)."""
    header = (f"{'set':<10}{'faces':>7}  {'fit NME68':>10}{'NME51':>8}{'box':>7}  "
              f"{'raw NME68':>16}{'NME51':>8}{'box':>7}")
    lines = [header, "-" * len(header)]

    def cells(entry: dict | None) -> str:
        if entry is None:
            return f"{'-':>10}{'-':>8}{'-':>7}"
        return f"{entry['nme68_percent']:>10.2f}{entry['nme51_percent']:>8.2f}{entry['nme68_box_percent']:>7.2f}"

    for set_name, entry in summary.items():
        faces = f"{entry['found']}/{entry['faces']}"
        lines.append(f"{set_name:<10}{faces:>7}  {cells(entry.get('fit'))}  {'':>6}{cells(entry.get('raw'))}")
    return "\n".join(lines)
