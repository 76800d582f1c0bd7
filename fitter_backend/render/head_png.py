"""Clay-style renders of a head model for people to look at: single PNGs and captioned grids.

``python -m fitter_backend.render`` wraps these functions on the command line.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from fitter_backend.errors import FacecapError, HeadModelError
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices, surface_points
from fitter_backend.render.camera import orbit_camera, to_pixels_depth
from fitter_backend.render.rasterise import RasterBuffers, rasterise
from fitter_backend.render.shading import DirectionalLight, shade, to_uint8, vertex_normals
from fitter_backend.render.visibility import visible_points

CLAY = (0.62, 0.60, 0.57)
#: Tints of regions (where the model has them) that make expressions easier to read.
REGION_TINTS = {"lips": (0.68, 0.40, 0.38), "eyeballs": (0.80, 0.80, 0.78), "teeth": (0.85, 0.83, 0.75),
                "tongue": (0.60, 0.30, 0.30)}
BACKGROUND = (0.035, 0.04, 0.05)
#: Studio lights in camera space (the camera looks down -Z): warm key from the upper left,
#: cool fill from the right, rim light from behind.
STUDIO_LIGHTS = (
    DirectionalLight((-0.55, 0.6, 0.75), (1.0, 0.96, 0.9), 0.85),
    DirectionalLight((0.8, 0.05, 0.5), (0.8, 0.88, 1.0), 0.35),
    DirectionalLight((0.1, 0.5, -1.0), (1.0, 1.0, 1.0), 0.35),
)
AMBIENT = (0.1, 0.1, 0.11)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One render of a grid: a caption and the head's parameters (None means neutral)."""

    caption: str
    identity: np.ndarray | None = None
    expression: Mapping[str, float] | np.ndarray | None = None
    joint_rotations: Mapping[str, Sequence[float]] | np.ndarray | None = None


def expression_vector(model: HeadModel, expression: Mapping[str, float] | np.ndarray | None) -> np.ndarray:
    """(E,) expression coefficients from a dict ``channel name -> value`` or an array."""
    vector = np.zeros(model.num_expression)
    if expression is None:
        return vector
    if isinstance(expression, Mapping):
        for name, value in expression.items():
            if name not in model.expression_names:
                raise HeadModelError(f"head model {model.name!r} has no expression channel {name!r}; "
                                     f"channels: {', '.join(model.expression_names)}")
            vector[model.expression_names.index(name)] = float(value)
        return vector
    vector = np.asarray(expression, dtype=np.float64)
    if vector.shape != (model.num_expression,):
        raise HeadModelError(f"expression has shape {vector.shape}, head model {model.name!r} "
                             f"expects ({model.num_expression},)")
    return vector


def joint_rotation_array(model: HeadModel,
                         joint_rotations: Mapping[str, Sequence[float]] | np.ndarray | None) -> np.ndarray:
    """(J, 3) axis-angle rotations from a dict ``joint name -> (3,)`` or an array."""
    rotations = np.zeros((model.num_joints, 3))
    if joint_rotations is None:
        return rotations
    if isinstance(joint_rotations, Mapping):
        for name, rotvec in joint_rotations.items():
            rotations[model.joint_index(name)] = np.asarray(rotvec, dtype=np.float64).reshape(3)
        return rotations
    rotations = np.asarray(joint_rotations, dtype=np.float64)
    if rotations.shape != (model.num_joints, 3):
        raise HeadModelError(f"joint rotations have shape {rotations.shape}, head model {model.name!r} "
                             f"expects ({model.num_joints}, 3)")
    return rotations


def identity_vector(model: HeadModel, identity: np.ndarray | None) -> np.ndarray:
    """(I,) identity coefficients; None is the mean identity (zeros)."""
    if identity is None:
        return np.zeros(model.num_identity)
    vector = np.asarray(identity, dtype=np.float64)
    if vector.shape != (model.num_identity,):
        raise HeadModelError(f"identity has shape {vector.shape}, head model {model.name!r} "
                             f"expects ({model.num_identity},)")
    return vector


def sample_identity(model: HeadModel, rng: np.random.Generator) -> np.ndarray:
    """(I,) identity drawn from the model's Gaussian-mixture prior."""
    weights = np.asarray(model.identity_prior_weights, dtype=np.float64)
    component = rng.choice(len(weights), p=weights / weights.sum())
    return (model.identity_prior_means[component]
            + model.identity_prior_stds[component] * rng.standard_normal(model.num_identity))


def posed_mesh(model: HeadModel, identity=None, expression=None, joint_rotations=None) -> np.ndarray:
    """(V, 3) world-space vertices of one head (dicts or arrays as in :class:`Panel`)."""
    return posed_vertices(model, identity_vector(model, identity)[None],
                          expression_vector(model, expression)[None],
                          joint_rotation_array(model, joint_rotations)[None])[0]


def framing_camera(model: HeadModel, size: int, yaw_deg: float, pitch_deg: float, fov_deg: float,
                   margin: float = 1.1) -> tuple[np.ndarray, np.ndarray, float]:
    """World-to-camera ``(R, t)`` and focal_px that frame the neutral head in a square image.

    The same camera for every parameter set, so renders of one model line up.
    """
    low, high = model.template.min(0).astype(np.float64), model.template.max(0).astype(np.float64)
    centre, half = (low + high) / 2, (high - low) / 2
    half_fov = np.radians(fov_deg) / 2
    distance = margin * max(half[0], half[1], half[2]) / np.tan(half_fov) + half.max()
    rotation, translation = orbit_camera(centre, distance, yaw_deg, pitch_deg)
    return rotation, translation, 0.5 * size / np.tan(half_fov)


