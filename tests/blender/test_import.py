"""Importing a finished fit: the rig, its keys, Blender's deformation against the backend's
forward model, one action per take (never overwriting an edited one), refusals, speed."""
import shutil
import time

import bpy
import numpy as np
import pytest

import facecap_helpers as h

AXIS_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def shape_curves(mesh_obj):
    from facecap import compat
    key = mesh_obj.data.shape_keys
    return {fc.data_path: fc for fc in compat.action_fcurves(key.animation_data.action, key)}


def bone_curves(armature_obj):
    from facecap import compat
    return {(fc.data_path, fc.array_index): fc
            for fc in compat.action_fcurves(armature_obj.animation_data.action, armature_obj)}


def test_import_builds_the_keyed_rig(addon, fitted_job):
    from facecap import operators
    animation = np.load(fitted_job / "result" / "animation.npz")
    report = operators.import_job(bpy.context, fitted_job)
    arm, mesh = report.armature, report.mesh
    joints = ["root", "neck", "head", "jaw", "eye_L", "eye_R"]
    assert [b.name for b in arm.data.bones] == joints
    assert [b.parent.name if b.parent else None for b in arm.data.bones] == [None, "root", "neck", "head", "head",
                                                                               "head"]
    assert [g.name for g in mesh.vertex_groups] == joints
    assert mesh.parent == arm and mesh.modifiers["Armature"].object == arm
    channels = [b.name for b in mesh.data.shape_keys.key_blocks][1:]
    assert len(channels) == 52 and {"jawOpen", "eyeBlinkLeft", "mouthSmileRight"} <= set(channels)

    curves = shape_curves(mesh)
    assert len(curves) == 52
    jaw = h.curve_values(curves['key_blocks["jawOpen"].value'])
    assert np.array_equal(jaw[:, 0], 101 + np.arange(10))  # the take starts at the scene's first frame
    assert np.allclose(jaw[:, 1], animation["expression"][:, channels.index("jawOpen")], atol=1e-6)
    assert np.ptp(jaw[:, 1]) > 0.01  # the mouth moves in this shot

    bones = bone_curves(arm)
    assert len(bones) == 6 * 4 + 3
    quat = np.stack([h.curve_values(bones[('pose.bones["head"].rotation_quaternion', i)])[:, 1] for i in range(4)], 1)
    assert np.allclose(np.linalg.norm(quat, axis=1), 1, atol=1e-5)
    location = np.stack([h.curve_values(bones[('pose.bones["root"].location', i)])[:, 1] for i in range(3)], 1)
    # The root bone points up (+Z): its rest frame maps (x, y, z) bone-local to (x, -z, y)... read it back.
    rest = np.array(arm.data.bones["root"].matrix_local)[:3, :3]
    assert np.allclose(location @ rest.T, animation["translation_m"], atol=1e-6)

    camera = report.camera
    focal_px, (width, height) = animation["focal_px"][0], animation["image_size_px"][0]
    assert camera.data.lens == pytest.approx(focal_px * camera.data.sensor_width / max(width, height), rel=1e-5)
    assert np.allclose(np.array(camera.matrix_world)[:3, :3], AXIS_TO_BLENDER, atol=1e-6)
    assert bpy.context.scene.camera == camera
    assert (report.frame_start, report.frame_end) == (101, 110)


def test_blender_deformation_matches_the_backend_forward_model(addon, fitted_job, expected_posed):
    from facecap import operators
    mesh = operators.import_job(bpy.context, fitted_job).mesh
    errors_mm = [1000 * np.abs(h.evaluated_vertices(mesh, 101 + i) - expected_posed[i]).max()
                 for i in range(len(expected_posed))]
    motion_mm = 1000 * np.abs(expected_posed - expected_posed[0]).max()
    print(f"max vertex error per frame (mm): {np.round(errors_mm, 4).tolist()}; head motion {motion_mm:.0f} mm")
    assert motion_mm > 10  # the head turns and talks: the comparison is not trivial
    assert max(errors_mm) < 0.05


def test_reimporting_an_unedited_take_rewrites_its_action(addon, fitted_job):
    from facecap import operators
    first = operators.import_job(bpy.context, fitted_job)
    actions = {a.name for a in bpy.data.actions}
    second = operators.import_job(bpy.context, fitted_job)
    assert not second.created and second.armature == first.armature
    assert [a.name for a in second.actions] == [a.name for a in first.actions]
    assert {a.name for a in bpy.data.actions} == actions
    assert second.notes == []  # a re-import of an unedited take is silent


