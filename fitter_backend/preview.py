"""Preview media of a fit a person can look at: the fitted head drawn over the frames and the
landmarks coloured by their sigma (green: certain, red: uncertain), as PNGs of a few telling
frames and a short overlay video."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from fitter_backend.fitting.cameras import project
from fitter_backend.fitting.sequence import FitResult
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import posed_vertices
from fitter_backend.landmarks.pipeline import LandmarkTrack
from fitter_backend.paths import opencv_path
from fitter_backend.render.head_png import AMBIENT, STUDIO_LIGHTS
from fitter_backend.render.rasterise import rasterise
from fitter_backend.render.shading import shade, vertex_normals
from fitter_backend.video.frames import Frame

MESH_ALPHA = 0.45
SIGMA_GOOD_PX, SIGMA_BAD_PX = 1.5, 12.0
MAX_VIDEO_FRAMES = 250
MAX_PNG = 4


def sigma_colours(sigma_px: np.ndarray) -> np.ndarray:
    """(N,) sigmas -> (N, 3) BGR: green at SIGMA_GOOD_PX and below, red at SIGMA_BAD_PX and above."""
    t = np.clip((np.log(sigma_px) - np.log(SIGMA_GOOD_PX)) / np.log(SIGMA_BAD_PX / SIGMA_GOOD_PX), 0, 1)
    return np.stack([np.zeros_like(t), 255 * (1 - t), 255 * t], axis=-1).astype(np.uint8)


def draw_overlay(image_rgb: np.ndarray, model: HeadModel, vertices: np.ndarray, result: FitResult, camera: int,
                 mu_px: np.ndarray | None, sigma_px: np.ndarray | None, caption: str) -> np.ndarray:
    """One frame (RGB) with the fitted mesh blended in and the landmarks drawn; returns BGR uint8."""
    image = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    if image.dtype != np.uint8:
        image = (image / (np.iinfo(image.dtype).max / 255)).astype(np.uint8)
    height, width = image.shape[:2]
    proj = project(vertices[None], result.params.cameras, camera, derivatives=False)
    depth = -proj.camera_points[0, :, 2]
    # The renderer's pixel centres sit at +0.5; the fitter's principal point is the image centre.
    raster = rasterise(np.column_stack([proj.pixels[0], depth]), model.triangles, (width, height))
    if raster.mask.any():
        shaded = shade(raster, model.triangles, vertex_normals(proj.camera_points[0], model.triangles),
                       np.array([0.75, 0.72, 0.70], np.float32), list(STUDIO_LIGHTS), AMBIENT,
                       positions=proj.camera_points[0])
        mesh = np.clip(255 * shaded[..., ::-1] ** (1 / 2.2), 0, 255).astype(np.uint8)
        mask = raster.mask[..., None]
        image = np.where(mask, (MESH_ALPHA * mesh + (1 - MESH_ALPHA) * image).astype(np.uint8), image)
    if mu_px is not None:
        seen = np.isfinite(mu_px).all(axis=1)  # a point can be missing alone (an iris under a shut lid)
        for (x, y), colour in zip(mu_px[seen], sigma_colours(sigma_px[seen])):
            cv2.circle(image, (int(round(x - 0.5)), int(round(y - 0.5))), 1, tuple(int(c) for c in colour), -1,
                       lineType=cv2.LINE_AA)
    cv2.putText(image, caption, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def telling_frames(result: FitResult, count: int = MAX_PNG) -> list[int]:
    """First, middle and last fitted frames and the one with the largest residual."""
    fitted = np.flatnonzero(np.isfinite(result.frame_rms))
    if not len(fitted):
        return [0]
    worst = int(fitted[np.argmax(result.frame_rms[fitted])])
    chosen = [int(fitted[0]), int(fitted[len(fitted) // 2]), int(fitted[-1]), worst]
    return sorted(set(chosen))[:count]


def write_previews(views: Iterable[Sequence[Frame]], fps: float, model: HeadModel, track: LandmarkTrack,
                   result: FitResult, folder: Path, progress: Callable[[float], None] | None = None) -> list[Path]:
    """PNGs of telling frames (every view) and an overlay video of the first view.

    views: per fitted frame, its images of every camera (the frames the track was made from);
    fps: their frame rate (after any stride).
    """
    folder.mkdir(parents=True, exist_ok=True)
    params = result.params
    total = len(track.frame_indices)
    keep_every = max(1, int(np.ceil(total / MAX_VIDEO_FRAMES)))
    png_frames = set(telling_frames(result))
    written: list[Path] = []
    writer = None
    video_path = folder / "overlay.mp4"
    for t, frames in enumerate(views):
        if t >= total:
            break
        draw_video = t % keep_every == 0
        if not (draw_video or t in png_frames):
            continue
        vertices = posed_vertices(model, params.identity, params.expression[t], params.rotations[t],
                                  params.translation_m[t])[0]
        flags = ",".join(result.flags[t]) or "ok"
        for view, frame in enumerate(frames):
            if view and t not in png_frames:
                continue
            rms = result.frame_rms[t]
            caption = f"frame {track.frame_indices[t]}  rms {rms:.2f}  {flags}"
            valid = track.valid[t, view]
            overlay = draw_overlay(frame.image, model, vertices, result, view,
                                   track.mu_px[t, view] if valid else None, track.sigma_px[t, view], caption)
            if t in png_frames:
                path = folder / f"frame_{int(track.frame_indices[t]):05d}_view{view}.png"
                path.write_bytes(cv2.imencode(".png", overlay)[1].tobytes())  # no path through OpenCV
                written.append(path)
            if view == 0 and draw_video:
                if writer is None:
                    writer = cv2.VideoWriter(opencv_path(video_path), cv2.VideoWriter_fourcc(*"mp4v"),
                                             max(1.0, fps / keep_every),
                                             (overlay.shape[1], overlay.shape[0]))
                writer.write(overlay)
        if progress:
            progress((t + 1) / total)
    if writer is not None:
        writer.release()
        written.append(video_path)
    return written
