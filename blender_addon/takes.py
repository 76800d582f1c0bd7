"""The scene's takes (``scene.facecap.takes``): one entry per imported job, to switch between,
re-import, delete or export. Plain functions on bpy data (no UI).

Switching puts the take's actions back on its rig (the slot of each data-block in 4.4+), makes its
camera the scene camera and the scene's frame range the take's.
"""
import bpy

from . import compat, importer, scene_setup


def record(scene, report: importer.ImportReport, folder) -> int:
    """Add (or update, for a re-import of the same job folder) the take of an import; its index."""
    takes = scene.facecap.takes
    index = next((i for i, t in enumerate(takes) if t.job_folder == str(folder)), None)
    entry = takes[index] if index is not None else takes.add()
    entry.name = report.actions[0].get(importer.TAKE_KEY, report.actions[0].name)
    entry.job_folder = str(folder)
    entry.rig = report.armature
    entry.camera = report.camera
    entry.shape_action = report.actions[0].name
    entry.rig_action = report.actions[-1].name
    entry.frame_start, entry.frame_end = report.frame_start, report.frame_end
    index = len(takes) - 1 if index is None else index
    scene.facecap["active_take"] = index  # without the update: the import has already switched
    return index


class TakeError(Exception):
    """A take cannot be shown (its rig or actions were removed); the message says which."""


def switch(scene, entry) -> None:
    """Show ``entry``'s take: its actions on its rig, its camera, its frame range."""
    armature = entry.rig
    if armature is None or armature.name not in scene.objects:
        raise TakeError(f"the rig of take {entry.name!r} is no longer in the scene")
    mesh = importer.rig_mesh(armature)
    shape_action, rig_action = bpy.data.actions.get(entry.shape_action), bpy.data.actions.get(entry.rig_action)
    if mesh is None or shape_action is None or rig_action is None:
        raise TakeError(f"the head mesh or the actions of take {entry.name!r} were removed")
    compat.assign_action(mesh.data.shape_keys, shape_action, "shapes")
    compat.assign_action(armature, rig_action, "rig")
    armature[importer.TAKE_KEY] = entry.name
    if entry.camera is not None:
        scene.camera = entry.camera
    scene_setup.frame_take(scene, entry.frame_start, entry.frame_end)
    scene.frame_set(scene.frame_current)


def delete(scene, index: int) -> str:
    """Remove take ``index``: its entry, its actions and its camera (what the add-on made for it);
    the rig stays while other takes use it. Returns the take's name."""
    takes = scene.facecap.takes
    entry = takes[index]
    name, armature = entry.name, entry.rig
    for action_name in {entry.shape_action, entry.rig_action}:
        action = bpy.data.actions.get(action_name)
        if action is not None and action.get(importer.TAKE_KEY) is not None:
            bpy.data.actions.remove(action)
    others = [t for i, t in enumerate(takes) if i != index]
    camera = entry.camera
    if camera is not None and camera.get(importer.JOB_KEY) and all(t.camera != camera for t in others):
        bpy.data.objects.remove(camera)
    takes.remove(index)
    if armature is not None and not any(t.rig == armature for t in takes):
        for obj in [importer.rig_mesh(armature), armature]:
            if obj is not None:
                bpy.data.objects.remove(obj)
    scene.facecap["active_take"] = min(index, len(takes) - 1) if len(takes) else 0
    return name
