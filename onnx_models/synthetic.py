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
from fitter_backend.render.camera import to_pixels_depth
from fitter_backend.render.rasterise import RasterBuffers, interpolate, rasterise
from fitter_backend.render.shading import shade, to_uint8, vertex_normals
from fitter_backend.render.visibility import visible_points
from onnx_models.appearance import augment, background, draw_occluders, sample_lights, sample_look, skin_detail
from onnx_models.landmark_sets import LandmarkSet

IDENTITY_SEED = 5_000_000
SCLERA = np.array([0.62, 0.60, 0.56])
TEETH = np.array([0.62, 0.58, 0.48])
TONGUE = np.array([0.45, 0.16, 0.15])
CAVITY = np.array([0.08, 0.02, 0.02])
PUPIL_RADIUS_M, IRIS_RADIUS_M = 0.0022, 0.006
FOCAL_PX = 1000.0  # of the virtual full frame; only the crop is rendered


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    size_px: int = 128
    supersample: int = 2
    roi_scale: float = 1.15            # crop side / longer side of the landmarks' bounding box
    roi_scale_jitter: float = 0.10     # log-normal sigma of the crop side
    roi_shift_jitter: float = 0.06     # normal sigma of the crop centre, fraction of the side
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
        albedo[self.teeth] = TEETH
        albedo[self.tongue] = TONGUE
        albedo[self.eyeballs] = SCLERA
        return albedo.astype(np.float32)

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
        frame_px = to_pixels_depth(vertices_cam, FOCAL_PX, (0, 0))     # principal point at (0, 0)
        landmarks = np.einsum("nk,nkc->nc", self.bary, frame_px[self.ids])
        low, high = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
        side = cfg.roi_scale * float((high - low).max()) * float(np.exp(rng.normal(0, cfg.roi_scale_jitter)))
        roi_centre = (low + high) / 2 + rng.normal(0, cfg.roi_shift_jitter, 2) * side
        render = cfg.size_px * cfg.supersample
        scale = render / side
        crop = frame_px.copy()
        crop[:, :2] = (frame_px[:, :2] - (roi_centre - side / 2)) * scale
        raster = rasterise(crop, model.triangles, (render, render))

        lights, ambient = sample_lights(rng)
        albedo = self._albedo(look)
        normals = vertex_normals(vertices_cam, model.triangles)
        linear = shade(raster, model.triangles, normals, albedo, lights, ambient, positions=vertices_cam)
        mask = raster.mask
        rest = interpolate(raster, model.triangles, self.template)
        linear[mask] *= skin_detail(look, rest[mask])[:, None]
        self._eyes(linear, raster, rest, look)
        self._cavity(linear, raster, vertices_cam, ambient)
        image = np.where(mask[..., None], linear, background(rng, render))
        image = cv2.resize(image, (cfg.size_px, cfg.size_px), interpolation=cv2.INTER_AREA)

        landmarks_crop = landmarks.copy()
        landmarks_crop[:, :2] = (landmarks[:, :2] - (roi_centre - side / 2)) * scale
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

    def _eyes(self, linear: np.ndarray, raster, rest: np.ndarray, look) -> None:
        """Iris and pupil per pixel on the eyeballs (their rest positions rotate with the gaze)."""
        on_eye = raster.mask & self.eyeballs[self.model.triangles[np.maximum(raster.triangle_id, 0), 0]]
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

    def _cavity(self, linear: np.ndarray, raster, vertices_cam: np.ndarray, ambient: np.ndarray) -> None:
        """Surfaces seen from behind (inside the mouth and eye sockets) are dark."""
        corners = vertices_cam[self.model.triangles]
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        backfacing = (np.einsum("tc,tc->t", normal, -corners[:, 0]) < 0) & ~self.inner_parts
        inside = raster.mask & backfacing[np.maximum(raster.triangle_id, 0)]
        linear[inside] = (CAVITY * (0.5 + ambient)).astype(np.float32)


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
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = generate(args.set, np.arange(args.count) + args.seed * 1_000_000, np.arange(args.count),
                    SynthConfig(size_px=args.size), args.workers)
    elapsed = time.perf_counter() - started
    print(f"{args.count} samples of {args.size}x{args.size} px ({args.set}) in {elapsed:.1f} s with "
          f"{args.workers} worker(s): {args.count / elapsed:.1f} images/s (including start-up)")
    if args.sheet:
        from fitter_backend.render.head_png import write_png
        print(write_png(args.sheet, contact_sheet(data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
