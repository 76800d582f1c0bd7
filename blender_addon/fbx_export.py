"""Export the rig and its current take as FBX, with presets for Unity and Unreal.

Shape-key and bone animation survive the round trip when the animation is baked with no
simplification, modifiers are not applied (that would freeze the shape keys) and no leaf
bones are added. The presets differ in axes and scale handling only.
"""
from pathlib import Path

import bpy

COMMON = dict(
    use_selection=True, object_types={"ARMATURE", "MESH"}, use_mesh_modifiers=False,
    mesh_smooth_type="FACE", add_leaf_bones=False, primary_bone_axis="Y", secondary_bone_axis="X",
    armature_nodetype="NULL", bake_anim=True, bake_anim_use_all_bones=True, bake_anim_use_nla_strips=False,
    bake_anim_use_all_actions=False, bake_anim_force_startend_keying=True, bake_anim_step=1.0,
    bake_anim_simplify_factor=0.0, use_armature_deform_only=False,
)
PRESETS = {
    # Unity: Y up, -Z forward; scale applied into the file so objects import at scale 1.
    "UNITY": dict(axis_forward="-Z", axis_up="Y", apply_unit_scale=True, apply_scale_options="FBX_SCALE_ALL",
                  bake_space_transform=True),
    # Unreal: the engine converts FBX axes itself; keep Blender's units (metres, FBX unit scale).
    "UNREAL": dict(axis_forward="-Y", axis_up="Z", apply_unit_scale=True, apply_scale_options="FBX_SCALE_NONE",
                   bake_space_transform=False),
}


class ExportError(Exception):
    """The export cannot run; the message says why."""


def rig_objects(armature_obj) -> list:
    """The armature and the meshes it deforms (its mesh children)."""
    if armature_obj is None or armature_obj.type != "ARMATURE":
        raise ExportError("select the facecap rig (its armature or head mesh) to export")
    return [armature_obj] + [c for c in armature_obj.children if c.type == "MESH"]


def animated_range(armature_obj) -> tuple:
    """(first frame, last frame, take name) of the rig's current take."""
    action = armature_obj.animation_data.action if armature_obj.animation_data else None
    if action is None:
        raise ExportError(f"{armature_obj.name!r} has no take to export: import a fit first")
    start, end = action.frame_range
    return int(round(start)), int(round(end)), str(action.get("facecap_take", action.name))


def export_fbx(context, armature_obj, path, preset: str = "UNITY") -> Path:
    """Write the rig and its current take to ``path``; the selection and frame range are restored."""
    if preset not in PRESETS:
        raise ExportError(f"unknown FBX preset {preset!r}; expected one of {', '.join(PRESETS)}")
    objects = rig_objects(armature_obj)
    start, end, take = animated_range(armature_obj)
    path = Path(path)
    if path.suffix.lower() != ".fbx":
        path = path.with_suffix(".fbx")
    path.parent.mkdir(parents=True, exist_ok=True)
    scene, view_layer = context.scene, context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    frame_range, scene_name = (scene.frame_start, scene.frame_end), scene.name
    try:
        scene.name = take  # the FBX exporter names the take after the scene
        for obj in selected:
            obj.select_set(False)
        for obj in objects:
            obj.select_set(True)
        view_layer.objects.active = armature_obj
        scene.frame_start, scene.frame_end = start, end
        result = bpy.ops.export_scene.fbx(filepath=str(path), **COMMON, **PRESETS[preset])
    finally:
        scene.name = scene_name
        scene.frame_start, scene.frame_end = frame_range
        for obj in objects:
            obj.select_set(False)
        for obj in selected:
            obj.select_set(True)
        view_layer.objects.active = active
    if "FINISHED" not in result or not path.is_file():
        raise ExportError(f"the FBX exporter did not write {path}")
    return path
