"""The head model as Blender sees it: the OBJ the backend exports opens in real Blender
(bpy module, numpy<2 environment) with every vertex and triangle, in metres."""
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = ROOT / ".venvs" / "backend" / "bin" / "python"


@pytest.fixture(scope="module")
def exported_obj(tmp_path_factory):
    if not BACKEND_PYTHON.exists():
        pytest.skip("the backend environment is not set up (run ./run.sh test)")
    out = tmp_path_factory.mktemp("obj") / "jaw_open.obj"
    subprocess.run([str(BACKEND_PYTHON), "-m", "fitter_backend", "head-model", "obj", "--out", str(out),
                    "--expression", "jawOpen=1"], check=True, cwd=ROOT, capture_output=True)
    return out


def read_obj_counts(path):
    vertices = [line for line in path.read_text().splitlines() if line.startswith("v ")]
    faces = [line for line in path.read_text().splitlines() if line.startswith("f ")]
    return np.array([[float(x) for x in v.split()[1:4]] for v in vertices]), len(faces)


def test_exported_head_imports_into_blender(exported_obj):
    vertices, num_faces = read_obj_counts(exported_obj)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.obj_import(filepath=str(exported_obj), forward_axis="NEGATIVE_Z", up_axis="Y")
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    assert len(meshes) == 1
    mesh = meshes[0].data
    assert len(mesh.vertices) == len(vertices)
    assert len(mesh.polygons) == num_faces
    # Blender is Z-up: the OBJ's +Y (up) becomes +Z, and sizes stay metric (a head is ~25 cm tall).
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    world = np.array(meshes[0].matrix_world)
    co = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    height_m = co[:, 2].max() - co[:, 2].min()
    assert 0.15 < height_m < 0.4
    assert np.isclose(height_m, vertices[:, 1].max() - vertices[:, 1].min(), atol=1e-4)
    assert sys.version_info[:2] == (3, 11)
