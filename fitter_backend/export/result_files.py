"""The files a finished job leaves for the Blender add-on to import.

A job's result folder holds

- ``rig.npz``: the fitted head as Blender builds it (see :func:`rig_arrays`),
- ``animation.npz``: per-frame parameters and cameras (see :func:`animation_arrays`),
- ``fit.npz`` / ``fit.json``: the fitter's own result and report (:mod:`fitting.result_io`),
- ``result.json``: format, version, file list with sizes and sha256, written LAST by an
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

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from fitter_backend import __version__
from fitter_backend.fitting.result_io import save_fit_result
from fitter_backend.fitting.sequence import FitResult
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import rodrigues

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
    per channel; expression_names (E,); joint_positions (J, 3) rest joints of the neutral head;
    joint_parents (J,) (-1 root); joint_names (J,); skin_vertex, skin_joint, skin_weight (K,)
    the non-zero skin weights; model_name ().
    """
    identity = np.asarray(identity, dtype=np.float64)
    neutral = model.template.astype(np.float64) + np.einsum("vck,k->vc", model.identity_basis, identity)
    joints = model.joint_regressor.astype(np.float64) @ neutral
    deltas = np.moveaxis(model.expression_basis, 2, 0)  # (E, V, 3)
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


def animation_arrays(result: FitResult, frame_indices: np.ndarray, fps: float,
                     landmarks_px: np.ndarray | None = None, landmarks_sigma_px: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
    """Per-frame parameters in Blender's frame.

    expression (N, E); joint_rotations (N, J, 3) local axis-angle; translation_m (N, 3);
    frame_indices (N,) frames of the source clip; frame_flags (N,) comma-joined flags;
    frame_rms (N,); fps (); focal_px (C,); image_size_px (C, 2) (width, height);
    camera_matrix_world (C, 4, 4); optionally landmarks_px (N, C, S, 2) (x right, y down)
    and landmarks_sigma_px (N, C, S): what the fit saw, for the add-on's overlay.
    """
    params = result.params
    n = params.num_frames
    frame_indices = np.asarray(frame_indices, dtype=np.int32)
    if frame_indices.shape != (n,):
        raise ValueError(f"frame_indices must have shape ({n},), got {frame_indices.shape}")
    arrays = {
        "expression": params.expression.astype(np.float32),
        "joint_rotations": to_blender(params.rotations).astype(np.float32),
        "translation_m": to_blender(params.translation_m).astype(np.float32),
        "frame_indices": frame_indices,
        "frame_flags": np.array([",".join(f) for f in result.flags], dtype=str),
        "frame_rms": np.asarray(result.frame_rms, dtype=np.float32),
        "fps": np.array(float(fps)),
        "focal_px": params.cameras.focal_px.astype(np.float64),
        "image_size_px": params.cameras.image_size_px.astype(np.float64),
        "camera_matrix_world": camera_matrices_world(params.cameras.rotation, params.cameras.translation_m),
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_result(folder: str | Path, model: HeadModel, result: FitResult, frame_indices: np.ndarray,
                 fps: float, info: dict, landmarks_px: np.ndarray | None = None,
                 landmarks_sigma_px: np.ndarray | None = None) -> Path:
    """Write every result file into ``folder`` and ``result.json`` last; returns its path.

    ``info`` (JSON-ready: job id, mode, source, ...) is copied into result.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_npz(folder / "rig.npz", rig_arrays(model, result.params.identity))
    _save_npz(folder / "animation.npz", animation_arrays(result, frame_indices, fps, landmarks_px,
                                                         landmarks_sigma_px))
    save_fit_result(result, model, folder)
    names = ("rig.npz", "animation.npz", "fit.npz", "fit.json")
    manifest = {
        "format": RESULT_FORMAT, "format_version": RESULT_FORMAT_VERSION,
        "backend_version": __version__, "created_unix_s": round(time.time(), 3),
        "head_model": model.name, "frames": int(result.params.num_frames),
        "expression_channels": int(model.num_expression), "joints": list(model.joint_names),
        "axis_to_blender": AXIS_TO_BLENDER.astype(int).tolist(),
        "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
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