def test_import_over_an_edited_take_keeps_the_artists_action(addon, fitted_job):
    from facecap import operators
    first = operators.import_job(bpy.context, fitted_job)
    jaw = shape_curves(first.mesh)['key_blocks["jawOpen"].value']
    jaw.keyframe_points[3].co.y += 0.5  # the artist's edit
    edited_value = jaw.keyframe_points[3].co.y
    edited_action = first.mesh.data.shape_keys.animation_data.action
    second = operators.import_job(bpy.context, fitted_job)
    assert edited_action.name in bpy.data.actions and edited_action.use_fake_user
    assert edited_action not in second.actions
    assert second.mesh.data.shape_keys.animation_data.action != edited_action
    from facecap import compat
    kept = {fc.data_path: fc for fc in compat.all_action_fcurves(edited_action)}
    assert kept['key_blocks["jawOpen"].value'].keyframe_points[3].co.y == pytest.approx(edited_value)
    assert any("kept the action" in note and "were edited" in note for note in second.notes)


def test_incomplete_or_altered_results_are_refused(addon, fitted_job, tmp_path):
    from facecap import operators, results
    before = h.scene_snapshot()
    incomplete = shutil.copytree(fitted_job, tmp_path / "incomplete")
    (incomplete / "result" / "result.json").unlink()
    with pytest.raises(results.ResultError, match="no finished result"):
        operators.import_job(bpy.context, incomplete)
    altered = shutil.copytree(fitted_job, tmp_path / "altered")
    data = bytearray((altered / "result" / "animation.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (altered / "result" / "animation.npz").write_bytes(bytes(data))
    with pytest.raises(results.ResultError, match="does not match its sha256"):
        operators.import_job(bpy.context, altered)
    assert h.scene_snapshot() == before


def test_import_speed_300_frames_100_channels_6_bones(addon, tmp_path):
    from facecap import compat, importer, results
    rig, animation = h.synthetic_result_arrays(frames=300, channels=100)
    folder = h.write_result_folder(tmp_path / "speed", rig, animation, {"take": "speed", "frame_offset": 1})
    result = results.read_result(folder / "result")
    started = time.perf_counter()
    report = importer.import_result(bpy.context.scene, result, "speed", frame_offset=1)
    elapsed = time.perf_counter() - started
    key = report.mesh.data.shape_keys
    curves = compat.action_fcurves(key.animation_data.action, key) + compat.action_fcurves(
        report.armature.animation_data.action, report.armature)
    keys = sum(len(fc.keyframe_points) for fc in curves)
    print(f"import of 300 frames x (100 channels + 6 bones), {len(rig['vertices'])} vertices: "
          f"{elapsed:.3f} s ({keys} keys on {len(curves)} curves)")
    assert len(curves) == 100 + 6 * 4 + 3 and keys == 300 * len(curves)
    assert elapsed <= 1.0


def test_a_multi_view_take_is_placed_relative_to_the_first_views_camera(addon, fitted_job, tmp_path):
    import json
    from mathutils import Euler
    from facecap import operators
    mono = operators.import_job(bpy.context, fitted_job)
    camera_local = np.linalg.inv(np.array(mono.camera.matrix_world))
    expected = h.evaluated_vertices(mono.mesh, 104) @ camera_local[:3, :3].T + camera_local[:3, 3]
    h.fresh_addon(h.BACKEND_PYTHON, tmp_path / "jobs")
    camera = bpy.data.objects.new("artist_cam", bpy.data.cameras.new("artist_cam"))
    camera.location, camera.rotation_euler = (1.0, -2.0, 1.5), Euler((1.2, 0.1, 0.4))
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.view_layer.update()
    folder = shutil.copytree(fitted_job, tmp_path / "multi")
    job = json.loads((folder / "job.json").read_text())
    job["blender"]["views"] = [{"strip": "front", "camera": "artist_cam"}, {"strip": "side", "camera": "other"}]
    (folder / "job.json").write_text(json.dumps(job))
    report = operators.import_job(bpy.context, folder)
    assert report.camera is None  # the artist's cameras are the calibration: none is created
    local = np.linalg.inv(np.array(camera.matrix_world))
    seen = h.evaluated_vertices(report.mesh, 104) @ local[:3, :3].T + local[:3, 3]
    assert np.abs(seen - expected).max() < 1e-5  # the artist's camera sees the head as the fit's camera 0 did
