"""Pinhole camera: the one projection convention the renderer, the fitter and the labels share.

Camera space: +X right, +Y up, the camera looks along -Z, so points in front of it have
Z < 0 and ``depth = -Z``. Image space: ``u`` grows to the right, ``v`` grows downwards, the
image spans ``[0, w] x [0, h]`` and pixel ``(row i, column j)`` covers
``[j, j + 1) x [i, i + 1)`` with its centre at ``(j + 0.5, i + 0.5)``. The principal point is
the image centre ``(w / 2, h / 2)``, pixels are square::

    u = w / 2 + focal_px * X / depth
    v = h / 2 - focal_px * Y / depth

(OpenCV puts pixel centres at integers: ``u_opencv = u - 0.5``.)
"""
from __future__ import annotations

import numpy as np

from fitter_backend.errors import FacecapError


def focal_from_fov(fov_deg: float, width_px: int) -> float:
    """Focal length in pixels for a horizontal field of view of ``fov_deg`` degrees."""
    if not 0.0 < fov_deg < 180.0:
        raise FacecapError(f"field of view must be between 0 and 180 degrees, got {fov_deg}")
    return 0.5 * width_px / np.tan(np.radians(fov_deg) / 2.0)


def project(points_cam: np.ndarray, focal_px: float, image_size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates of camera-space points.

    points_cam: (..., 3) camera-space points (in front of the camera: Z < 0).
    image_size: (w, h) in pixels.
    Returns (..., 2) ``[u, v]``.
    """
    return to_pixels_depth(points_cam, focal_px, image_size)[..., :2]


def to_pixels_depth(points_cam: np.ndarray, focal_px: float, image_size: tuple[int, int]) -> np.ndarray:
    """(..., 3) camera-space points -> (..., 3) ``[u, v, depth]`` with ``depth = -Z``.

    This is the vertex format :func:`fitter_backend.render.rasterise.rasterise` takes.
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    width, height = image_size
    depth = -points_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * width + focal_px * points_cam[..., 0] / depth
        v = 0.5 * height - focal_px * points_cam[..., 1] / depth
    return np.stack([u, v, depth], axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 1.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera transform of a camera at ``eye`` looking at ``target``.

    Returns ``R`` (3, 3) and ``t`` (3,) with ``x_cam = R @ x_world + t``; the camera's +Y
    is as close to ``up`` as the viewing direction allows.
    """
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm == 0.0:
        raise FacecapError("look_at: eye and target are the same point")
    forward /= norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise FacecapError(f"look_at: up vector {up.tolist()} is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    rotation = np.stack([right, true_up, -forward])  # rows: camera axes in world space
    return rotation, -rotation @ eye


def orbit_camera(target: np.ndarray, distance: float, yaw_deg: float = 0.0,
                 pitch_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``(R, t)`` of a camera orbiting ``target`` at ``distance``.

    At yaw = pitch = 0 the camera sits on +Z of the target looking down -Z (a frontal view
    of a face looking towards +Z). Positive yaw moves the camera towards +X (the subject's
    left), positive pitch moves it up.
    """
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    direction = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    return look_at(np.asarray(target, dtype=np.float64) + distance * direction, target)
