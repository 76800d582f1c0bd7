"""Build or update the head rig from a :class:`results.Result` and key one take on it.

Pure functions taking the scene and the data (operators stay thin, as in io_scene_fbx).
The rig is a mesh (neutral head with the fitted identity, one shape key per expression
channel, a vertex group per joint, an Armature modifier) parented to an armature with one
bone per joint. Every bone's rest frame is read back from Blender, and a fitted local
rotation R (Blender world axes) becomes the pose rotation B^T R B in the bone's rest frame
B; the root's translation t becomes the location B^T t. With Blender's pose evaluation
this reproduces the backend's linear blend skinning exactly (see docs/protocol.md).

Keys are written with ``keyframe_points.add`` and ``foreach_set``: one call per curve.
One rig per identity (the fitted neutral head); each fit's take gets its own action named after
the strip, and earlier takes are kept (fake user). An action is rewritten only by a re-import of
the same job when nobody edited it since; an edited one is kept and the report says so.
"""
import dataclasses
import hashlib
import time

import bpy
import numpy as np
from mathutils import Matrix

from . import compat, scene_setup
from .results import Result

RIG_KEY = "facecap_rig"          # custom property on the armature and mesh: identifies the rig
TOPOLOGY_KEY = "facecap_topology"  # on the armature: the takes it can hold
JOB_KEY = "facecap_job"          # on actions, take cameras and collections: the job they came from
TAKE_KEY = "facecap_take"        # on actions: the take they hold
HASH_KEY = "facecap_keys_sha1"   # on actions: hash of their keys when written
EXPRESSION_GROUP = "Expressions"
BONE_LENGTH_M = {"eye_L": 0.02, "eye_R": 0.02, "jaw": 0.06}
DEFAULT_BONE_LENGTH_M = 0.08


@dataclasses.dataclass
class ImportReport:
    armature: object
    mesh: object
    camera: object
    actions: list
    frame_start: int
    frame_end: int
    seconds: float
    notes: list = dataclasses.field(default_factory=list)
    created: bool = True
    collection: object = None


def topology_key(result: Result) -> str:
    """Rigs a take can be keyed on: same model, topology and channels."""
    rig = result.rig
    names = hashlib.sha1("\n".join(rig.expression_names + ["|"] + rig.joint_names).encode()).hexdigest()[:12]
    return f"{rig.model_name}:{len(rig.vertices)}:{len(rig.triangles)}:{names}"


def rig_key(result: Result) -> str:
    """One rig per identity: the topology plus the fitted neutral head (to 0.01 mm)."""
    shape = np.round(result.rig.vertices.astype(np.float64) * 1e5).astype(np.int64)
    return f"{topology_key(result)}:{hashlib.sha1(shape.tobytes()).hexdigest()[:12]}"


def find_rig(scene, key: str):
    """The armature and mesh of an earlier import of the same rig in ``scene``, or (None, None)."""
    for obj in scene.objects:
        if obj.type == "ARMATURE" and obj.get(RIG_KEY) == key:
            return obj, rig_mesh(obj)
    return None, None


def rig_mesh(armature_obj):
    """The head mesh of a facecap armature (None when it was removed)."""
    meshes = [c for c in armature_obj.children if c.type == "MESH" and c.get(RIG_KEY)]
    return meshes[0] if meshes else None


def check_reusable(armature_obj, result: Result) -> None:
    """ValueError unless ``armature_obj`` is a facecap rig this result's take can be keyed on."""
    if armature_obj is None or armature_obj.type != "ARMATURE" or rig_mesh(armature_obj) is None:
        raise ValueError("the rig to reuse must be a facecap rig (its armature, with its head mesh)")
    if armature_obj.get(TOPOLOGY_KEY) != topology_key(result):
        raise ValueError(f"{armature_obj.name!r} has another head model or other channels than this take: "
                         "it cannot hold it (clear 'Reuse rig' to make a new rig)")


