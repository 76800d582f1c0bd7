"""FBX export with the Unity and Unreal presets, re-imported (anim_offset=0) and compared
curve by curve; retargeting onto a mesh with ARKit-named shape keys."""
import bpy
import numpy as np
import pytest

import facecap_helpers as h


def shape_values(mesh_obj, frames):
    """(frames, channels) evaluated shape-key values, by channel name."""
    names = [b.name for b in mesh_obj.data.shape_keys.key_blocks][1:]
    values = []
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        values.append([mesh_obj.data.shape_keys.key_blocks[n].value for n in names])
    return names, np.array(values)


def bone_local_angles(armature_obj, frames):
    """(frames, bones) angle of each bone's pose relative to its parent (invariant to the FBX axes)."""
    angles = []
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        row = []
        for bone in armature_obj.pose.bones:
            matrix = np.array(bone.matrix)[:3, :3]
            if bone.parent is not None:
                matrix = np.array(bone.parent.matrix)[:3, :3].T @ matrix
            rest = np.array(bone.bone.matrix_local)[:3, :3]
            if bone.parent is not None:
                rest = np.array(bone.parent.bone.matrix_local)[:3, :3].T @ rest
            relative = rest.T @ matrix
            axis = [relative[2, 1] - relative[1, 2], relative[0, 2] - relative[2, 0], relative[1, 0] - relative[0, 1]]
            row.append(np.degrees(np.arctan2(np.linalg.norm(axis) / 2, (np.trace(relative) - 1) / 2)))
        angles.append(row)
    return np.array(angles)


def similarity_aligned(source, target):
    """``source`` (V, 3) moved by the similarity transform that best maps it onto ``target``."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    u, s, vt = np.linalg.svd((target - mu_t).T @ (source - mu_s))
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, d]) @ vt
    scale = (s * [1, 1, d]).sum() / ((source - mu_s) ** 2).sum()
    return lambda points: scale * (points - mu_s) @ rotation.T + mu_t


@pytest.mark.parametrize("preset", ["UNITY", "UNREAL"])
def test_fbx_round_trip_keeps_shape_key_and_bone_curves(addon, fitted_job, tmp_path, preset):
    from facecap import operators
    report = operators.import_job(bpy.context, fitted_job)
    frames = list(range(report.frame_start, report.frame_end + 1))
    names, shapes = shape_values(report.mesh, frames)
    angles = bone_local_angles(report.armature, frames)
    vertices = [h.evaluated_vertices(report.mesh, f) for f in frames]
    bpy.context.view_layer.objects.active = report.armature
    path = operators.export_rig(bpy.context, tmp_path / "rig", preset)
    assert path.suffix == ".fbx" and path.stat().st_size > 100_000

    for obj in list(bpy.data.objects):  # re-import into an empty scene
        bpy.data.objects.remove(obj)
    assert bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0) == {"FINISHED"}
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    armatures = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(meshes) == 1 and len(armatures) == 1
    action = armatures[0].animation_data.action
    assert action.name.endswith("|talk")  # the FBX take is named after the take, not "Scene"
    assert tuple(action.frame_range) == (report.frame_start, report.frame_end)  # the strip's frames
    assert bpy.context.scene.name == "Scene"
    names_back, shapes_back = shape_values(meshes[0], frames)
    assert names_back == names
    assert np.abs(shapes_back - shapes).max() < 1e-4
    angles_back = bone_local_angles(armatures[0], frames)
    assert [b.name for b in armatures[0].pose.bones] == ["root", "neck", "head", "jaw", "eye_L", "eye_R"]
    assert np.abs(angles_back - angles).max() < 0.01  # degrees
    # The whole deformation survives too, up to the preset's fixed change of axes and units.
    back = [h.evaluated_vertices(meshes[0], f) for f in frames]
    align = similarity_aligned(back[0], vertices[0])
    error_mm = max(1000 * np.abs(align(b) - v).max() for b, v in zip(back, vertices))
    print(f"{preset}: shape keys {np.abs(shapes_back - shapes).max():.2e}, bone angles "
          f"{np.abs(angles_back - angles).max():.2e} deg (moving up to {angles.max():.1f} deg), "
          f"vertices {error_mm:.2e} mm")
    assert error_mm < 0.1


def test_retarget_onto_an_arkit_mesh_reports_unmatched_channels(addon, fitted_job):
    from facecap import compat, operators
    report = operators.import_job(bpy.context, fitted_job)
    bpy.ops.mesh.primitive_cube_add()
    target = bpy.context.active_object
    target.shape_key_add(name="Basis")
    # An ARKit rig with its own naming: prefixed, capitalised, and a key the fit does not have.
    for name in ("blendShape1.jawOpen", "EyeBlinkLeft", "mouth_smile_right", "tongueOut", "myCustomKey"):
        target.shape_key_add(name=name)
    target.data.shape_keys.animation_data_create().action = artist_action = bpy.data.actions.new("artist")
    result = operators.retarget_to(bpy.context, target)
    assert result.matched == {"jawOpen": "blendShape1.jawOpen", "eyeBlinkLeft": "EyeBlinkLeft",
                              "mouthSmileRight": "mouth_smile_right", "tongueOut": "tongueOut"}
    assert result.unmatched_target == ["myCustomKey"]
    assert len(result.unmatched_source) == 52 - 4 and "mouthSmileLeft" in result.unmatched_source
    assert "48 without a target shape key" in result.summary()
    assert artist_action.use_fake_user  # the artist's action is kept
    key = target.data.shape_keys
    curves = {fc.data_path: h.curve_values(fc) for fc in compat.action_fcurves(key.animation_data.action, key)}
    source_key = report.mesh.data.shape_keys
    source = {fc.data_path: h.curve_values(fc)
              for fc in compat.action_fcurves(source_key.animation_data.action, source_key)}
    assert np.array_equal(curves['key_blocks["blendShape1.jawOpen"].value'], source['key_blocks["jawOpen"].value'])
    bpy.context.scene.frame_set(report.frame_start + 4)
    assert key.key_blocks["blendShape1.jawOpen"].value == pytest.approx(
        report.mesh.data.shape_keys.key_blocks["jawOpen"].value, abs=1e-6)


def test_retarget_refuses_a_mesh_without_matching_shape_keys(addon, fitted_job):
    from facecap import operators, retarget
    operators.import_job(bpy.context, fitted_job)
    bpy.ops.mesh.primitive_cube_add()
    target = bpy.context.active_object
    with pytest.raises(retarget.RetargetError, match="has no shape keys"):
        operators.retarget_to(bpy.context, target)
    target.shape_key_add(name="Basis")
    target.shape_key_add(name="exp000")
    with pytest.raises(retarget.RetargetError, match="none of the 52 animated channels"):
        operators.retarget_to(bpy.context, target)
