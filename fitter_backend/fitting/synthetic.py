"""Synthetic shots with known ground truth, for tests and the fitting benchmark.

A shot is a head model driven by talking-style expression trajectories, a yaw sweep and
small nods, seen by one or several pinhole cameras; landmarks are the projected surface
points plus Gaussian noise, with a fraction of outliers whose sigma is inflated to match
their error (what a calibrated landmark network reports).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.fitting.cameras import Cameras, focal_from_hfov, project
from fitter_backend.fitting.problem import Observations, Parameters
from fitter_backend.head_models import lbs
from fitter_backend.head_models.eyes import BLINK_UNITS
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints

FPS = 25.0
SWEEP_MIN_FRAMES = 100
# ARKit channels that move when people talk, with typical peak activations.
TALKING_CHANNELS = {"jawOpen": 0.5, "mouthClose": 0.15, "mouthFunnel": 0.3, "mouthPucker": 0.3,
                    "mouthSmileLeft": 0.3, "mouthSmileRight": 0.3, "mouthStretchLeft": 0.2,
                    "mouthStretchRight": 0.2, "mouthRollLower": 0.2, "mouthShrugUpper": 0.2,
                    "browInnerUp": 0.3, "browOuterUpLeft": 0.2, "browOuterUpRight": 0.2,
                    "cheekSquintLeft": 0.2, "cheekSquintRight": 0.2}


@dataclasses.dataclass
class SyntheticShot:
    model: HeadModel
    landmarks: SurfacePoints
    observations: Observations
    cameras: Cameras          # the true cameras (focal_known/extrinsics_known say what the fit is told)
    truth: Parameters


def area_sampled_points(model: HeadModel, count: int, seed: int = 0,
                        exclude_regions: tuple[str, ...] = ("eyeballs", "teeth")) -> SurfacePoints:
    """``count`` surface points spread by area over the head (a stand-in dense landmark set)."""
    rng = np.random.default_rng(seed)
    tri = model.triangles
    excluded = np.zeros(model.num_vertices, bool)
    for name in exclude_regions:
        if name in model.regions:
            excluded |= model.regions[name]
    usable = np.flatnonzero(~excluded[tri].any(axis=1))
    corners = model.template[tri[usable]].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    chosen = rng.choice(usable, size=count, replace=count > len(usable), p=area / area.sum())
    bary = rng.dirichlet(np.ones(3), size=count)
    return SurfacePoints(chosen.astype(np.int32), bary.astype(np.float32),
                         tuple(f"dense_{k:03d}" for k in range(count)))


def _smooth_noise(rng: np.random.Generator, num_frames: int, channels: int, low_hz: float, high_hz: float,
                  terms: int = 4) -> np.ndarray:
    """(N, channels) sums of sinusoids in [low_hz, high_hz], unit peak amplitude."""
    t = np.arange(num_frames) / FPS
    freq = rng.uniform(low_hz, high_hz, (terms, channels))
    phase = rng.uniform(0, 2 * np.pi, (terms, channels))
    amp = rng.uniform(0.3, 1.0, (terms, channels))
    signal = np.sum(amp[None] * np.sin(2 * np.pi * freq[None] * t[:, None, None] + phase[None]), axis=1)
    return signal / np.max(np.abs(signal), axis=0, keepdims=True)


def talking_expressions(model: HeadModel, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(N, E) expression trajectories: speech-rate mouth motion, brows, blinks.

    ARKit-named models get activations in [0, 1] on the talking channels; other models
    (e.g. FLAME's PCA expressions) get smooth signed trajectories, larger on the first components.
    """
    names = model.expression_names
    expression = np.zeros((num_frames, model.num_expression))
    if "jawOpen" in names:
        for name, peak in TALKING_CHANNELS.items():
            if name in names:
                signal = _smooth_noise(rng, num_frames, 1, 1.0, 5.0)[:, 0]
                expression[:, names.index(name)] = peak * np.clip(signal, 0, None)
        for name in BLINK_UNITS:
            if name in names:
                blink = np.zeros(num_frames)
                for start in rng.choice(num_frames, size=max(1, num_frames // 75), replace=False):
                    blink[start:start + 4] = [0.5, 1.0, 1.0, 0.5][: len(blink[start:start + 4])]
                expression[:, names.index(name)] = blink
        return expression
    scale = 1.5 / np.sqrt(1 + np.arange(model.num_expression) / 3)
    return _smooth_noise(rng, num_frames, model.num_expression, 0.5, 4.0) * scale


def look_at_rotation(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at ``eye`` looking at ``target`` (+Y up, looks down -Z)."""
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back])



def performance(model: HeadModel, num_frames: int, rng: np.random.Generator, yaw_deg: float = 60.0,
                distance_m: float = 0.6, identity_scale: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random actor's performance: identity (I,), talking expressions (N, E), joint
    rotations (N, J, 3) with one yaw sweep, nods, roll, neck and gaze, translation (N, 3)
    in front of a camera at the origin looking down -Z."""
    n = num_frames
    identity = rng.normal(size=model.num_identity) * identity_scale
    expression = talking_expressions(model, n, rng)
    rotations = np.zeros((n, model.num_joints, 3))
    # One yaw sweep over the shot, but never faster than a 4 s period (as people turn).
    t = np.arange(n) / max(n - 1, SWEEP_MIN_FRAMES)
    rotations[:, 0, 1] = np.radians(yaw_deg) * np.sin(2 * np.pi * t)          # yaw sweep
    rotations[:, 0, 0] = np.radians(10) * _smooth_noise(rng, n, 1, 0.2, 0.8)[:, 0]   # nods
    rotations[:, 0, 2] = np.radians(5) * _smooth_noise(rng, n, 1, 0.2, 0.8)[:, 0]    # roll
    for name, scale in (("neck", 0.05), ("eye_L", 0.15), ("eye_R", 0.15)):
        if name in model.joint_names:
            rotations[:, model.joint_index(name)] = scale * _smooth_noise(rng, n, 3, 0.2, 1.0)
    if "eye_L" in model.joint_names and "eye_R" in model.joint_names:  # eyes look together
        rotations[:, model.joint_index("eye_R")] = rotations[:, model.joint_index("eye_L")]
    translation = np.zeros((n, 3))
    translation[:, 2] = -distance_m
    translation += 0.02 * _smooth_noise(rng, n, 3, 0.1, 0.5)
    return identity, expression, rotations, translation


def make_shot(model: HeadModel, landmarks: SurfacePoints, num_frames: int = 300, num_cameras: int = 1,
              seed: int = 0, noise_px: float = 1.5, outlier_fraction: float = 0.05, yaw_deg: float = 60.0,
              image_size_px: int = 512, hfov_deg: float = 40.0, distance_m: float = 0.6,
              identity_scale: float = 1.0, focal_known: bool = False, extrinsics_known: bool = True) -> SyntheticShot:
    """A synthetic shot with ground truth; see the module docstring."""
    rng = np.random.default_rng(seed)
    n = num_frames
    identity, expression, rotations, translation = performance(model, n, rng, yaw_deg, distance_m,
                                                               identity_scale)

    size = (image_size_px, image_size_px)
    focal = focal_from_hfov(image_size_px, hfov_deg)
    cam_rotations, cam_translations = [np.zeros(3)], [np.zeros(3)]
    head_centre = np.array([0.0, 0.0, -distance_m])
    for c in range(1, num_cameras):
        # Cameras on an arc around the head, all looking at it; camera 0 is the world frame.
        angle = np.radians([-35, 35, 0, -60, 60][(c - 1) % 5])
        height = [0.0, 0.0, 0.25, 0.1, 0.1][(c - 1) % 5]
        eye = head_centre + distance_m * np.array([np.sin(angle), height, np.cos(angle)])
        rotation = look_at_rotation(eye, head_centre)
        cam_rotations.append(lbs.rotation_vector(rotation))
        cam_translations.append(-rotation @ eye)
    cameras = Cameras.create([size] * num_cameras, [focal] * num_cameras, cam_rotations, cam_translations)
    truth = Parameters(identity, expression, rotations, translation, cameras)

    posed = lbs.posed_vertices(model, identity, expression, rotations, translation)
    points = lbs.surface_points(posed, model.triangles, landmarks)
    mu = np.empty((n, num_cameras, len(landmarks), 2))
    sigma = np.full((n, num_cameras, len(landmarks)), float(noise_px))
    for c in range(num_cameras):
        clean = project(points, cameras, c, derivatives=False).pixels
        mu[:, c] = clean + rng.normal(scale=noise_px, size=clean.shape)
        outliers = rng.random(clean.shape[:2]) < outlier_fraction
        magnitude = rng.uniform(10, 40, outliers.sum())
        direction = rng.normal(size=(outliers.sum(), 2))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        mu[:, c][outliers] = clean[outliers] + direction * magnitude[:, None]
        sigma[:, c][outliers] = magnitude / np.sqrt(2)  # per-axis sigma matching the error
    told = Cameras.create([size] * num_cameras, [focal if focal_known else None] * num_cameras,
                          cam_rotations if extrinsics_known else None,
                          cam_translations if extrinsics_known else None)
    return SyntheticShot(model, landmarks, Observations(mu, sigma), told, truth)
