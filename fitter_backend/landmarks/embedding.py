"""Where a landmark model's points lie on a head model's surface, computed by the project.

The head is rendered (clay, several views) with the project's rasteriser, the landmark
model runs on the renders like on any photo, and each predicted point is looked up in the
raster: which triangle, where in it. A point's rest position is the median over the views
that see its surface head-on, snapped back to the closest point of the surface. This works
for any head model (the open head, FLAME) and uses no third-party correspondence files.

A model's inner-lip contours (metadata ``contours``) are placed differently: on a closed
mouth a landmark model marks the line where the lips meet, on an open one the edge of the
opening, and a render of the closed rest head can only show the first. MediaPipe, for
example, put its inner-lip points 1.1 mm apart on the closed head and its lower points next to
the corners on the upper lip, so a fit kept the head's mouth about 2 mm more closed than the
landmarks saw and crossed the lips on closed mouths. Those points go onto the head's own inner-lip
edge (its iBUG points 60-67, found on the parted lips), at the same fraction of the mouth's
width, on the lip they belong to (:func:`place_inner_lips`); the corners keep their place.

A model's iris centres (semantic points ``iris_centre_L`` / ``iris_centre_R``) go onto the
eyeballs' pupils (:func:`place_on_eyeballs`): a clay render shows no iris, and there they turn
with the eye joints, so the fit follows the actor's gaze.

Some points do not follow the skin they lie on: with the eyes shut, MediaPipe keeps the points
above the lids where they were while the lid skin slides down under them. Set-up renders the
head with its eyes closed too and gives each such point a second place, where it lies then
(``SurfacePoints.eyes_closed``, :func:`place_closed_eyes`); the fitter moves it there as the
eye closes (fitting/closed_eyes.py).

Each point also records its spread (``SurfacePoints.spread_m``): how far apart the views put it
on the same head, RMS about their median. A point that wanders (MediaPipe's cheeks and face
oval slide with pose) is explained by no single place on the surface, and the fitter widens its
sigma by that much (fitting/placement.py).

This is set-up work: ``python -m fitter_backend setup`` (and ``setup --head HEAD`` for another
head) computes it once per (head model, landmark model) into ``<data_dir>/embeddings/``; a fit
job only loads it (:func:`load_embedding`) and fails clearly when it is missing or damaged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from fitter_backend import paths
from fitter_backend.head_models.correspondence import MeshSurface, embed_points
from fitter_backend.head_models.eyes import BLINK_UNITS, eyeball_vertices, has_blinks, pupil_surface_points
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices, surface_points
from fitter_backend.head_models.open_head.semantic_points import MOUTH_OPENING
from fitter_backend.landmarks.combined import CombinedLandmarker
from fitter_backend.models.errors import LandmarkModelError
from fitter_backend.landmarks.pipeline import Landmarker
from fitter_backend.render.head_png import render_clay
from fitter_backend.render.shading import vertex_normals
from fitter_backend.video.frames import Frame

EMBEDDING_VERSION = 4
VIEWS_DEG = ((0.0, 0.0), (-25.0, 0.0), (25.0, 0.0), (0.0, -12.0), (0.0, 12.0), (-12.0, 8.0), (12.0, -8.0))
#: The closed-eye renders (:func:`place_closed_eyes`): both lids shut, seen from the front and
#: from either side (the first three of VIEWS_DEG, so the open head's views compare).
CLOSED_VIEWS_DEG = VIEWS_DEG[:3]
#: A point slides where the closing lids move its skin by more than this and the landmark model
#: puts it this much further from it than on the open head.
SLIDE_MIN_M = 0.003
#: ... and moves the point itself by less than this fraction of its skin's way.
STILL_FRACTION = 0.5
RENDER_SIZE_PX = 512
MIN_FACING = 0.35  # cosine between the surface normal and the direction to the camera
#: The head's iBUG inner-lip points along each contour (subject's right corner to left) and the
#: region whose triangles carry that contour's points (all skin where a head lacks the region).
HEAD_INNER_LIPS = {"inner_lip_upper": ((60, 61, 62, 63, 64), "lips_upper"),
                   "inner_lip_lower": ((60, 67, 66, 65, 64), "lips_lower")}
JAW_PARTING_RAD = 0.2  # for heads without a jawOpen unit: the jaw joint's opening
#: Semantic points of a landmark model that lie on an eyeball, by eyeball (the head's
#: ``eyeball_joints`` order: left, right).
EYEBALL_POINTS = {"iris_centre_L": 0, "iris_centre_R": 1}


def _cache_path(model: HeadModel, landmarker: Landmarker) -> Path:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(model.template).tobytes())
    digest.update(np.ascontiguousarray(model.triangles).tobytes())
    digest.update(json.dumps([EMBEDDING_VERSION, VIEWS_DEG, landmarker.metadata.name,
                              landmarker.metadata.num_landmarks, landmarker.metadata.contours]).encode())
    for path in landmarker.model_files():  # a re-converted network places its points anew
        digest.update(paths.sha256_file(path).encode())
    name = f"{model.name}-{landmarker.metadata.name}-{digest.hexdigest()[:12]}.npz"
    return paths.data_dir() / "embeddings" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def observe_views(model: HeadModel, landmarker: Landmarker, expression: np.ndarray | None = None,
                  views_deg: tuple[tuple[float, float], ...] = VIEWS_DEG) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each predicted point falls on the head (K views, N points, 3), NaN where it fell off
    the head: on the rest head (the surface spot it hit, at its neutral place) and on the head as
    rendered with ``expression`` (E,); and the facing cosines (K, N) of the surface there (0 off
    the head)."""
    rest = posed_vertices(model)[0]
    posed = rest if expression is None else posed_vertices(model, None, expression)[0]
    num = landmarker.metadata.num_landmarks
    on_rest = np.full((len(views_deg), num, 3), np.nan)
    on_posed = np.full((len(views_deg), num, 3), np.nan)
    facing = np.zeros((len(views_deg), num))
    for k, (yaw, pitch) in enumerate(views_deg):
        image, raster, vertices_cam, _ = render_clay(model, posed, RENDER_SIZE_PX, yaw, pitch, fov_deg=20.0)
        landmarker.reset()
        result = landmarker.process([Frame(0, np.ascontiguousarray(image[..., ::-1]), 0.0, 255)])[0]
        if not result.valid:
            continue
        seen = np.isfinite(result.mu_px).all(axis=1)  # a point reported missing (an iris under a lid)
        pixels = np.floor(np.where(seen[:, None], result.mu_px, 0.0)).astype(int)
        cols = np.clip(pixels[:, 0], 0, RENDER_SIZE_PX - 1)
        rows = np.clip(pixels[:, 1], 0, RENDER_SIZE_PX - 1)
        triangle = raster.triangle_id[rows, cols]
        hit = seen & (triangle >= 0)
        bary = raster.barycentric[rows, cols]
        corners = model.triangles[np.maximum(triangle, 0)]
        normals = vertex_normals(vertices_cam, model.triangles)[corners].mean(1)
        centres = np.einsum("nk,nkc->nc", bary, vertices_cam[corners])
        with np.errstate(invalid="ignore", divide="ignore"):  # pixels off the head have no normal
            cosine = np.einsum("nc,nc->n", normals / np.linalg.norm(normals, axis=1, keepdims=True),
                               -centres / np.linalg.norm(centres, axis=1, keepdims=True))
        on_rest[k, hit] = np.einsum("nk,nkc->nc", bary, rest[corners])[hit]
        on_posed[k, hit] = np.einsum("nk,nkc->nc", bary, posed[corners])[hit]
        facing[k] = np.where(hit, cosine, 0.0)
    return on_rest, on_posed, facing


