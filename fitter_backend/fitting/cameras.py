"""Pinhole cameras of a shot and the projection with its derivatives.

Camera space follows Blender/OpenGL: +X right, +Y up, the camera looks down -Z. A point at
camera coordinates (X, Y, Z) with depth z = -Z > 0 projects to
    u = cx + f X / z,   v = cy - f Y / z
with the principal point (cx, cy) at the image centre and square pixels. World space is
camera 0's space; camera c maps world points by X_c = R_c x + t_c.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.head_models.lbs import left_jacobian_so3, rodrigues, skew

DEFAULT_HFOV_DEG = 45.0


def focal_from_hfov(image_width_px: float, hfov_deg: float = DEFAULT_HFOV_DEG) -> float:
    """Focal length in pixels for a horizontal field of view."""
    return 0.5 * image_width_px / math.tan(math.radians(hfov_deg) / 2)


@dataclasses.dataclass
class Cameras:
    """C cameras. image_size_px (C, 2) as (width, height); focal_px (C,); rotation (C, 3)
    axis-angle and translation_m (C, 3) world -> camera; focal_known / extrinsics_known (C,)
    say which are held fixed. Camera 0 is the world frame (identity extrinsics, always known).
    """

    image_size_px: np.ndarray
    focal_px: np.ndarray
    rotation: np.ndarray
    translation_m: np.ndarray
    focal_known: np.ndarray
    extrinsics_known: np.ndarray
    names: tuple[str, ...] = ()

    @property
    def see_scale(self) -> bool:
        """Whether the cameras fix metric scale: another camera at a known place relative to
        camera 0 (a known baseline). One camera, or others placed by the fit, see shape only."""
        return bool(np.any(self.extrinsics_known[1:]))

    @classmethod
    def monocular(cls, width_px: int, height_px: int, focal_px: float | None = None) -> "Cameras":
        return cls.create([(width_px, height_px)], [focal_px])

    @classmethod
    def create(cls, image_sizes_px, focals_px=None, rotations=None, translations_m=None,
               names=None) -> "Cameras":
        """Cameras from per-camera sizes; a focal or extrinsics given as None is optimised."""
        sizes = np.asarray(image_sizes_px, dtype=np.float64).reshape(-1, 2)
        count = len(sizes)
        if count == 0 or np.any(sizes <= 0) or not np.all(np.isfinite(sizes)):
            raise FitError(f"camera image sizes must be positive (width, height) pairs, got {sizes.tolist()}")
        focals = [None] * count if focals_px is None else list(focals_px)
        if len(focals) != count:
            raise FitError(f"{len(focals)} focal lengths for {count} cameras")
        focal_known = np.array([f is not None for f in focals])
        focal = np.array([focal_from_hfov(sizes[c, 0]) if f is None else float(f) for c, f in enumerate(focals)])
        if np.any(~np.isfinite(focal)) or np.any(focal <= 0):
            raise FitError(f"focal lengths must be positive numbers of pixels, got {focal.tolist()}")
        rotation = np.zeros((count, 3))
        translation = np.zeros((count, 3))
        extrinsics_known = np.zeros(count, bool)
        extrinsics_known[0] = True
        for c in range(1, count):
            r = None if rotations is None else rotations[c]
            t = None if translations_m is None else translations_m[c]
            if (r is None) != (t is None):
                raise FitError(f"camera {c}: give both rotation and translation, or neither")
            if r is not None:
                rotation[c], translation[c] = np.asarray(r, float), np.asarray(t, float)
                extrinsics_known[c] = True
        if rotations is not None and rotations[0] is not None and np.any(np.asarray(rotations[0]) != 0):
            raise FitError("camera 0 defines the world frame: its rotation must be zero")
        return cls(sizes, focal, rotation, translation, focal_known, extrinsics_known,
                   tuple(names) if names else tuple(f"camera{c}" for c in range(count)))

    @property
    def count(self) -> int:
        return len(self.focal_px)

    @property
    def principal_point_px(self) -> np.ndarray:
        return self.image_size_px / 2.0

    def copy(self) -> "Cameras":
        return dataclasses.replace(self, focal_px=self.focal_px.copy(), rotation=self.rotation.copy(),
                                   translation_m=self.translation_m.copy())


@dataclasses.dataclass
class Projection:
    """Points of N frames seen by one camera.

    pixels (N, S, 2); camera_points (N, S, 3); d_world (N, S, 2, 3): d pixels / d world point;
    d_log_focal (N, S, 2); d_extrinsics (N, S, 2, 6) over (rotation, translation) of the camera.
    """

    pixels: np.ndarray
    camera_points: np.ndarray
    d_world: np.ndarray | None = None
    d_log_focal: np.ndarray | None = None
    d_extrinsics: np.ndarray | None = None


def project(points: np.ndarray, cameras: Cameras, camera: int, derivatives: bool = True) -> Projection:
    """Project world points (N, S, 3) into camera ``camera``; depth is clamped at 1 mm."""
    rotation = rodrigues(cameras.rotation[camera])
    rotated = points @ rotation.T
    camera_points = rotated + cameras.translation_m[camera]
    depth = np.maximum(-camera_points[..., 2], 1e-3)
    focal = cameras.focal_px[camera]
    cx, cy = cameras.principal_point_px[camera]
    x_over_z = camera_points[..., 0] / depth
    y_over_z = camera_points[..., 1] / depth
    pixels = np.stack([cx + focal * x_over_z, cy - focal * y_over_z], axis=-1)
    if not derivatives:
        return Projection(pixels, camera_points)
    d_camera = np.zeros(points.shape[:-1] + (2, 3))
    d_camera[..., 0, 0] = focal / depth
    d_camera[..., 0, 2] = focal * x_over_z / depth
    d_camera[..., 1, 1] = -focal / depth
    d_camera[..., 1, 2] = -focal * y_over_z / depth
    d_log_focal = pixels - np.array([cx, cy])
    # X = R(w) x + t: dX/dw = -skew(R x) J_l(w), dX/dt = I.
    d_rot = -skew(rotated) @ left_jacobian_so3(cameras.rotation[camera])
    d_extrinsics = np.concatenate([d_camera @ d_rot, d_camera], axis=-1)
    return Projection(pixels, camera_points, d_camera @ rotation, d_log_focal, d_extrinsics)
