"""Synthetic training images of the open head with exact dense-landmark labels.

A sample: an identity (its shape and look drawn from its id, so validation identities are
held out in both), ARKit expressions like a performance (talking, blinks, asymmetric and
extreme poses of single channels), head pose up to profile, eye gaze, a camera at a random
distance and off-axis position, lights, a background, occluders and augmentation. The image
is the ROI crop the landmark stage would feed the network: a square around the projected
landmarks (side = ``roi_scale`` x their longer extent, jittered in scale and position).

Labels: every landmark's position in crop pixels (pixel j spans [j, j + 1)), also when it is
hidden or outside the crop, and a visibility flag (in the crop, not behind the head, not
under an occluder).

``python -m onnx_models.synthetic --count 32 --sheet sheet.png`` draws a contact sheet;
``generate`` renders arrays in parallel processes (see docs/dense_landmarks.md for images/s).
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import time
from pathlib import Path

import cv2
import numpy as np

from fitter_backend.fitting.synthetic import talking_expressions
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import Pose, Rig, forward, rodrigues, rotation_vector, surface_points
from fitter_backend.models.contract import AFFINE_ANCHORS
from fitter_backend.render.camera import to_pixels_depth
from fitter_backend.render.rasterise import RasterBuffers, interpolate, rasterise
from fitter_backend.render.shading import DirectionalLight, shade, to_uint8, vertex_normals
from fitter_backend.render.visibility import visible_points
from fitter_backend.roi.regions import similarity_matrix
from onnx_models.appearance import (augment, background, cavity_occlusion, draw_occluders, fill_polygon, hair_detail,
                                    sample_lights, sample_look, shadowed, skin_detail, specular)
from onnx_models.landmark_sets import LandmarkSet

IDENTITY_SEED = 5_000_000
NEGATIVE_SEED = 7_000_000
#: First seed of the head-free crops of each use: training, validation and evaluation never share one.
NEGATIVE_OFFSETS = {"train": 0, "val": 10_000_000, "evaluation": 20_000_000}
SCLERA = np.array([0.62, 0.60, 0.56])
TEETH = np.array([0.62, 0.58, 0.48])
TONGUE = np.array([0.45, 0.16, 0.15])
CAVITY = np.array([0.08, 0.02, 0.02])
PUPIL_RADIUS_M, IRIS_RADIUS_M = 0.0022, 0.006
FOCAL_PX = 1000.0  # of the virtual full frame; only the crop is rendered
#: Bumped whenever samples change for the same (seed, identity): cached datasets are per version.
GENERATOR_VERSION = 3


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    size_px: int = 128
    supersample: int = 2
    roi_scale: float = 1.15            # crop side / longer side of the landmarks' bounding box
    roi_scale_jitter: float = 0.10     # log-normal sigma of the crop side
    roi_shift_jitter: float = 0.06     # normal sigma of the crop centre, fraction of the side
    # "square": the offline square around all landmarks; "affine": the similarity that puts the
    # eye centres and the mouth centre at ``affine_targets`` (fractions of the side), jittered
    # like a detector's keypoints (scale and shift as above, rotation ``roi_rotation_jitter_deg``).
    roi: str = "square"
    affine_targets: tuple = ((0.38, 0.42), (0.62, 0.42), (0.5, 0.70))   # in AFFINE_ANCHORS order
    roi_rotation_jitter_deg: float = 5.0
    max_yaw_deg: float = 95.0
    occluders: bool = True
    augment: bool = True


@dataclasses.dataclass
class Sample:
    image: np.ndarray         # (S, S, 3) uint8 RGB
    landmarks_px: np.ndarray  # (N, 2) float32 crop pixels
    visible: np.ndarray       # (N,) bool
    identity_id: int
    raster: RasterBuffers | None = None  # at supersample x size, when asked for (tests)


def sample_expression(model: HeadModel, rng: np.random.Generator) -> np.ndarray:
    """(E,) ARKit weights in [0, 1] like a frame of a real performance: a talking frame,
    plus a few random channels (independent left/right: asymmetric), sometimes at full strength."""
    names = model.expression_names
    expression = np.zeros(model.num_expression)
    kind = rng.random()
    if kind < 0.45:
        expression = talking_expressions(model, 40, rng)[rng.integers(40)]
    if kind > 0.1:
        for channel in rng.choice(len(names), size=rng.poisson(2.0) + (kind > 0.8) * 2, replace=False):
            strength = rng.uniform(0.6, 1.0) if rng.random() < 0.25 else rng.beta(1.2, 2.5)
            expression[channel] = max(expression[channel], strength)
            mirror = names[channel].replace("Left", "#").replace("Right", "Left").replace("#", "Right")
            if mirror != names[channel] and rng.random() < 0.6:   # mostly symmetric, often not exactly
                expression[names.index(mirror)] = np.clip(strength + rng.normal(0, 0.15), 0, 1)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        if name in names and rng.random() < 0.08:
            expression[names.index(name)] = rng.uniform(0.5, 1.0)
    return expression


def sample_pose(model: HeadModel, rng: np.random.Generator, max_yaw_deg: float) -> np.ndarray:
    """(J, 3) axis-angle joint rotations: head yaw up to profile, pitch, roll, neck, gaze."""
    rotations = np.zeros((model.num_joints, 3))
    yaw = np.clip(rng.normal(0, 40), -max_yaw_deg, max_yaw_deg) if rng.random() < 0.8 \
        else rng.uniform(-max_yaw_deg, max_yaw_deg)
    pitch, roll = np.clip(rng.normal(0, 14), -40, 40), np.clip(rng.normal(0, 9), -35, 35)
    r = rodrigues(np.radians([0, yaw, 0])) @ rodrigues(np.radians([pitch, 0, 0])) @ rodrigues(np.radians([0, 0, roll]))
    rotations[0] = rotation_vector(r)
    if "neck" in model.joint_names:
        rotations[model.joint_index("neck")] = rng.normal(0, 0.05, 3)
    gaze = np.radians([np.clip(rng.normal(0, 10), -25, 25), np.clip(rng.normal(0, 15), -35, 35), 0])
    for eye in ("eye_L", "eye_R"):
        if eye in model.joint_names:
            rotations[model.joint_index(eye)] = gaze + rng.normal(0, 0.01, 3)
    return rotations



class SyntheticGenerator:
    """Renders samples of one head model with one landmark set (deterministic per seed)."""

    def __init__(self, model: HeadModel, landmark_set: LandmarkSet, config: SynthConfig = SynthConfig()):
        landmark_set.check_head(model)
        self.model, self.landmark_set, self.config = model, landmark_set, config
        self.template = model.template.astype(np.float64)
        self.rig = Rig.from_model(model)
        regions = model.regions
        empty = np.zeros(model.num_vertices, bool)
        self.eyeballs, self.teeth = regions.get("eyeballs", empty), regions.get("teeth", empty)
        self.tongue, self.lips = regions.get("tongue", empty), regions.get("lips", empty)
        self.hair_region = regions.get("back_of_head", empty) | regions.get("face", empty)
        # Inside surfaces (mouth, eye sockets) are seen from behind; eyes, teeth and tongue are not.
        self.inner_parts = (self.eyeballs | self.teeth | self.tongue)[model.triangles[:, 0]]
        semantic = dict(zip(model.semantic_points.names, surface_points(
            self.template[None], model.triangles, model.semantic_points)[0]))
        self.brows = np.array([semantic[f"ibug_{k:02d}"] for k in range(17, 27)])
        self.mouth_y = semantic["ibug_57"][1]
        self.eye_centres = {}
        for side, sign in (("L", 1), ("R", -1)):
            members = self.eyeballs & (np.sign(self.template[:, 0]) == sign)
            self.eye_centres[side] = self.template[members].mean(0)
        self.eye_points = [landmark_set.semantic.get(n) for n in ("pupil_R", "pupil_L")]
        # Hair shell geometry: the hairline drops from above the brows (front) to the nape (back).
        self.rest_normals = vertex_normals(self.template, model.triangles)
        ears = regions.get("ears", empty)
        self.ear_y = float(self.template[ears, 1].mean()) if ears.any() else float(self.brows[:, 1].min() - 0.03)
        self.ear_z = float(self.template[ears, 2].mean()) if ears.any() else 0.0
        self.brow_z = float(self.brows[:, 2].mean())
        lowest = self.template[:, 1].min()
        self.neck_ring = np.nonzero(self.template[:, 1] < lowest + 0.012)[0]
        self.triangle_count = len(model.triangles)
        self.occlusion = cavity_occlusion(self.template, model.triangles, self.rest_normals).astype(np.float32)
        # Lash lines: the lid skin within ~1.3 mm of the eye contours (iBUG 36-47) is dark.
        eyelids = regions.get("eyelids", empty) | regions.get("face", empty)
        lash = np.zeros(model.num_vertices, bool)
        for ring in (range(36, 42), range(42, 48)):
            contour = np.array([semantic[f"ibug_{k:02d}"] for k in ring])
            samples = np.concatenate([contour + t * (np.roll(contour, -1, axis=0) - contour)
                                      for t in np.linspace(0, 1, 8, endpoint=False)])
            near = np.linalg.norm(self.template[:, None] - samples[None], axis=2).min(axis=1) < 0.0013
            lash |= near & eyelids
        self.lash_line = lash
        self.anchors = landmark_set.anchors()        # the contract's anchors: eye rings, mouth corners
        ids = self.landmark_set.points.vertex_ids(model.triangles)
        self.ids, self.bary = ids, landmark_set.points.barycentric.astype(np.float64)

    # -- per identity -------------------------------------------------------------------
    def identity(self, identity_id: int):
        rng = np.random.default_rng([IDENTITY_SEED, identity_id])
        return rng.normal(size=self.model.num_identity), sample_look(rng)

    def _albedo(self, look) -> np.ndarray:
        template = self.template
        albedo = np.tile(look.skin, (self.model.num_vertices, 1))
        albedo[self.lips] = look.lips
        brow_distance = np.min(np.linalg.norm(template[:, None] - self.brows[None], axis=2), axis=1)
        brows = np.clip(1 - brow_distance / 0.007, 0, 1) * look.brow_strength
        albedo = albedo * (1 - brows[:, None]) + look.hair * brows[:, None]
        if np.isfinite(look.hairline_m):
            scalp = self.hair_region & ((template[:, 1] > self.brows[:, 1].max() + look.hairline_m)
                                        | (template[:, 2] < -0.01))
            albedo[scalp] = look.hair
        if look.beard > 0:
            beard = (template[:, 1] < self.mouth_y) & (template[:, 2] > 0.03) & ~self.lips
            albedo[beard] *= 1 - 0.6 * look.beard
        albedo[self.lash_line] *= 0.2
        albedo *= self.occlusion[:, None]
        albedo[self.teeth] = TEETH
        albedo[self.tongue] = TONGUE
        albedo[self.eyeballs] = SCLERA
        return albedo.astype(np.float32)

    def _hair_shell(self, look) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scalp's hair as a shell: (S,) vertex ids it grows from, (S,) thickness in metres
        (tapering to zero at the hairline) and (H, 3) triangles over the shell's own vertices."""
        if look.hair_volume_m <= 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3), np.int64)
        y, z = self.template[:, 1], self.template[:, 2]
        front = np.clip((z - self.ear_z) / max(self.brow_z - self.ear_z, 1e-3), 0, 1)
        hairline_y = self.ear_y - 0.025 + front * (self.brows[:, 1].max() + look.hairline_m - self.ear_y + 0.025)
        grows = self.hair_region & (y > hairline_y - 0.004)
        ids = np.nonzero(grows)[0]
        thickness = look.hair_volume_m * np.clip((y[ids] - hairline_y[ids]) / 0.03, 0, 1)
        local = np.full(self.model.num_vertices, -1)
        local[ids] = np.arange(len(ids))
        triangles = local[self.model.triangles]
        return ids, thickness, triangles[(triangles >= 0).all(axis=1)]

    def _body(self, canvas: np.ndarray, to_crop, vertices_cam: np.ndarray, root_rotation: np.ndarray,
              look, lights: list, ambient: np.ndarray, rng: np.random.Generator) -> None:
        """Neck, shoulders and a top below the head (drawn behind it on the background):
        real crops always continue below the neck, the head model ends there."""
        forward_axis = rodrigues(root_rotation) @ np.array([0.0, 0.0, 1.0])
        yaw = 0.5 * np.arctan2(forward_axis[0], forward_axis[2]) + rng.normal(0, 0.15)
        x_axis, y_axis = np.array([np.cos(yaw), 0.0, -np.sin(yaw)]), np.array([0.0, 1.0, 0.0])
        base = vertices_cam[self.neck_ring].mean(0)
        brightness = float(ambient.mean() + 0.6 * sum(light.intensity for light in lights) / max(len(lights), 1))

        def points(outline) -> np.ndarray:
            outline = np.asarray(outline, dtype=np.float64)
            return to_crop(base + outline[:, :1] * x_axis + outline[:, 1:2] * y_axis + np.array([0, 0, -0.03]))

        neck_w, neck_len = 0.05 * rng.uniform(0.85, 1.2), rng.uniform(0.02, 0.08)
        fill_polygon(canvas, points([[-neck_w, 0.05], [neck_w, 0.05], [neck_w, -neck_len - 0.03],
                                     [-neck_w, -neck_len - 0.03]]), look.skin, 0.8 * brightness, rng)
        shoulders = rng.uniform(0.17, 0.23)
        outline = [[s * x, y] for s in (-1, 1) for x, y in (
            (neck_w * 1.3, -neck_len), (shoulders * 0.7, -neck_len - 0.025), (shoulders, -neck_len - 0.07),
            (shoulders * 1.05, -neck_len - 0.25), (shoulders * 1.05, -0.9))]
        fill_polygon(canvas, points(outline), look.clothing, brightness, rng)
        if rng.random() < 0.35:                                  # open collar
            fill_polygon(canvas, points([[-neck_w * 1.2, -neck_len + 0.005], [neck_w * 1.2, -neck_len + 0.005],
                                         [0, -neck_len - rng.uniform(0.03, 0.12)]]), look.skin, 0.8 * brightness, rng)

    # -- one sample -----------------------------------------------------------------------
    def sample(self, seed: int, identity_id: int, keep_raster: bool = False) -> Sample:
        cfg, model = self.config, self.model
        rng = np.random.default_rng([seed, identity_id])
        identity, look = self.identity(identity_id)
        expression = sample_expression(model, rng)
        rotations = sample_pose(model, rng, cfg.max_yaw_deg)
        world = forward(self.rig, Pose.for_model(model, identity, expression[None], rotations[None])).posed[0]
        # Camera at the origin looking down -Z; the head centre at distance d, off-axis.
        distance = float(np.exp(rng.uniform(np.log(0.3), np.log(1.8))))
        centre = (world.min(0) + world.max(0)) / 2
        offset = rng.uniform(-0.35, 0.35, 2) * distance
        vertices_cam = world - centre + np.array([offset[0], offset[1], -distance])
        normals = vertex_normals(vertices_cam, model.triangles)
        hair_ids, thickness, hair_triangles = self._hair_shell(look)
        # One mesh: the head, then the hair shell over the scalp (its own vertices).
        vertices = np.concatenate([vertices_cam, vertices_cam[hair_ids] + normals[hair_ids] * thickness[:, None]])
        triangles = np.concatenate([model.triangles, hair_triangles + model.num_vertices])
        rest = np.concatenate([self.template, self.template[hair_ids] + self.rest_normals[hair_ids] * thickness[:, None]])
        frame_px = to_pixels_depth(vertices, FOCAL_PX, (0, 0))     # principal point at (0, 0)
        landmarks = np.einsum("nk,nkc->nc", self.bary, frame_px[self.ids])
        render = cfg.size_px * cfg.supersample
        to_render = self._crop_matrix(landmarks[:, :2], rng) * render     # frame px -> render px

        def to_crop(points_cam: np.ndarray) -> np.ndarray:
            """(K, 3) camera space -> (K, 3) [u, v, depth] in render pixels of the crop."""
            projected = to_pixels_depth(points_cam, FOCAL_PX, (0, 0))
            projected[:, :2] = projected[:, :2] @ to_render[:, :2].T + to_render[:, 2]
            return projected

        crop = to_crop(vertices)
        raster = rasterise(crop, triangles, (render, render))

        lights, ambient = sample_lights(rng)
        albedo = np.concatenate([self._albedo(look), np.tile(look.hair, (len(hair_ids), 1)).astype(np.float32)])
        all_normals = vertex_normals(vertices, triangles)
        linear = shade(raster, triangles, all_normals, albedo, lights, ambient, positions=vertices)
        mask = raster.mask
        positions_px = interpolate(raster, triangles, vertices)
        key = lights[0]
        if isinstance(key, DirectionalLight):                 # cast shadows of the key light
            dark = shadowed(positions_px[mask].astype(np.float64), vertices, triangles, np.asarray(key.to_light))
            if dark.any():
                key_only = shade(raster, triangles, all_normals, albedo, [key], (0.0, 0.0, 0.0), positions=vertices)
                lit = linear[mask]
                lit[dark] -= key_only[mask][dark]
                linear[mask] = lit
        on_hair = mask & (raster.triangle_id >= self.triangle_count)
        on_head = mask & ~on_hair
        rest_px = interpolate(raster, triangles, rest)
        linear[on_head] *= skin_detail(look, rest_px[on_head])[:, None]
        linear[on_hair] *= hair_detail(look, rest_px[on_hair])[:, None]
        skin = on_head & ~self.inner_parts[self._head_triangle(raster)]
        if skin.any():
            normal_px = interpolate(raster, triangles, all_normals)[skin]
            normal_px /= np.maximum(np.linalg.norm(normal_px, axis=1, keepdims=True), 1e-9)
            linear[skin] += specular(normal_px, positions_px[skin].astype(np.float64), lights, look.gloss,
                                     float(rng.uniform(8, 40)))
        self._eyes(linear, raster, rest_px, look)
        self._cavity(linear, raster, vertices, triangles, ambient)
        canvas = background(rng, render)
        self._body(canvas, lambda p: to_crop(p)[:, :2], vertices_cam, rotations[0], look, lights, ambient, rng)
        if look.hair_long_m > 0 and len(hair_ids):
            behind = vertices[model.num_vertices:][self.template[hair_ids, 2] < self.ear_z + 0.03]
            if len(behind):
                fallen = behind + np.array([0.0, -look.hair_long_m, -0.02])
                fill_polygon(canvas, to_crop(np.concatenate([behind, fallen]))[:, :2], look.hair,
                             float(ambient.mean() + 0.3), rng, stripes=True)
        image = np.where(mask[..., None], linear, canvas)
        image = cv2.resize(image, (cfg.size_px, cfg.size_px), interpolation=cv2.INTER_AREA)

        landmarks_crop = landmarks.copy()
        landmarks_crop[:, :2] = landmarks[:, :2] @ to_render[:, :2].T + to_render[:, 2]
        visible = visible_points(raster, landmarks_crop, 0.003)
        landmarks_px = (landmarks_crop[:, :2] / cfg.supersample).astype(np.float32)
        if cfg.occluders:
            eyes = np.array([landmarks_px[i] if i is not None else [np.nan, np.nan] for i in self.eye_points])
            covered = draw_occluders(image, rng, landmarks_px, eyes, look.skin)
            inside = visible.copy()
            cols = np.clip(landmarks_px[:, 0].astype(int), 0, cfg.size_px - 1)
            rows = np.clip(landmarks_px[:, 1].astype(int), 0, cfg.size_px - 1)
            visible = inside & ~covered[rows, cols]
        rgb = to_uint8(image)
        if cfg.augment:
            rgb = augment(rgb, rng)
        return Sample(rgb, landmarks_px, visible, identity_id, raster if keep_raster else None)

    def _crop_matrix(self, landmarks_px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(2, 3) frame px -> unit crop: the ROI the landmark stage would cut, jittered."""
        cfg = self.config
        scale_jitter = float(np.exp(rng.normal(0, cfg.roi_scale_jitter)))
        if cfg.roi == "square":
            low, high = landmarks_px.min(0), landmarks_px.max(0)
            side = cfg.roi_scale * float((high - low).max()) * scale_jitter
            corner = (low + high) / 2 + rng.normal(0, cfg.roi_shift_jitter, 2) * side - side / 2
            return np.array([[1 / side, 0, -corner[0] / side], [0, 1 / side, -corner[1] / side]])
        if cfg.roi != "affine":
            raise ValueError(f"SynthConfig.roi must be 'square' or 'affine', got {cfg.roi!r}")
        anchors = np.array([landmarks_px[self.anchors[name]].mean(0) for name in AFFINE_ANCHORS])
        aligned = similarity_matrix(anchors, np.asarray(cfg.affine_targets, dtype=np.float64))
        # Jitter about the crop centre: rotate, scale, shift (the detector's keypoint noise).
        angle = np.radians(rng.normal(0, cfg.roi_rotation_jitter_deg))
        linear = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale_jitter
        shift = 0.5 - linear @ np.array([0.5, 0.5]) + rng.normal(0, cfg.roi_shift_jitter / 2, 2)
        return np.concatenate([linear @ aligned[:, :2], (linear @ aligned[:, 2] + shift)[:, None]], axis=1)

    def _head_triangle(self, raster) -> np.ndarray:
        """(h, w) the head triangle at each pixel, clamped into the head's range (background and
        hair pixels get some valid id: mask them with ``raster.mask`` / the hair test)."""
        return np.clip(raster.triangle_id, 0, self.triangle_count - 1)

    def _eyes(self, linear: np.ndarray, raster, rest: np.ndarray, look) -> None:
        """Iris and pupil per pixel on the eyeballs (their rest positions rotate with the gaze)."""
        on_eye = raster.mask & (raster.triangle_id < self.triangle_count) & \
            self.eyeballs[self.model.triangles[self._head_triangle(raster), 0]]
        if not on_eye.any():
            return
        points = rest[on_eye]
        left = points[:, 0] > 0
        centre = np.where(left[:, None], self.eye_centres["L"], self.eye_centres["R"])
        offset = points - centre
        radial = np.linalg.norm(offset[:, :2], axis=1) * (offset[:, 2] > 0) + 1.0 * (offset[:, 2] <= 0)
        shading = linear[on_eye] / np.maximum(SCLERA, 1e-3).astype(np.float32)
        colour = np.where((radial < PUPIL_RADIUS_M)[:, None], 0.01,
                          np.where((radial < IRIS_RADIUS_M)[:, None],
                                   look.iris * (0.6 + 0.4 * radial[:, None] / IRIS_RADIUS_M), SCLERA))
        linear[on_eye] = shading * colour.astype(np.float32)

    def _cavity(self, linear: np.ndarray, raster, vertices_cam: np.ndarray, triangles: np.ndarray,
                ambient: np.ndarray) -> None:
        """Head surfaces seen from behind (inside the mouth and eye sockets) are dark; the
        hair shell's inside is not (it is only glimpsed at its rim)."""
        corners = vertices_cam[triangles]
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        lit_inside = np.concatenate([self.inner_parts, np.ones(len(triangles) - self.triangle_count, bool)])
        backfacing = (np.einsum("tc,tc->t", normal, -corners[:, 0]) < 0) & ~lit_inside
        inside = raster.mask & backfacing[np.maximum(raster.triangle_id, 0)]
        linear[inside] = (CAVITY * (0.5 + ambient)).astype(np.float32)


