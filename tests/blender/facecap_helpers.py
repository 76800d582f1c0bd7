"""Shared helpers of the Blender-side tests (bpy module, numpy<2)."""
import hashlib
import json
import subprocess
import time
from pathlib import Path

import addon_utils
import bpy
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = ROOT / ".venvs" / "backend" / "bin" / "python"

# Posed vertices of a finished job by the backend's own forward model, in Blender's frame.
EXPECTED_SCRIPT = """
import sys, json, numpy as np
from fitter_backend.export.result_files import to_blender
from fitter_backend.head_models import lbs
from fitter_backend.head_models.loading import load_head_model
result = sys.argv[1]
head = json.load(open(result + "/result.json"))["head"]
fit = np.load(result + "/fit.npz")
model = load_head_model(head)
posed = lbs.posed_vertices(model, fit["identity"], fit["expression"], fit["joint_rotations"], fit["translation_m"])
np.save(sys.argv[2], to_blender(posed))
"""


def fresh_addon(backend_python, jobs_root, **preferences):
    """Factory settings, an empty scene, the add-on enabled and configured; returns its package."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    module = addon_utils.enable("facecap", default_set=True, handle_error=_raise)
    from facecap import operators
    operators.SESSION.jobs.clear()
    operators.SESSION.log.clear()
    prefs = bpy.context.preferences.addons["facecap"].preferences
    prefs.backend_python = str(backend_python)
    prefs.jobs_folder = str(jobs_root)
    for key, value in preferences.items():
        setattr(prefs, key, value)
    return module


def _raise(exc):
    raise exc


def preferences():
    return bpy.context.preferences.addons["facecap"].preferences


def synthetic_settings(frames=8, seed=1, take="synthetic", quality="offline"):
    settings = bpy.context.scene.facecap
    settings.source = "SYNTHETIC"
    settings.synthetic_frames = frames
    settings.synthetic_seed = seed
    settings.take = take
    settings.quality = quality
    return settings


def run_until_ended(job, timeout_s=180.0):
    """Call the add-on's tick (what its timer does) until the job ends."""
    from facecap import operators
    deadline = time.monotonic() + timeout_s
    while job.active:
        assert time.monotonic() < deadline, f"job {job.id} still {job.status} ({job.stage}) after {timeout_s} s"
        operators.tick(bpy.context)
        time.sleep(0.05)
    return job


def run_until(predicate, job, timeout_s=120.0):
    from facecap import operators
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"job {job.id}: condition not reached ({job.status}, {job.stage})"
        operators.tick(bpy.context)
        time.sleep(0.05)


def scene_snapshot():
    """Names of everything an import or a failed job could add or change."""
    return {
        "objects": sorted(o.name for o in bpy.data.objects),
        "actions": sorted(a.name for a in bpy.data.actions),
        "meshes": sorted(m.name for m in bpy.data.meshes),
        "armatures": sorted(a.name for a in bpy.data.armatures),
        "cameras": sorted(c.name for c in bpy.data.cameras),
    }


def expected_vertices(result_dir, out_path):
    """(N, V, 3) posed vertices by the backend's forward model (run in the backend environment)."""
    subprocess.run([str(BACKEND_PYTHON), "-c", EXPECTED_SCRIPT, str(result_dir), str(out_path)], check=True,
                   cwd=ROOT, capture_output=True)
    return np.load(out_path)


def evaluated_vertices(obj, frame):
    """World positions of ``obj``'s evaluated (shape keys + modifiers) mesh at a frame."""
    scene = bpy.context.scene
    scene.frame_set(frame)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    co = np.empty(3 * len(mesh.vertices))
    mesh.vertices.foreach_get("co", co)
    world = np.array(evaluated.matrix_world)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]


def curve_values(fcurve):
    co = np.empty(2 * len(fcurve.keyframe_points))
    fcurve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)


def write_result_folder(folder: Path, rig: dict, animation: dict, blender: dict) -> Path:
    """A job folder in the backend's result format (for tests that need no fit)."""
    result = folder / "result"
    result.mkdir(parents=True)
    for name, arrays in (("rig.npz", rig), ("animation.npz", animation)):
        np.savez(result / name, **arrays)
    files = {name: {"bytes": (result / name).stat().st_size,
                    "sha256": hashlib.sha256((result / name).read_bytes()).hexdigest()}
             for name in ("rig.npz", "animation.npz")}
    (result / "result.json").write_text(json.dumps({"format": "facecap-result", "format_version": 1,
                                                    "files": files, "job": folder.name}))
    (folder / "job.json").write_text(json.dumps({"request": {}, "blender": blender}))
    return folder


def synthetic_result_arrays(frames=300, channels=100, grid=70, seed=0):
    """A plane-like head of grid^2 vertices, ``channels`` expression channels and the 6 joints."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-0.1, 0.1, grid), np.linspace(-0.1, 0.15, grid))
    vertices = np.stack([u.ravel(), 0.05 * np.cos(8 * u.ravel()), v.ravel()], axis=1).astype(np.float32)
    quads = np.array([[i * grid + j, i * grid + j + 1, (i + 1) * grid + j + 1, (i + 1) * grid + j]
                      for i in range(grid - 1) for j in range(grid - 1)])
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    names = ["root", "neck", "head", "jaw", "eye_L", "eye_R"]
    joints = np.array([[0, 0, -0.1], [0, 0, -0.05], [0, 0, 0.0], [0, -0.02, -0.03], [0.03, -0.05, 0.05],
                       [-0.03, -0.05, 0.05]], dtype=np.float32)
    nearest = np.argmin(np.linalg.norm(vertices[:, None] - joints[None], axis=2), axis=1)
    rig = {
        "vertices": vertices, "triangles": triangles,
        "expression_deltas": (0.01 * rng.normal(size=(channels, len(vertices), 3))).astype(np.float32),
        "expression_names": np.array([f"exp{k:03d}" for k in range(channels)]),
        "joint_positions": joints, "joint_parents": np.array([-1, 0, 1, 2, 2, 2], dtype=np.int32),
        "joint_names": np.array(names),
        "skin_vertex": np.arange(len(vertices), dtype=np.int32), "skin_joint": nearest.astype(np.int32),
        "skin_weight": np.ones(len(vertices), dtype=np.float32), "model_name": np.array("speed_test"),
    }
    animation = {
        "expression": rng.uniform(0, 1, (frames, channels)).astype(np.float32),
        "joint_rotations": (0.1 * rng.normal(size=(frames, 6, 3))).astype(np.float32),
        "translation_m": (0.01 * rng.normal(size=(frames, 3))).astype(np.float32),
        "frame_indices": np.arange(frames, dtype=np.int32),
        "frame_flags": np.array([""] * frames), "frame_rms": np.ones(frames, dtype=np.float32),
        "fps": np.array(25.0), "focal_px": np.array([600.0]), "image_size_px": np.array([[640.0, 480.0]]),
        "camera_matrix_world": np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]]),
    }
    return rig, animation
