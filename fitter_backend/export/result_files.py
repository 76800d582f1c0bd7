"""The files a finished job leaves for the Blender add-on to import.

A job's result folder holds

- ``rig.npz``: the fitted head as Blender builds it (see :func:`rig_arrays`),
- ``animation.npz``: per-frame parameters and cameras (see :func:`animation_arrays`),
- ``fit.npz`` / ``fit.json``: the fitter's own result and report (:mod:`fitting.result_io`),
- for video jobs also ``landmarks.npz`` and ``report.json`` (:mod:`fitter_backend.pipeline`),
- ``result.json``: format, version, every file with its size and sha256, written LAST by an
  atomic rename. A folder without ``result.json`` is incomplete and is never imported.

Coordinates. The backend is +Y up with the face looking down +Z and camera 0 looking down
-Z (OpenGL); Blender's world is +Z up. Every position, rotation axis and camera matrix
written here is already in Blender's world frame, by the fixed proper rotation
``(x, y, z) -> (x, -z, y)`` (+90 degrees about X, :data:`AXIS_TO_BLENDER`): the face looks
down Blender's -Y (its "front" view) and the camera looks down +Y at it. Camera-local
axes need no change: Blender cameras, like the backend's, look down their local -Z with +Y up.

The rig is linear blend skinning: a vertex is ``sum_j w_vj (R_j^world (v - J_j) + O_j^world)
+ translation`` with joints posed along the parent chain; rotations are axis-angle, LOCAL to
each joint (relative to its parent), in Blender's world axes; the root rotates about its rest
position and the translation moves the whole head. Rest joints are those of the neutral
fitted head (expressions do not move them) and pose correctives are not exported: Blender's
armature cannot express either.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from fitter_backend import __version__
from fitter_backend.fitting.result_io import save_fit_result
from fitter_backend.fitting.sequence import FitResult
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import rodrigues
from fitter_backend.paths import sha256_file

RESULT_FORMAT = "facecap-result"
RESULT_FORMAT_VERSION = 1
RESULT_MANIFEST = "result.json"
SKIN_WEIGHT_MIN = 1e-6   # smaller skin weights are dropped from the sparse list

#: Backend frame -> Blender world frame: (x, y, z) -> (x, -z, y), a rotation (det +1).
AXIS_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def to_blender(points: np.ndarray) -> np.ndarray:
    """(..., 3) positions or rotation vectors in the backend frame -> Blender's world frame."""
    return np.asarray(points, dtype=np.float64) @ AXIS_TO_BLENDER.T


def rig_arrays(model: HeadModel, identity: np.ndarray) -> dict[str, np.ndarray]:
    """The fitted head in Blender's frame.

    vertices (V, 3) neutral with identity applied; triangles (F, 3); expression_deltas (E, V, 3)
    per channel at this identity (:meth:`HeadModel.blend_scales`); expression_names (E,);
    joint_positions (J, 3) rest joints of the neutral head;
    joint_parents (J,) (-1 root); joint_names (J,); skin_vertex, skin_joint, skin_weight (K,)
    the non-zero skin weights; model_name ().
    """
    identity = np.asarray(identity, dtype=np.float64)
    neutral = model.template.astype(np.float64) + np.einsum("vck,k->vc", model.identity_basis, identity)
    joints = model.joint_regressor.astype(np.float64) @ neutral
    # Each shape key at 1 is its unit's full pose on this identity (the blink keys close these lids).
    deltas = np.moveaxis(model.expression_basis, 2, 0) * model.blend_scales(identity)[:, None, None]  # (E, V, 3)
    skin_vertex, skin_joint = np.nonzero(model.skin_weights > SKIN_WEIGHT_MIN)
    return {
        "vertices": to_blender(neutral).astype(np.float32),
        "triangles": model.triangles.astype(np.int32),
        "expression_deltas": to_blender(deltas).astype(np.float32),
        "expression_names": np.array(model.expression_names, dtype=str),
        "joint_positions": to_blender(joints).astype(np.float32),
        "joint_parents": model.joint_parents.astype(np.int32),
        "joint_names": np.array(model.joint_names, dtype=str),
        "skin_vertex": skin_vertex.astype(np.int32),
        "skin_joint": skin_joint.astype(np.int32),
        "skin_weight": model.skin_weights[skin_vertex, skin_joint].astype(np.float32),
        "model_name": np.array(model.name, dtype=str),
    }


def camera_matrices_world(rotation: np.ndarray, translation_m: np.ndarray) -> np.ndarray:
    """(C, 3) axis-angle and (C, 3) world -> camera extrinsics (backend frame) ->
    (C, 4, 4) camera-to-world matrices in Blender's world frame (Blender camera objects)."""
    world_to_camera = rodrigues(np.asarray(rotation, dtype=np.float64))
    matrices = np.tile(np.eye(4), (len(world_to_camera), 1, 1))
    camera_to_world = np.swapaxes(world_to_camera, 1, 2)
    matrices[:, :3, :3] = AXIS_TO_BLENDER @ camera_to_world
    matrices[:, :3, 3] = -np.einsum("ij,cjk,ck->ci", AXIS_TO_BLENDER, camera_to_world, translation_m)
    return matrices