# -- pure numpy: the values the curves take ------------------------------------------------
def rotation_vectors_to_quaternions(rotvec: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle -> (N, 4) unit quaternions (w, x, y, z), signs kept continuous over N."""
    angle = np.linalg.norm(rotvec, axis=-1)
    half = 0.5 * angle
    scale = np.where(angle > 1e-12, np.sin(half) / np.where(angle > 1e-12, angle, 1.0), 0.5)
    quats = np.concatenate([np.cos(half)[..., None], rotvec * scale[..., None]], axis=-1)
    # q and -q are the same rotation: pick the sign nearest the previous frame's.
    flips = np.sum(quats[1:] * quats[:-1], axis=-1) < 0
    sign = np.concatenate([[1.0], np.where(np.cumsum(flips) % 2 == 1, -1.0, 1.0)])
    return quats * sign[:, None]


def bone_channels(animation, bone_rest_rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose-bone values: quaternions (N, J, 4) in each bone's rest frame and the root's
    location (N, 3) in its rest frame. bone_rest_rotations (J, 3, 3) armature space."""
    # B^T r: the rotation vector of B^T R B.
    local = np.einsum("jab,nja->njb", bone_rest_rotations, animation.joint_rotations)
    quats = np.stack([rotation_vectors_to_quaternions(local[:, j]) for j in range(local.shape[1])], axis=1)
    location = animation.translation_m @ bone_rest_rotations[0]
    return quats, location


def keys_hash(fcurves) -> str:
    digest = hashlib.sha1()
    for fcurve in sorted(fcurves, key=lambda f: (f.data_path, f.array_index)):
        co = np.empty(2 * len(fcurve.keyframe_points), dtype=np.float32)
        fcurve.keyframe_points.foreach_get("co", co)
        digest.update(f"{fcurve.data_path}[{fcurve.array_index}]".encode())
        digest.update(np.round(co, 5).tobytes())
    return digest.hexdigest()


# -- building -------------------------------------------------------------------------------
def _new_mesh(name: str, rig) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(rig.vertices))
    mesh.vertices.foreach_set("co", rig.vertices.ravel())
    f = len(rig.triangles)
    mesh.loops.add(3 * f)
    mesh.loops.foreach_set("vertex_index", rig.triangles.ravel())
    mesh.polygons.add(f)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * f, 3, dtype=np.int32))
    if compat.VERSION < (4, 0, 0):
        mesh.polygons.foreach_set("loop_total", np.full(f, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate()
    return mesh


def _set_shape_keys(mesh_obj, rig) -> None:
    """Basis = the neutral fitted head; one key per channel = basis + delta (created or updated)."""
    basis = rig.vertices.astype(np.float32)
    mesh_obj.data.vertices.foreach_set("co", basis.ravel())
    if mesh_obj.data.shape_keys is None:
        mesh_obj.shape_key_add(name="Basis", from_mix=False)
    blocks = mesh_obj.data.shape_keys.key_blocks
    blocks[0].data.foreach_set("co", basis.ravel())
    for name, delta in zip(rig.expression_names, rig.expression_deltas):
        block = blocks.get(name) or mesh_obj.shape_key_add(name=name, from_mix=False)
        block.data.foreach_set("co", (basis + delta).ravel())
    mesh_obj.data.update()


def _set_vertex_groups(mesh_obj, rig) -> None:
    mesh_obj.vertex_groups.clear()
    groups = [mesh_obj.vertex_groups.new(name=name) for name in rig.joint_names]
    for v, j, w in zip(rig.skin_vertex.tolist(), rig.skin_joint.tolist(), rig.skin_weight.tolist()):
        groups[j].add([v], w, "REPLACE")


def _bone_tail_offset(name: str) -> tuple:
    length = BONE_LENGTH_M.get(name, DEFAULT_BONE_LENGTH_M)
    # Eyes and jaw point forward (the face looks down -Y), the others up.
    return (0.0, -length, 0.0) if name in BONE_LENGTH_M else (0.0, 0.0, length)


def _edit_bones(view_layer, armature_obj, rig) -> None:
    """Create or move the bones (edit mode needs the armature active in the view layer)."""
    previous_active = view_layer.objects.active
    previous_mode = armature_obj.mode
    view_layer.objects.active = armature_obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = armature_obj.data.edit_bones
        bones = []
        for name, head, parent in zip(rig.joint_names, rig.joint_positions, rig.joint_parents):
            bone = edit_bones.get(name) or edit_bones.new(name)
            bone.head = head.tolist()
            bone.tail = (head + np.array(_bone_tail_offset(name))).tolist()
            bone.roll = 0.0
            bone.use_connect = False
            bone.parent = bones[parent] if parent >= 0 else None
            bones.append(bone)
    finally:
        bpy.ops.object.mode_set(mode="OBJECT" if previous_mode == "EDIT" else previous_mode)
        view_layer.objects.active = previous_active


def _build_rig(collection, rig, key: str, name: str):
    """A new armature and head mesh named after ``name`` (the first take) in ``collection``."""
    armature = bpy.data.armatures.new(f"{name} Rig")
    armature_obj = bpy.data.objects.new(f"{name} Rig", armature)
    armature_obj[RIG_KEY] = key
    armature_obj[TOPOLOGY_KEY] = key.rsplit(":", 1)[0]
    collection.objects.link(armature_obj)
    mesh_obj = bpy.data.objects.new(f"{name} Head", _new_mesh(f"{name} Head", rig))
    mesh_obj[RIG_KEY] = key
    collection.objects.link(mesh_obj)
    mesh_obj.parent = armature_obj
    modifier = mesh_obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature_obj
    return armature_obj, mesh_obj


def _update_rig_shape(armature_obj, mesh_obj, rig) -> None:
    _set_shape_keys(mesh_obj, rig)
    _set_vertex_groups(mesh_obj, rig)
    _edit_bones(bpy.context.view_layer, armature_obj, rig)
    for pose_bone in armature_obj.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"


def _write_curves(fcurves, paths: list, frames: np.ndarray, values: np.ndarray) -> None:
    """paths[k] = (data_path, index, group); values (N, K) keyed at ``frames``."""
    n = len(frames)
    co = np.empty((n, 2), dtype=np.float32)
    co[:, 0] = frames
    for k, (data_path, index, group) in enumerate(paths):
        fcurve = compat.new_fcurve(fcurves, data_path, index, group)
        fcurve.keyframe_points.add(n)
        co[:, 1] = values[:, k]
        fcurve.keyframe_points.foreach_set("co", co.ravel())
        fcurve.update()


def _take_action(id_block, take: str, job: str, slot: str, notes: list, made: dict):
    """The action that will hold ``take`` (from ``job``) for ``id_block``.

    Every fit makes a new action named after the take; earlier ones are kept (with a fake
    user, so the take list can bring them back). The action already assigned is rewritten only
    when it is this same job's take (a re-import) and its keys are unchanged since the add-on
    wrote them. ``made`` shares one action between data-blocks where actions have slots (4.4+).
    """
    share = take if compat.SLOTTED_ACTIONS else (take, slot)
    animation = id_block.animation_data
    current = animation.action if animation else None
    if current is not None and current is not made.get(share):
        unedited = current.get(HASH_KEY) == keys_hash(compat.all_action_fcurves(current))
        if current.get(JOB_KEY) == job and current.get(TAKE_KEY) == take and unedited and share not in made:
            made[share] = current
        else:
            current.use_fake_user = True  # keep it although nothing uses it any more
            if current.get(TAKE_KEY) is None:
                notes.append(f"kept the existing action {current.name!r} of {id_block.name!r} (it is not a "
                             "facecap take); this take went into a new action")
            elif not unedited:
                notes.append(f"kept the action {current.name!r} of {id_block.name!r} (its keys were edited); "
                             "this take went into a new action")
    if share not in made:
        action = bpy.data.actions.new(take if compat.SLOTTED_ACTIONS else f"{take} {slot}")
        action[TAKE_KEY] = take
        action[JOB_KEY] = job
        made[share] = action
    if current is made[share]:  # rewriting our own take: drop its old curves for this data-block
        compat.clear_fcurves(compat.assign_action(id_block, current, slot))
    return made[share]


def _camera_lens_mm(focal_px: float, image_size_px, sensor_mm: float) -> float:
    """Lens for sensor_fit AUTO (the sensor spans the larger image side)."""
    return float(focal_px) * sensor_mm / float(max(image_size_px))


def _fitted_camera(scene, collection, name: str, job: str, animation):
    """The take's camera: the one an earlier import of this job made, else a new one."""
    camera_obj = next((o for o in scene.objects if o.type == "CAMERA" and o.get(JOB_KEY) == job), None)
    if camera_obj is None:
        camera_obj = bpy.data.objects.new(f"{name} Camera", bpy.data.cameras.new(f"{name} Camera"))
        camera_obj[JOB_KEY] = job
        collection.objects.link(camera_obj)
    data = camera_obj.data
    data.sensor_fit = "AUTO"
    data.lens = _camera_lens_mm(animation.focal_px[0], animation.image_size_px[0], data.sensor_width)
    data["facecap_image_size_px"] = [int(v) for v in animation.image_size_px[0]]
    camera_obj.matrix_world = Matrix(animation.camera_matrix_world[0].tolist())
    return camera_obj


def _collection_of_job(scene, take: str, job: str):
    """The take's collection: an earlier import's of this job, else a new one named after the take."""
    found = next((c for c in scene.collection.children_recursive if c.get(JOB_KEY) == job), None)
    if found is None:
        found = scene_setup.take_collection(scene, take)
        found[JOB_KEY] = job
    return found


def import_result(scene, result: Result, take: str, frame_offset: int, view_camera=None, clip_path=None,
                  reuse_rig=None) -> ImportReport:
    """Key ``take`` on the rig of this result's identity in ``scene`` (made when there is none, in a
    new collection named after the take), or on ``reuse_rig`` when the artist chose one.

    Source frame k lands on timeline frame ``frame_offset + k``; the scene's frame range becomes
    the take's. ``view_camera``: the artist's camera of view 0 (multi-view calibration): the rig
    is placed relative to it and no camera is created; without it the take's fitted camera
    becomes the scene camera, with ``clip_path`` (the footage) behind it, and the render size
    and frame rate become the clip's.
    """
    started = time.perf_counter()
    rig, animation = result.rig, result.animation
    job = str(result.manifest.get("job", ""))
    if reuse_rig is not None:
        check_reusable(reuse_rig, result)  # before anything changes
    notes = []
    collection = _collection_of_job(scene, take, job)
    if reuse_rig is not None:
        armature_obj, mesh_obj = reuse_rig, rig_mesh(reuse_rig)
    else:
        armature_obj, mesh_obj = find_rig(scene, rig_key(result))
    created = armature_obj is None
    if created:
        armature_obj, mesh_obj = _build_rig(collection, rig, rig_key(result), take)
        _update_rig_shape(armature_obj, mesh_obj, rig)

    camera_obj = None
    if view_camera is None:
        camera_obj = _fitted_camera(scene, collection, take, job, animation)
        scene.camera = camera_obj
        scene_setup.fit_render_to_clip(scene, animation.image_size_px[0], animation.fps)
        if clip_path is not None:
            scene_setup.show_clip_behind(camera_obj, clip_path, frame_offset)
        armature_obj.matrix_world = Matrix.Identity(4)  # the fitted camera is where the fit put it
    else:
        # The rig's frame is camera 0's: put it where the artist's camera 0 is.
        armature_obj.matrix_world = (view_camera.matrix_world
                                     @ Matrix(np.linalg.inv(animation.camera_matrix_world[0]).tolist()))
    mesh_obj.matrix_parent_inverse = Matrix.Identity(4)

    frames = (frame_offset + animation.frame_indices).astype(np.float32)
    made = {}
    shape_keys = mesh_obj.data.shape_keys
    shape_action = _take_action(shape_keys, take, job, "shapes", notes, made)
    fcurves = compat.assign_action(shape_keys, shape_action, "shapes")
    _write_curves(fcurves, [(f'key_blocks["{n}"].value', 0, EXPRESSION_GROUP) for n in rig.expression_names],
                  frames, animation.expression)
    for block in list(shape_keys.key_blocks)[1:]:
        if block.name in rig.expression_names:
            values = animation.expression[:, rig.expression_names.index(block.name)]
            block.slider_min = min(0.0, float(np.floor(values.min())))
            block.slider_max = max(1.0, float(np.ceil(values.max())))

    rest = np.array([np.array(armature_obj.data.bones[n].matrix_local)[:3, :3] for n in rig.joint_names])
    quats, location = bone_channels(animation, rest)
    rig_action = _take_action(armature_obj, take, job, "rig", notes, made)
    fcurves = compat.assign_action(armature_obj, rig_action, "rig")
    paths = [(f'pose.bones["{n}"].rotation_quaternion', i, n) for n in rig.joint_names for i in range(4)]
    root = rig.joint_names[0]
    paths += [(f'pose.bones["{root}"].location', i, root) for i in range(3)]
    values = np.concatenate([quats.reshape(len(frames), -1), location], axis=1)
    _write_curves(fcurves, paths, frames, values)

    actions = [shape_action] if shape_action == rig_action else [shape_action, rig_action]
    for action in actions:
        action[HASH_KEY] = keys_hash(compat.all_action_fcurves(action))
        action.use_fake_user = True  # a take stays in the file when another take is shown
    armature_obj[TAKE_KEY] = take
    scene_setup.frame_take(scene, int(frames[0]), int(frames[-1]))
    scene.frame_set(scene.frame_current)
    return ImportReport(armature_obj, mesh_obj, camera_obj, actions, int(frames[0]), int(frames[-1]),
                        time.perf_counter() - started, notes, created, collection)
