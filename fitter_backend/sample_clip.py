"""A sample clip the project renders itself: the open head with a random identity performing
(talking, blinking, turning its head), so the whole pipeline can run without footage."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from fitter_backend.fitting.cameras import Cameras, project
from fitter_backend.fitting.synthetic import FPS, performance
from fitter_backend.head_models.eyes import eyeball_centres, eyeball_vertices
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices
from fitter_backend.render.rasterise import RasterBuffers, interpolate, rasterise
from fitter_backend.render.shading import DirectionalLight, shade, to_uint8, vertex_normals

SKIN_RGB = (0.78, 0.58, 0.48)
LIPS_RGB = (0.70, 0.38, 0.38)
EYES_RGB = (0.92, 0.92, 0.90)
IRIS_RGB = (0.30, 0.20, 0.12)
PUPIL_RGB = (0.02, 0.02, 0.02)
#: Angular radii on the eyeball, seen from its centre, of the iris (12 mm across) and the pupil
#: (5 mm) on the open head's 29 mm eyeballs. Without them the eyes were blank white and the
#: landmark models, trained on real eyes, misread the lids of the sample and evaluation clips.
IRIS_DEG, PUPIL_DEG = 24.0, 10.0
#: Samples per pixel side, averaged into each pixel. Without them the seam of a shut eye aliased
#: into specks of white eyeball that the landmark models read as an open slit
#: (docs/landmark_models.md, section 3b: rendered blink recall 0.75 / 0.92 -> 0.92 / 0.92, 3 clips).
SUPERSAMPLE = 2
LIGHTS = (DirectionalLight((0.4, 0.5, 0.8), (1.0, 0.97, 0.92), 0.9),
          DirectionalLight((-0.6, 0.1, 0.5), (0.75, 0.8, 1.0), 0.35))


def _albedo(model: HeadModel) -> np.ndarray:
    albedo = np.tile(np.asarray(SKIN_RGB, np.float32), (model.num_vertices, 1))
    for region, colour in (("lips", LIPS_RGB), ("eyeballs", EYES_RGB), ("teeth", EYES_RGB)):
        if region in model.regions:
            albedo[model.regions[region]] = colour
    return albedo


def eyeball_directions(model: HeadModel) -> np.ndarray:
    """(V, 3) unit direction of each eyeball vertex from its eyeball's centre, in the rest
    frame (forward is +Z; the value travels with the vertex as the eye turns); zero elsewhere."""
    directions = np.zeros((model.num_vertices, 3), np.float32)
    eyeballs = [ids for ids in eyeball_vertices(model) if len(ids)]
    for ids, centre in zip(eyeballs, eyeball_centres(model.template, eyeballs)):
        offsets = model.template[ids] - centre
        directions[ids] = offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    return directions


def paint_irises(linear: np.ndarray, raster: RasterBuffers, triangles: np.ndarray, directions: np.ndarray
                 ) -> np.ndarray:
    """(h, w, 3) shaded image with the iris and pupil painted on the eyeballs. Each pixel's
    direction from the eyeball's centre is interpolated from ``directions`` (the eyeball's front
    is a coarse polygon, so interpolating the angle itself would shrink the pupil to a sliver);
    past IRIS_DEG / PUPIL_DEG off the forward axis the sclera's albedo is swapped for theirs
    (shading is albedo times light, so a ratio swaps it)."""
    direction = interpolate(raster, triangles, directions)
    length = np.linalg.norm(direction, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # zero off the eyeballs
        cosine = np.where(length > 0, direction[..., 2] / length, -1.0)
    sclera = np.asarray(EYES_RGB, np.float32)
    out = linear.copy()
    for colour, radius_deg in ((IRIS_RGB, IRIS_DEG), (PUPIL_RGB, PUPIL_DEG)):
        inside = cosine > np.cos(np.radians(radius_deg))
        out[inside] = linear[inside] * (np.asarray(colour, np.float32) / sclera)
    return out


def render_frame(model: HeadModel, vertices: np.ndarray, cameras: Cameras, camera: int, albedo: np.ndarray,
                 directions: np.ndarray, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """(h, w, 3) float32 linear image of posed ``vertices`` (V, 3) seen by ``camera``: each pixel
    the mean of supersample x supersample samples, as a sensor integrates light over a pixel."""
    width, height = (int(v) for v in cameras.image_size_px[camera])
    fine = dataclasses.replace(cameras, image_size_px=cameras.image_size_px * supersample,
                               focal_px=cameras.focal_px * supersample)
    size = (width * supersample, height * supersample)
    proj = project(vertices[None], fine, camera, derivatives=False)
    raster = rasterise(np.column_stack([proj.pixels[0], -proj.camera_points[0, :, 2]]), model.triangles, size)
    linear = shade(raster, model.triangles, vertex_normals(proj.camera_points[0], model.triangles), albedo,
                   list(LIGHTS), (0.12, 0.11, 0.1), positions=proj.camera_points[0])
    ys = np.linspace(0.0, 1.0, size[1], dtype=np.float32)[:, None, None]
    background = (0.18 + 0.12 * ys) * np.array([0.55, 0.65, 0.75], np.float32)  # a soft vertical gradient
    linear = np.where(raster.mask[..., None], paint_irises(linear, raster, model.triangles, directions),
                      background).astype(np.float32)
    return cv2.resize(linear, (width, height), interpolation=cv2.INTER_AREA) if supersample > 1 else linear


def render_views(model: HeadModel, vertices: np.ndarray, cameras: Cameras, paths: list[str | Path]) -> list[Path]:
    """Write one MPEG-4 clip per camera of posed ``vertices`` (N, V, 3) seen by ``cameras``."""
    albedo, directions = _albedo(model), eyeball_directions(model)
    out = []
    for camera, path in enumerate(paths):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in cameras.image_size_px[camera])
        partial = path.with_name(path.name + ".partial.mp4")
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
        try:
            for frame in vertices:
                linear = render_frame(model, frame, cameras, camera, albedo, directions)
                writer.write(to_uint8(linear[..., ::-1]))
        finally:
            writer.release()
        partial.replace(path)
        out.append(path)
    return out


def sample_performance(model: HeadModel, num_frames: int, seed: int = 7, yaw_deg: float = 35.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Posed vertices (N, V, 3) of a random actor talking and turning in front of camera 0
    (the head, not the neck base, on the optical axis), and the identity used."""
    rng = np.random.default_rng(seed)
    identity, expression, rotations, translation = performance(model, num_frames, rng, yaw_deg, 0.7, 0.8)
    translation[:, 1] -= model.template[:, 1].mean()
    return posed_vertices(model, identity, expression, rotations, translation), identity


def sample_clip_focal_px(size_px: int) -> float:
    """The sample clip camera's focal length: a 40 degree horizontal field of view."""
    return size_px / (2 * np.tan(np.radians(20)))


def render_sample_clip(model: HeadModel, path: str | Path, num_frames: int = 75, size_px: int = 512,
                       seed: int = 7, yaw_deg: float = 35.0) -> Path:
    """Write an MPEG-4 clip of a synthetic performance; returns its path."""
    vertices, _ = sample_performance(model, num_frames, seed, yaw_deg)
    cameras = Cameras.monocular(size_px, size_px, focal_px=sample_clip_focal_px(size_px))
    return render_views(model, vertices, cameras, [path])[0]