def animation_arrays(fit: Mapping[str, np.ndarray], frame_indices: np.ndarray, fps: float,
                     landmarks_px: np.ndarray | None = None, landmarks_sigma_px: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
    """Per-frame parameters in Blender's frame, from the arrays of ``fit.npz`` (see
    :mod:`fitter_backend.fitting.result_io`).

    expression (N, E); joint_rotations (N, J, 3) local axis-angle; translation_m (N, 3);
    frame_indices (N,) frames of the source clip; frame_flags (N,) comma-joined flags;
    frame_rms (N,); fps (); focal_px (C,); image_size_px (C, 2) (width, height);
    camera_matrix_world (C, 4, 4); optionally landmarks_px (N, C, S, 2) (x right, y down,
    NaN where not observed) and landmarks_sigma_px (N, C, S): what the fit saw, for the overlay.
    """
    n = len(fit["expression"])
    frame_indices = np.asarray(frame_indices, dtype=np.int32)
    if frame_indices.shape != (n,):
        raise ValueError(f"frame_indices must have shape ({n},), got {frame_indices.shape}")
    arrays = {
        "expression": np.asarray(fit["expression"], dtype=np.float32),
        "joint_rotations": to_blender(fit["joint_rotations"]).astype(np.float32),
        "translation_m": to_blender(fit["translation_m"]).astype(np.float32),
        "frame_indices": frame_indices,
        "frame_flags": np.asarray(fit["frame_flags"], dtype=str),
        "frame_rms": np.asarray(fit["frame_rms"], dtype=np.float32),
        "fps": np.array(float(fps)),
        "focal_px": np.asarray(fit["focal_px"], dtype=np.float64),
        "image_size_px": np.asarray(fit["image_size_px"], dtype=np.float64),
        "camera_matrix_world": camera_matrices_world(fit["camera_rotation"], fit["camera_translation_m"]),
    }
    if landmarks_px is not None:
        arrays["landmarks_px"] = np.asarray(landmarks_px, dtype=np.float32)
        arrays["landmarks_sigma_px"] = np.asarray(landmarks_sigma_px, dtype=np.float32)
    return arrays


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    partial.replace(path)




def finish_result(folder: str | Path, model: HeadModel, frame_indices: np.ndarray, fps: float, info: dict,
                  landmarks_px: np.ndarray | None = None, landmarks_sigma_px: np.ndarray | None = None) -> Path:
    """Add ``rig.npz``, ``animation.npz`` and, last, ``result.json`` to a folder that holds a
    fit (``fit.npz``/``fit.json``); returns the manifest's path.

    The manifest lists every file of the folder with its size and sha256; ``info``
    (JSON-ready: job id, mode, source, ...) is copied into it.
    """
    folder = Path(folder)
    with np.load(folder / "fit.npz", allow_pickle=False) as data:
        fit = {key: data[key] for key in data.files}
    _save_npz(folder / "rig.npz", rig_arrays(model, fit["identity"]))
    _save_npz(folder / "animation.npz", animation_arrays(fit, frame_indices, fps, landmarks_px, landmarks_sigma_px))
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and p.name != RESULT_MANIFEST and not p.name.endswith(".partial"))
    manifest = {
        "format": RESULT_FORMAT, "format_version": RESULT_FORMAT_VERSION,
        "backend_version": __version__, "created_unix_s": round(time.time(), 3),
        "head_model": model.name, "frames": len(fit["expression"]),
        "expression_channels": int(model.num_expression), "joints": list(model.joint_names),
        "axis_to_blender": AXIS_TO_BLENDER.astype(int).tolist(),
        "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
                  for name in names},
        **info,
    }
    partial = folder / (RESULT_MANIFEST + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(folder / RESULT_MANIFEST)
    return folder / RESULT_MANIFEST


def write_result(folder: str | Path, model: HeadModel, result: FitResult, frame_indices: np.ndarray,
                 fps: float, info: dict, landmarks_px: np.ndarray | None = None,
                 landmarks_sigma_px: np.ndarray | None = None) -> Path:
    """Write a fit and everything the add-on imports into ``folder``; returns result.json's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_fit_result(result, model, folder)
    return finish_result(folder, model, frame_indices, fps, info, landmarks_px, landmarks_sigma_px)


def finish_video_result(folder: str | Path, model: HeadModel, info: dict, default_fps: float = 25.0) -> Path:
    """:func:`finish_result` for a folder written by the video pipeline: frames, frame rate and
    landmarks come from its ``landmarks.npz``."""
    from fitter_backend.fitting.problem import Observations
    from fitter_backend.landmarks.pipeline import LandmarkTrack
    folder = Path(folder)
    track = LandmarkTrack.load_npz(folder / "landmarks.npz")
    steps = np.diff(track.timestamps_s)
    fps = float(1.0 / np.median(steps)) if len(steps) and np.median(steps) > 0 else default_fps
    observations = Observations.from_landmarks(track.mu_px, track.sigma_px, track.valid)
    return finish_result(folder, model, track.frame_indices, fps, info, observations.mu_px, observations.sigma_px)
