"""Where annotators put the iBUG points on the head model, against where its semantic points are.

Each annotated photograph is landmarked and fitted as a one-frame shot (label translation,
:mod:`fitter_backend.evaluation.label_translation`). The fitted head is rasterised in the
fitted camera; each annotated point's pixel hits a triangle, and the same triangle and
barycentric weights on the neutral mean head say where the annotator's point lies on the
model. Its offset from the model's semantic point, in the front view (x to the subject's
left, y up) and in units of the outer-eye-corner distance, averaged over the faces that see
it, is the systematic definition difference a head model's points should absorb.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fitter_backend.evaluation.label_translation import IBUG68, crop_around, fit_image
from fitter_backend.fitting.cameras import project
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices, surface_points
from fitter_backend.landmarks.calibrate import AnnotatedFace
from fitter_backend.landmarks.pipeline import FrameLandmarker
from fitter_backend.render.rasterise import rasterise
from fitter_backend.video.frames import Frame, open_video

#: The points issue 13 asks to check: eye corners, mouth corners (outer and inner), the
#: nose's tip and base, the chin.
CHECKED = (36, 39, 42, 45, 48, 54, 60, 64, 30, 31, 33, 35, 8)


def annotated_on_model(model: HeadModel, vertices: np.ndarray, cameras, annotated_px: np.ndarray,
                       size: tuple[int, int]) -> np.ndarray:
    """(68, 3) neutral-mean-head positions of the annotated pixels on the fitted head
    ``vertices`` (V, 3) (NaN where a pixel misses the head's skin)."""
    proj = project(vertices[None], cameras, 0, derivatives=False)
    raster = rasterise(np.column_stack([proj.pixels[0], -proj.camera_points[0, :, 2]]), model.triangles, size)
    cols = np.floor(annotated_px[:, 0]).astype(int)
    rows = np.floor(annotated_px[:, 1]).astype(int)
    inside = (cols >= 0) & (cols < size[0]) & (rows >= 0) & (rows < size[1])
    out = np.full((len(annotated_px), 3), np.nan)
    for k in np.flatnonzero(inside):
        triangle = raster.triangle_id[rows[k], cols[k]]
        if triangle >= 0 and model.skin[model.triangles[triangle]].all():
            out[k] = raster.barycentric[rows[k], cols[k]] @ model.template[model.triangles[triangle]]
    return out


def face_offsets(model: HeadModel, points: SurfacePoints, landmarker: FrameLandmarker,
                 faces: Sequence[AnnotatedFace], progress: Callable[[str], None] | None = None) -> np.ndarray:
    """(F, 68, 2) offsets (x, y) of each face's annotations from the model's semantic points on
    the neutral head, in outer-eye-corner distances; NaN where not seen or not found."""
    semantic = surface_points(posed_vertices(model), model.triangles, model.semantic_points.subset(IBUG68))[0]
    eye_distance = float(np.linalg.norm(semantic[45] - semantic[36]))
    out = np.full((len(faces), 68, 2), np.nan)
    for f, face in enumerate(faces):
        frame = next(iter(open_video(face.image_path)))
        crop, origin = crop_around(frame.image, face.points_px)
        fitted = fit_image(model, points, landmarker, Frame(0, np.ascontiguousarray(crop), 0.0, frame.white_level))
        if progress:
            progress(face.name)
        if fitted.fit is None:
            continue
        params = fitted.fit.params
        vertices = posed_vertices(model, params.identity, params.expression[0], params.rotations[0],
                                  params.translation_m[0])[0]
        on_model = annotated_on_model(model, vertices, params.cameras, face.points_px - origin,
                                      (crop.shape[1], crop.shape[0]))
        out[f] = (on_model - semantic)[:, :2] / eye_distance
    return out


def format_offsets(offsets: np.ndarray, checked: Sequence[int] = CHECKED) -> str:
    """Mean offset per point with its standard error and the faces that saw it."""
    lines = [f"{'point':<9}{'faces':>6}{'x (eye dist.)':>16}{'y (eye dist.)':>16}"]
    for k in checked:
        seen = offsets[:, k][np.isfinite(offsets[:, k, 0])]
        if len(seen) < 2:
            lines.append(f"ibug_{k:02d}{len(seen):>6}")
            continue
        mean, error = seen.mean(0), seen.std(0, ddof=1) / np.sqrt(len(seen))
        lines.append(f"ibug_{k:02d}{len(seen):>6}" + "".join(f"{m:>+10.3f} ±{e:.3f}" for m, e in zip(mean, error)))
    return "\n".join(lines)