def render_clay(model: HeadModel, vertices: np.ndarray, size: int, yaw_deg: float, pitch_deg: float,
                fov_deg: float) -> tuple[np.ndarray, RasterBuffers, np.ndarray, float]:
    """Clay render of posed ``vertices`` (V, 3) framed by :func:`framing_camera`.

    Returns the BGR uint8 image, the raster buffers (which triangle and where, per pixel),
    the camera-space vertices and the focal length in pixels.
    """
    rotation, translation, focal_px = framing_camera(model, size, yaw_deg, pitch_deg, fov_deg)
    vertices_cam = vertices @ rotation.T + translation
    pixels = to_pixels_depth(vertices_cam, focal_px, (size, size))
    raster = rasterise(pixels, model.triangles, (size, size))
    albedo = np.tile(np.asarray(CLAY, dtype=np.float32), (model.num_vertices, 1))
    for region, tint in REGION_TINTS.items():
        if region in model.regions:
            albedo[model.regions[region]] = tint
    linear = shade(raster, model.triangles, vertex_normals(vertices_cam, model.triangles), albedo,
                   list(STUDIO_LIGHTS), AMBIENT, positions=vertices_cam, background=BACKGROUND)
    return to_uint8(linear[..., ::-1]), raster, vertices_cam, focal_px                # RGB -> BGR


def render_head(model: HeadModel, identity=None, expression=None, joint_rotations=None, size: int = 512,
                yaw_deg: float = 25.0, pitch_deg: float = 5.0, fov_deg: float = 20.0,
                points: bool | Sequence[str] = False, supersample: int = 2) -> np.ndarray:
    """A clay render of the head as a (size, size, 3) uint8 BGR image.

    expression: dict ``channel -> value`` or (E,) array; joint_rotations: dict
    ``joint -> axis-angle`` or (J, 3); identity: (I,) or None for the mean head.
    yaw_deg > 0 turns the camera towards the subject's left, pitch_deg > 0 raises it.
    points: True draws the model's visible iBUG-68 points, a list draws those named points.
    supersample: render at this many times the size and downscale (anti-aliasing).
    """
    if size < 16 or supersample < 1:
        raise FacecapError(f"render_head: size must be >= 16 and supersample >= 1, got {size}, {supersample}")
    vertices = posed_mesh(model, identity, expression, joint_rotations)
    full = size * supersample
    image, raster, vertices_cam, focal_px = render_clay(model, vertices, full, yaw_deg, pitch_deg, fov_deg)
    if supersample > 1:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if points:
        names = [f"ibug_{k:02d}" for k in range(68)] if points is True else list(points)
        chosen = model.semantic_points.subset(names)
        point_cam = surface_points(vertices_cam[None], model.triangles, chosen)[0]
        point_px = to_pixels_depth(point_cam, focal_px, (full, full))
        visible = visible_points(raster, point_px)
        _draw_dots(image, point_px[visible, :2] / supersample)
    return image


def _draw_dots(image: np.ndarray, points_px: np.ndarray, colour=(40, 40, 235)) -> None:
    """Small anti-aliased dots at sub-pixel positions (camera convention: centres at +0.5)."""
    shift = 4
    radius = max(1, round(image.shape[0] / 200))
    for u, v in np.round((points_px - 0.5) * (1 << shift)).astype(np.int64):
        cv2.circle(image, (int(u), int(v)), radius << shift, colour, -1, cv2.LINE_AA, shift)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a BGR uint8 image as PNG (atomic rename); FacecapError naming the path on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise FacecapError(f"cannot encode a PNG for {path}")
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(encoded.tobytes())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def render_head_png(model: HeadModel, path: str | Path, identity=None, expression=None,
                    joint_rotations=None, **options) -> Path:
    """Render the head (options as in :func:`render_head`) and write it as a PNG."""
    return write_png(path, render_head(model, identity, expression, joint_rotations, **options))


def render_grid(model: HeadModel, panels: Sequence[Panel], size: int = 384, **options) -> np.ndarray:
    """Renders side by side, each with its caption above it: (size + caption, n size, 3) uint8."""
    caption_h = max(24, size // 12)
    scale = caption_h / 40
    tiles = []
    for panel in panels:
        tile = np.zeros((caption_h + size, size, 3), dtype=np.uint8)
        tile[caption_h:] = render_head(model, panel.identity, panel.expression, panel.joint_rotations,
                                       size, **options)
        (text_w, _), _ = cv2.getTextSize(panel.caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (max(4, (size - text_w) // 2), int(caption_h * 0.72))
        cv2.putText(tile, panel.caption, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def render_grid_png(model: HeadModel, path: str | Path, panels: Sequence[Panel], size: int = 384,
                    **options) -> Path:
    """Write :func:`render_grid` as a PNG."""
    return write_png(path, render_grid(model, panels, size, **options))


def showcase_panels(model: HeadModel, seed: int = 0) -> list[Panel]:
    """Neutral, jawOpen = 1, mouthSmileLeft = 1 (where the model has those channels) and
    one random identity drawn from the prior with ``seed``."""
    panels = [Panel("neutral")]
    panels += [Panel(f"{name} = 1", expression={name: 1.0})
               for name in ("jawOpen", "mouthSmileLeft") if name in model.expression_names]
    panels.append(Panel(f"random identity (seed {seed})",
                        identity=sample_identity(model, np.random.default_rng(seed))))
    return panels
