"""Lambert shading with ambient light and several coloured lights, per-vertex albedo.

Everything is linear (no gamma) and in one coordinate frame: pass normals, positions and
lights all in camera space (the camera at the origin) or all in world space with
``eye`` set. Images are float32 (h, w, 3) in the channel order of the colours given.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fitter_backend.errors import FacecapError
from fitter_backend.render.rasterise import RasterBuffers


@dataclasses.dataclass(frozen=True)
class DirectionalLight:
    """Light from infinitely far away. ``to_light``: (3,) direction from the surface towards it."""

    to_light: tuple[float, float, float]
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 1.0


@dataclasses.dataclass(frozen=True)
class PointLight:
    """Light at ``position`` (3,); its direction varies over the surface, its brightness does not."""

    position: tuple[float, float, float]
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 1.0


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals, area-weighted averages of the faces around each vertex.

    Triangles counter-clockwise seen from outside give outward normals. Vertices used by
    no triangle get (0, 0, 0).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles)
    corners = vertices[triangles]                                              # (F, 3, 3)
    face = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # |face| = 2 area
    ids = triangles.T.ravel()                                                  # corner-major
    normals = np.stack([np.bincount(ids, np.tile(face[:, c], 3), minlength=len(vertices))
                        for c in range(3)], axis=1)
    length = np.sqrt(np.einsum("vc,vc->v", normals, normals))[:, None]
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def shade(raster: RasterBuffers, triangles: np.ndarray, normals: np.ndarray, albedo: np.ndarray,
          lights: list[DirectionalLight | PointLight], ambient=(0.15, 0.15, 0.15),
          positions: np.ndarray | None = None, eye=(0.0, 0.0, 0.0), two_sided: bool = True,
          background=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Shade the visible surface: ``albedo * (ambient + sum_l colour_l intensity_l max(0, n . l))``.

    normals: (V, 3) vertex normals (interpolated per pixel, then renormalised).
    albedo: (V, 3) per-vertex colour, or (3,) one colour for the whole mesh.
    positions: (V, 3) vertex positions, needed by point lights and by ``two_sided``.
    eye: the camera position in the frame of ``positions`` (the origin in camera space).
    two_sided: flip normals that face away from the camera, so the inside of an open mouth
        or of a thin shell is lit like its outside instead of black.
    Returns (h, w, 3) float32, ``background`` where nothing is visible.
    """
    mask = raster.mask
    image = np.empty(mask.shape + (3,), dtype=np.float32)
    image[:] = np.asarray(background, dtype=np.float32)
    if not mask.any():
        return image
    needs_position = two_sided or any(isinstance(light, PointLight) for light in lights)
    if needs_position and positions is None:
        raise FacecapError("shade: point lights and two-sided shading need vertex positions")
    # Per-pixel quantities are stored channel-first, (C, P), so arithmetic runs on rows.
    corner_ids = np.asarray(triangles)[raster.triangle_id[mask]].T             # (3, P)
    weights = raster.barycentric[mask].T                                       # (3, P)

    def at_pixels(values: np.ndarray) -> np.ndarray:
        columns = np.asarray(values, dtype=np.float32).T                       # (C, V)
        return sum(np.take(columns, corner_ids[k], axis=1) * weights[k] for k in range(3))

    normal = at_pixels(normals)
    normal /= np.maximum(np.sqrt((normal * normal).sum(0)), np.float32(1e-12))
    position = at_pixels(positions) if needs_position else None
    if two_sided:
        towards_eye = np.asarray(eye, dtype=np.float32)[:, None] - position
        normal *= np.where((normal * towards_eye).sum(0) < 0, np.float32(-1), np.float32(1))
    irradiance = np.empty_like(normal)
    irradiance[:] = np.asarray(ambient, dtype=np.float32)[:, None]
    for light in lights:
        if isinstance(light, DirectionalLight):
            direction = np.asarray(light.to_light, dtype=np.float32)
            cosine = direction @ normal / np.linalg.norm(direction)
        elif isinstance(light, PointLight):
            direction = np.asarray(light.position, dtype=np.float32)[:, None] - position
            cosine = (normal * direction).sum(0) / np.maximum(np.sqrt((direction * direction).sum(0)),
                                                               np.float32(1e-12))
        else:
            raise FacecapError(f"shade: unknown light {light!r}")
        colour = np.float32(light.intensity) * np.asarray(light.colour, dtype=np.float32)
        irradiance += colour[:, None] * np.maximum(cosine, np.float32(0))
    albedo = np.asarray(albedo, dtype=np.float32)
    surface = at_pixels(albedo) if albedo.ndim == 2 else albedo[:, None]
    image[mask] = (surface * irradiance).T
    return image


def to_uint8(image: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """Linear float image -> uint8 with display gamma, clipped to [0, 255]."""
    levels = np.clip(image, 0.0, 1.0) * np.float32(_GAMMA_STEPS) + np.float32(0.5)
    return _gamma_table(gamma)[levels.astype(np.uint16)]


_GAMMA_STEPS = 65535  # linear steps of the lookup table: fine enough for the darkest tones


@functools.lru_cache(maxsize=4)
def _gamma_table(gamma: float) -> np.ndarray:
    linear = np.arange(_GAMMA_STEPS + 1) / _GAMMA_STEPS
    return (linear ** (1.0 / gamma) * 255.0 + 0.5).astype(np.uint8)