def negative_sample(seed: int, size_px: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB crop without a head (the presence output's negatives): a background
    with clutter, skin-, hair- and cloth-coloured blobs, hands, strands, augmented like samples."""
    rng = np.random.default_rng([NEGATIVE_SEED, seed])
    render = 2 * size_px
    canvas = background(rng, render)
    look = sample_look(rng)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for _ in range(rng.integers(0, 4)):
        centre, radii = rng.uniform(0, render, 2), rng.uniform(0.1, 0.5, 2) * render
        outline = centre + np.stack([np.cos(angles) * radii[0], np.sin(angles) * radii[1]], axis=1)
        colour = (look.skin, look.hair, look.clothing)[rng.integers(3)] * np.exp(rng.normal(0, 0.2, 3))
        fill_polygon(canvas, outline, colour, float(rng.uniform(0.4, 1.4)), rng, stripes=rng.random() < 0.3)
    image = cv2.resize(canvas, (size_px, size_px), interpolation=cv2.INTER_AREA)
    draw_occluders(image, rng, rng.uniform(0, size_px, (16, 2)), np.full((2, 2), np.nan), look.skin)
    return augment(to_uint8(image), rng)


# -- batches in parallel processes --------------------------------------------------------
_WORKER: SyntheticGenerator | None = None


def _init_worker(landmark_set_name: str, config: SynthConfig) -> None:
    global _WORKER
    import fitter_backend  # noqa: F401  (thread defaults: one numpy thread per worker)
    from fitter_backend.head_models.open_head import load_open_head
    from onnx_models.landmark_sets import load_landmark_set
    cv2.setNumThreads(1)
    model = load_open_head()
    _WORKER = SyntheticGenerator(model, load_landmark_set(landmark_set_name, model), config)


def _render_one(job: tuple[int, int]) -> Sample:
    return _WORKER.sample(*job)


def generate(landmark_set_name: str, seeds: np.ndarray, identity_ids: np.ndarray,
             config: SynthConfig = SynthConfig(), workers: int = 1, progress=None) -> dict[str, np.ndarray]:
    """Render samples (seed k, identity k) with ``workers`` processes -> arrays
    images (K, S, S, 3) uint8, landmarks_px (K, N, 2), visible (K, N), identity_ids (K,)."""
    jobs = list(zip((int(s) for s in seeds), (int(i) for i in identity_ids)))
    if workers <= 1:
        _init_worker(landmark_set_name, config)
        results = []
        for k, job in enumerate(jobs):
            results.append(_render_one(job))
            if progress and (k + 1) % 200 == 0:
                progress(k + 1, len(jobs))
    else:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, _init_worker, (landmark_set_name, config)) as pool:
            results = []
            for k, sample in enumerate(pool.imap(_render_one, jobs, chunksize=8)):
                results.append(sample)
                if progress and (k + 1) % 200 == 0:
                    progress(k + 1, len(jobs))
    return {"images": np.stack([r.image for r in results]),
            "landmarks_px": np.stack([r.landmarks_px for r in results]),
            "visible": np.stack([r.visible for r in results]),
            "identity_ids": np.array([r.identity_id for r in results], np.int64)}


def contact_sheet(data: dict[str, np.ndarray], columns: int = 8, scale: int = 2) -> np.ndarray:
    """BGR sheet of samples with their labels: green visible, red hidden or occluded."""
    tiles = []
    for image, points, visible in zip(data["images"], data["landmarks_px"], data["visible"]):
        tile = cv2.resize(np.ascontiguousarray(image[..., ::-1]), None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_NEAREST)
        for (u, v), seen in zip(points * scale, visible):
            cv2.circle(tile, (int(round((u - 0.5) * 4)), int(round((v - 0.5) * 4))), 4,
                       (60, 230, 60) if seen else (40, 40, 230), -1, cv2.LINE_AA, 2)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_models.synthetic",
                                     description="Render synthetic samples: a contact sheet and images/s.")
    parser.add_argument("--set", default="dense_320", help="landmark set (dense_700 or dense_320)")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    parser.add_argument("--roi", default="affine", choices=("affine", "square"), help="the crop (SynthConfig.roi)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = generate(args.set, np.arange(args.count) + args.seed * 1_000_000, np.arange(args.count),
                    SynthConfig(size_px=args.size, roi=args.roi), args.workers)
    elapsed = time.perf_counter() - started
    print(f"{args.count} samples of {args.size}x{args.size} px ({args.set}) in {elapsed:.1f} s with "
          f"{args.workers} worker(s): {args.count / elapsed:.1f} images/s (including start-up)")
    if args.sheet:
        from fitter_backend.render.head_png import write_png
        print(write_png(args.sheet, contact_sheet(data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
