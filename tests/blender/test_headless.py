"""The headless path the demo uses: a finished fit becomes a keyed .blend and an FBX."""
import subprocess
import sys

import bpy

import facecap_helpers as h


def test_headless_build_writes_a_keyed_blend_and_fbx(fitted_job, tmp_path):
    blend, fbx = tmp_path / "take.blend", tmp_path / "take.fbx"
    done = subprocess.run([sys.executable, "-m", "blender_addon.headless", str(fitted_job / "result"),
                           "--blend", str(blend), "--fbx", str(fbx)], cwd=h.ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "blend:" in done.stdout and "fbx:" in done.stdout
    assert fbx.stat().st_size > 10_000
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    assert rig.animation_data.action is not None
    assert head.data.shape_keys.animation_data.action is not None
    assert len(head.data.shape_keys.key_blocks) == 53  # Basis + the 52 ARKit channels
    start, end = rig.animation_data.action.frame_range
    assert (start, end) == (1.0, 10.0)


def test_headless_refuses_a_folder_that_is_not_a_result(tmp_path):
    done = subprocess.run([sys.executable, "-m", "blender_addon.headless", str(tmp_path),
                           "--blend", str(tmp_path / "x.blend")], cwd=h.ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and str(tmp_path) in done.stderr
    assert not (tmp_path / "x.blend").exists()
