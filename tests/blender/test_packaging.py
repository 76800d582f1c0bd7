"""build_addon.py builds both zips reproducibly; each installs into a throw-away Blender user
folder, enables, and fits with the backend sources it carries."""
import ast
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

import facecap_helpers as h

# Runs in a fresh interpreter: Blender reads its user folders when bpy is first imported.
INSTALL_SCRIPT = r"""
import json, sys, time
import bpy
import addon_utils
kind, zip_path, python, jobs = sys.argv[1:5]
if kind == "extension":
    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    package = "bl_ext.user_default.facecap"
else:
    assert bpy.ops.preferences.addon_install(filepath=zip_path) == {"FINISHED"}
    addon_utils.enable("facecap", default_set=True, handle_error=lambda e: (_ for _ in ()).throw(e))
    package = "facecap"
prefs = bpy.context.preferences.addons[package].preferences
prefs.backend_python, prefs.jobs_folder = python, jobs
module = sys.modules[package]
operators = sys.modules[package + ".operators"]
backend = sys.modules[package + ".backend"]
settings = bpy.context.scene.facecap
settings.source, settings.synthetic_frames, settings.take = "SYNTHETIC", 3, kind
job = operators.start_fit(bpy.context)
deadline = time.monotonic() + 120
while job.active and time.monotonic() < deadline:
    operators.tick(bpy.context)
    time.sleep(0.05)
operators.shutdown()
print(json.dumps({"module_file": module.__file__, "sources": str(backend.backend_sources()),
                  "status": job.status, "message": job.message, "imported": job.imported,
                  "panel": hasattr(bpy.types, "FACECAP_PT_sequencer_fit"),
                  "objects": sorted(o.name for o in bpy.data.objects)}), flush=True)
if bpy.app.version < (4, 3):  # the bpy 4.2 module crashes at exit once Python classes were registered
    import os
    os._exit(0)
"""


def load_build_addon():
    spec = importlib.util.spec_from_file_location("build_addon", h.ROOT / "build_addon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    build_addon = load_build_addon()
    first = build_addon.build(tmp_path_factory.mktemp("dist1"))
    second = build_addon.build(tmp_path_factory.mktemp("dist2"))
    return first, second


def test_the_zips_are_reproducible_and_complete(built):
    first, second = built
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    extension, legacy = (zipfile.ZipFile(p) for p in first)
    names = set(extension.namelist())
    assert {"blender_manifest.toml", "__init__.py", "importer.py", "setup_env.py",
            "backend/fitter_backend/server/protocol.py", "backend/fitter_backend/export/result_files.py",
            "backend/requirements/backend.txt", "backend/onnx_models/models/dense_320_mobilenet_v2.onnx",
            "backend/onnx_models/models/dense_320_mobilenet_v2.json"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert set(legacy.namelist()) == {f"facecap/{n}" for n in names}
    assert b'"blender": (3, 4, 0)' in legacy.read("facecap/__init__.py")
    assert b'blender_version_min = "4.2.0"' in extension.read("blender_manifest.toml")


def test_the_addon_imports_only_blender_numpy_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"bpy", "bpy_extras", "mathutils", "gpu", "gpu_extras",
                                                "addon_utils", "numpy"}
    for path in (h.ROOT / "blender_addon").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize("kind", ["extension", "legacy"])
def test_the_zip_installs_enables_and_fits(built, kind, tmp_path, backend_python):
    zip_path = built[0][0 if kind == "extension" else 1]
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    env.pop("BLENDER_USER_SCRIPTS", None)  # set by conftest for the in-process tests
    out = subprocess.run([sys.executable, "-c", INSTALL_SCRIPT, kind, str(zip_path), str(backend_python),
                          str(tmp_path / "jobs")], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["module_file"].startswith(str(tmp_path / "user"))  # the installed copy, not the checkout
    assert result["sources"].startswith(str(tmp_path / "user")) and result["sources"].endswith("backend")
    assert result["panel"]
    assert result["status"] == "done", result["message"]
    assert result["imported"] and {f"{kind} Rig", f"{kind} Head", f"{kind} Camera"} <= set(result["objects"])