def compute_embedding(model: HeadModel, landmarker: Landmarker) -> SurfacePoints:
    positions, _, facing = observe_views(model, landmarker)
    hit = np.isfinite(positions[..., 0])
    if not hit.any(axis=0).all():
        raise LandmarkModelError(
            f"the landmark model {landmarker.metadata.name!r} did not find the face of head model "
            f"{model.name!r} in its renders; cannot place {int((~hit.any(axis=0)).sum())} of its points on the head")
    positions = head_on_positions(positions, facing)
    median = np.nanmedian(positions, axis=0)
    surface = MeshSurface(posed_vertices(model)[0], model.triangles, model.skin[model.triangles].all(axis=1))
    names = tuple(f"{landmarker.metadata.landmark_set}_{k:03d}" for k in range(len(median)))
    points = place_inner_lips(model, embed_points(median, names, surface), landmarker.metadata.contours)
    points, on_eyeballs = place_on_eyeballs(model, points, landmarker.metadata.semantic_points)
    spread = view_spread(positions)
    spread[on_eyeballs] = 0.0  # placed by construction, not by the renders
    points = dataclasses.replace(points, spread_m=spread)
    return place_closed_eyes(model, landmarker, points, positions, on_eyeballs)


def place_closed_eyes(model: HeadModel, landmarker: Landmarker, points: SurfacePoints, neutral_rest: np.ndarray,
                      fixed: np.ndarray) -> SurfacePoints:
    """``points`` with ``eyes_closed`` set where the landmark model does not follow the lid skin.

    Rendered with both eyes shut (the blink units), MediaPipe keeps the points above the lids
    (its second and third rings round the eye) about where they were, while the head's lid skin
    slides down under them: 4-7 mm from where their embedding went, against 1-2.5 mm on the open
    head, and unevenly (the left eye's third ring slides, the right one's does not). A fit then
    held the lids open to keep those points in place. A point on skin the lids move, which the
    landmark model moves by less than half as much, and whose closed-eye distance from its embedding exceeds the open head's in the same views by
    :data:`SLIDE_MIN_M` (in quadrature) gets, as its closed placement, the rest-head spot the
    closed-eye renders put it on (their median); the fitter moves it there as that eye closes. ``neutral_rest`` (K views, N, 3) are the open head's
    head-on observations; ``fixed`` points (placed by construction) never slide.
    """
    names = model.expression_names
    if not has_blinks(model):
        return points
    expression = np.zeros(len(names))
    for unit in BLINK_UNITS:
        expression[names.index(unit)] = 1.0
    rest_head = posed_vertices(model)[0]
    closed_head = posed_vertices(model, None, expression)[0]
    closed_rest, closed_posed, facing = observe_views(model, landmarker, expression, CLOSED_VIEWS_DEG)
    closed_rest = head_on_positions(closed_rest, facing)
    closed_posed = np.where(np.isfinite(closed_rest), closed_posed, np.nan)

    def rms_distance(observed: np.ndarray, embedded: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a point no view saw: NaN
            return np.sqrt(np.nanmean(np.sum((observed - embedded[None]) ** 2, axis=-1), axis=0))

    open_place = surface_points(rest_head[None], model.triangles, points)[0]
    closed_place = surface_points(closed_head[None], model.triangles, points)[0]
    open_views = neutral_rest[:len(CLOSED_VIEWS_DEG)]             # the same views, eyes open
    open_m = rms_distance(open_views, open_place)
    closed_m = rms_distance(closed_posed, closed_place)
    # Only where the closing lids move the skin (elsewhere a difference is the views', not the
    # lids') and the landmark model leaves the point where it was: it marks the lid's edge too,
    # but follows it (short of the head's closed edge, which is MediaPipe's bias, not a slide).
    skin_m = np.linalg.norm(closed_place - open_place, axis=1)
    landmark_m = rms_distance(closed_posed - open_views, np.zeros(3))
    still = np.nan_to_num(landmark_m, nan=np.inf) < STILL_FRACTION * skin_m
    slides = (skin_m > SLIDE_MIN_M) & still & (np.nan_to_num(closed_m ** 2 - open_m ** 2, nan=0.0) > SLIDE_MIN_M ** 2)
    slides[fixed] = False
    if not slides.any():
        return points
    rows = np.flatnonzero(slides)
    targets = np.nanmedian(closed_rest[:, rows], axis=0)  # each seen in some view (its distance is finite)
    surface = MeshSurface(rest_head, model.triangles, model.skin[model.triangles].all(axis=1))
    moved = embed_points(targets, tuple(points.names[k] for k in rows), surface)
    triangle, barycentric = points.triangle.copy(), points.barycentric.copy()
    triangle[rows], barycentric[rows] = moved.triangle, moved.barycentric
    return dataclasses.replace(points, eyes_closed=SurfacePoints(triangle, barycentric, points.names))


def place_on_eyeballs(model: HeadModel, points: SurfacePoints, semantic_points: dict[str, int]
                      ) -> tuple[SurfacePoints, np.ndarray]:
    """``points`` with those named in :data:`EYEBALL_POINTS` moved onto their eyeball's pupil
    (:func:`~fitter_backend.head_models.eyes.pupil_surface_points`), and their indices."""
    wanted = [(semantic_points[name], eye) for name, eye in EYEBALL_POINTS.items() if name in semantic_points]
    if not wanted:
        return points, np.zeros(0, int)
    if any(len(ids) == 0 for ids in eyeball_vertices(model)):
        raise LandmarkModelError(f"head model {model.name!r} has no eyeballs to place the iris centres on")
    pupils = pupil_surface_points(model)
    triangle, barycentric = points.triangle.copy(), points.barycentric.copy()
    indices = np.array([index for index, _ in wanted])
    eyes = np.array([eye for _, eye in wanted])
    triangle[indices], barycentric[indices] = pupils.triangle[eyes], pupils.barycentric[eyes]
    return dataclasses.replace(points, triangle=triangle, barycentric=barycentric), indices


def head_on_positions(positions: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """(K views, N, 3) rest positions and (K, N) facing cosines -> the positions of the views that
    saw each point's surface head-on (facing > MIN_FACING), NaN elsewhere. A point that no view saw
    head-on (one on the side of the jaw) keeps the most frontal view that hit the head at all."""
    hit = np.isfinite(positions[..., 0])
    head_on = hit & (facing > MIN_FACING)
    grazing = np.flatnonzero(~head_on.any(axis=0) & hit.any(axis=0))
    head_on[np.argmax(np.where(hit, facing, -np.inf), axis=0)[grazing], grazing] = True
    return np.where(head_on[..., None], positions, np.nan)


def view_spread(positions: np.ndarray) -> np.ndarray:
    """(K views, N, 3) rest positions (NaN where unseen) -> (N,) RMS distance of each point's
    views from their median, in metres. Points seen in fewer than two views take the 90th
    percentile of the others (no evidence that they hold still)."""
    distance = np.linalg.norm(positions - np.nanmedian(positions, axis=0)[None], axis=-1)  # NaN where unseen
    spread = np.sqrt(np.nanmean(distance ** 2, axis=0))
    few = np.isfinite(distance).sum(axis=0) < 2
    if few.any():
        spread[few] = np.percentile(spread[~few], 90) if (~few).any() else 0.0
    return spread


def parted_lips_vertices(model: HeadModel) -> np.ndarray | None:
    """(V, 3) the neutral head with its lips parted (jawOpen at MOUTH_OPENING, or the jaw joint
    opened by JAW_PARTING_RAD), or None for a head with neither."""
    if "jawOpen" in model.expression_names:
        expression = np.zeros(len(model.expression_names))
        expression[model.expression_names.index("jawOpen")] = MOUTH_OPENING
        return posed_vertices(model, None, expression)[0]
    if "jaw" not in model.joint_names:
        return None
    lips = model.semantic_points.subset(["ibug_62", "ibug_66"])
    for sign in (1.0, -1.0):  # whichever way opens: the lower lip drops below the upper
        rotations = np.zeros((len(model.joint_names), 3))
        rotations[model.joint_index("jaw"), 0] = sign * JAW_PARTING_RAD
        vertices = posed_vertices(model, None, None, rotations)[0]
        upper, lower = surface_points(vertices[None], model.triangles, lips)[0]
        if upper[1] > lower[1]:
            return vertices
    return None


def place_inner_lips(model: HeadModel, points: SurfacePoints, contours: dict[str, tuple[int, ...]]
                     ) -> SurfacePoints:
    """``points`` with each inner-lip contour's points between its corners moved onto the head's
    inner-lip edge: at the fraction of the mouth's width (corner to corner, neutral head) where
    they lie now, on the edge of the parted lips through the head's iBUG points 60-67, snapped to
    that lip's surface. Unchanged where the model declares no such contour or the head lacks
    the iBUG inner-lip points or a way to part its lips."""
    wanted = [name for name in HEAD_INNER_LIPS if name in contours]
    ibug = [f"ibug_{k:02d}" for k in range(60, 68)]
    if not wanted or not set(ibug) <= set(model.semantic_points.names):
        return points
    parted = parted_lips_vertices(model)
    if parted is None:
        return points
    rest = posed_vertices(model)[0]
    ibug_rest, ibug_parted = (surface_points(v[None], model.triangles, model.semantic_points.subset(ibug))[0]
                              for v in (rest, parted))
    # Rows of ibug_rest / ibug_parted are iBUG 60..67. Fraction of the width from the subject's
    # right corner (ibug_60) to the left one (ibug_64).
    right_x, left_x = ibug_rest[0, 0], ibug_rest[4, 0]
    fraction = lambda x: (x - right_x) / (left_x - right_x)  # noqa: E731
    now = surface_points(rest[None], model.triangles, points)[0]
    triangle, barycentric = points.triangle.copy(), points.barycentric.copy()
    skin = model.skin[model.triangles].all(axis=1)
    for name in wanted:
        head_ids, region = HEAD_INNER_LIPS[name]
        rows = [k - 60 for k in head_ids]
        edge_rest, edge_parted = ibug_rest[rows], ibug_parted[rows]
        order = np.argsort(fraction(edge_rest[:, 0]))
        along = fraction(edge_rest[order, 0])
        between = list(contours[name][1:-1])
        wanted_at = np.clip(fraction(now[between, 0]), along[0], along[-1])
        targets = np.stack([np.interp(wanted_at, along, edge_parted[order, c]) for c in range(3)], axis=1)
        on_lip = skin & model.regions[region][model.triangles].any(axis=1) if region in model.regions else skin
        hits = embed_points(targets, tuple(points.names[k] for k in between), MeshSurface(parted, model.triangles, on_lip))
        triangle[between], barycentric[between] = hits.triangle, hits.barycentric
    return dataclasses.replace(points, triangle=triangle, barycentric=barycentric)


def _explicit_embedding(model: HeadModel, landmarker: Landmarker) -> SurfacePoints | None:
    """The exact embedding a dense model carries for the head it was trained on, if any."""
    meta = landmarker.metadata
    explicit = meta.embeddings.get(model.name)
    if explicit is not None and "triangle" in explicit:
        triangle = np.asarray(explicit["triangle"], dtype=np.int32)
        if triangle.max() < len(model.triangles):
            return SurfacePoints(triangle, np.asarray(explicit["barycentric"], dtype=np.float32),
                                 tuple(f"{meta.landmark_set}_{k:03d}" for k in range(meta.num_landmarks)))
    return None


def _read_cache(path: Path, model: HeadModel, landmarker: Landmarker) -> SurfacePoints:
    """The cached embedding at ``path``; LandmarkModelError if it is missing, damaged or does not fit."""
    name = landmarker.metadata.name
    if not path.is_file():
        raise LandmarkModelError(
            f"the {name} landmarks have not been placed on head model {model.name!r} yet (no {path}): run "
            f"`python -m fitter_backend setup{'' if model.name == 'open_head' else ' --head HEAD'}` "
            "once for this head (in Blender: 'Set up backend' in the add-on preferences)")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = tuple(str(n) for n in data["names"])
            closed = (SurfacePoints(np.asarray(data["closed_triangle"], dtype=np.int32),
                                    np.asarray(data["closed_barycentric"], dtype=np.float32), names)
                      if "closed_triangle" in data.files else None)
            points = SurfacePoints(np.asarray(data["triangle"], dtype=np.int32),
                                   np.asarray(data["barycentric"], dtype=np.float32),
                                   names, np.asarray(data["spread_m"], dtype=np.float64), closed)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise LandmarkModelError(f"the landmark embedding {path} is damaged ({type(error).__name__}); "
                                 "run `python -m fitter_backend setup` to compute it again") from None
    count = landmarker.metadata.num_landmarks

    def fits(placed: SurfacePoints) -> bool:
        return (placed.triangle.shape == (count,) and placed.barycentric.shape == (count, 3)
                and placed.triangle.min(initial=0) >= 0 and placed.triangle.max(initial=0) < len(model.triangles))

    if (not fits(points) or len(points.names) != count or points.spread_m.shape != (count,)
            or not np.all(np.isfinite(points.spread_m) & (points.spread_m >= 0))
            or (points.eyes_closed is not None and not fits(points.eyes_closed))):
        raise LandmarkModelError(f"the landmark embedding {path} does not fit {name!r} on {model.name!r}; "
                                 "run `python -m fitter_backend setup` to compute it again")
    return points


def _write_cache(path: Path, points: SurfacePoints) -> None:
    """Atomic: written beside, flushed to disk, then renamed over (a crash leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as handle:
            closed = ({} if points.eyes_closed is None else
                      {"closed_triangle": points.eyes_closed.triangle, "closed_barycentric": points.eyes_closed.barycentric})
            np.savez(handle, triangle=points.triangle, barycentric=points.barycentric, names=np.array(points.names),
                     spread_m=points.spread_m, **closed)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _each_model(model: HeadModel, landmarker: Landmarker | CombinedLandmarker,
                one: Callable[[HeadModel, Landmarker], SurfacePoints]) -> SurfacePoints:
    """``one`` for a single model; for a combination, its face model's points followed by its
    head model's chosen ones."""
    if isinstance(landmarker, CombinedLandmarker):
        head = one(model, landmarker.head)
        return one(model, landmarker.face).join(head.subset([head.names[k] for k in landmarker.head_points]))
    return one(model, landmarker)


def load_embedding(model: HeadModel, landmarker: Landmarker | CombinedLandmarker) -> SurfacePoints:
    """The landmark model's points on ``model``, as set-up placed them: what a fit job uses.

    Never computes: a missing, damaged or out-of-date embedding raises LandmarkModelError
    saying which set-up command places it.
    """
    def one(model: HeadModel, landmarker: Landmarker) -> SurfacePoints:
        explicit = _explicit_embedding(model, landmarker)
        return explicit if explicit is not None else _read_cache(_cache_path(model, landmarker), model, landmarker)
    return _each_model(model, landmarker, one)


def landmark_embedding(model: HeadModel, landmarker: Landmarker | CombinedLandmarker,
                       progress: Callable[[str], None] | None = None) -> SurfacePoints:
    """Set-up: the landmark model's points on ``model``, computed from renders and cached when
    the cache is missing, damaged or out of date (see :func:`load_embedding` for the job's side)."""
    def one(model: HeadModel, landmarker: Landmarker) -> SurfacePoints:
        explicit = _explicit_embedding(model, landmarker)
        if explicit is not None:
            return explicit
        path = _cache_path(model, landmarker)
        try:
            return _read_cache(path, model, landmarker)
        except LandmarkModelError:
            pass  # missing or damaged: compute it now
        if progress:
            renders = len(VIEWS_DEG) + (len(CLOSED_VIEWS_DEG) if has_blinks(model) else 0)
            progress(f"placing the {landmarker.metadata.name} landmarks on head model {model.name} ({renders} renders)")
        points = compute_embedding(model, landmarker)
        _write_cache(path, points)
        return points
    return _each_model(model, landmarker, one)
