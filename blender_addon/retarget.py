"""Copy a take's expression animation onto another mesh's shape keys, matched by name.

ARKit rigs name their shape keys ``jawOpen``, ``JawOpen``, ``blendShape1.jawOpen``,
``ARKit_jawOpen`` or ``jaw_open``: names match exactly, then ignoring case, then ignoring a
prefix ending in ``.``, ``_`` or ``:``, then ignoring separators. The target gets a new action (its own is kept); the report lists what
did not match on either side.
"""
import dataclasses
import re

import bpy
import numpy as np

from . import compat

KEY_PATH = re.compile(r'^key_blocks\["(.+)"\]\.value$')


class RetargetError(Exception):
    """Nothing can be retargeted; the message says why."""


@dataclasses.dataclass
class RetargetReport:
    action: object
    matched: dict               # source channel -> target shape key
    unmatched_source: list      # animated channels with no shape key on the target
    unmatched_target: list      # target shape keys that receive nothing

    def summary(self) -> str:
        text = f"retargeted {len(self.matched)} channels into {self.action.name!r}"
        if self.unmatched_source:
            shown = ", ".join(self.unmatched_source[:8]) + (", ..." if len(self.unmatched_source) > 8 else "")
            text += f"; {len(self.unmatched_source)} without a target shape key: {shown}"
        return text


RULES = (
    lambda name: name,
    lambda name: name.lower(),
    lambda name: re.split(r"[.:_]", name)[-1].lower(),
    lambda name: re.sub(r"[^a-z0-9]", "", name.lower()),
)


def match_channels(source_names: list, target_names: list) -> dict:
    """source name -> target name by the first of :data:`RULES` that pairs them, one to one."""
    matches = {}
    free = list(target_names)
    for rule in RULES:
        index = {}
        for target in free:
            index.setdefault(rule(target), target)
        for source in source_names:
            if source not in matches and rule(source) in index:
                target = index.pop(rule(source))
                matches[source] = target
                free.remove(target)
    return matches


def source_curves(mesh_obj) -> dict:
    """channel name -> (N, 2) keyframe (frame, value) of the mesh's shape-key animation."""
    key = mesh_obj.data.shape_keys if mesh_obj.type == "MESH" else None
    action = key.animation_data.action if key is not None and key.animation_data else None
    if action is None:
        raise RetargetError(f"{mesh_obj.name!r} has no shape-key animation to retarget")
    curves = {}
    for fcurve in compat.action_fcurves(action, key):
        found = KEY_PATH.match(fcurve.data_path)
        if found:
            co = np.empty(2 * len(fcurve.keyframe_points), dtype=np.float32)
            fcurve.keyframe_points.foreach_get("co", co)
            curves[found.group(1)] = co.reshape(-1, 2)
    return curves


def retarget_shape_keys(source_mesh, target, action_name: str | None = None) -> RetargetReport:
    """Key ``target``'s shape keys with the source's expression curves (new action)."""
    if target.type != "MESH" or target.data.shape_keys is None:
        raise RetargetError(f"{target.name!r} has no shape keys to retarget onto")
    if target == source_mesh:
        raise RetargetError("pick a target mesh other than the fitted head")
    curves = source_curves(source_mesh)
    target_key = target.data.shape_keys
    target_names = [block.name for block in target_key.key_blocks[1:]]
    matches = match_channels(list(curves), target_names)
    if not matches:
        raise RetargetError(f"none of the {len(curves)} animated channels of {source_mesh.name!r} matches a "
                            f"shape key of {target.name!r} (expected ARKit names such as jawOpen)")
    previous = target_key.animation_data.action if target_key.animation_data else None
    if previous is not None:
        previous.use_fake_user = True  # never lose the artist's action
    source_action = source_mesh.data.shape_keys.animation_data.action
    action = bpy.data.actions.new(action_name or f"{source_action.name} on {target.name}")
    fcurves = compat.assign_action(target_key, action, "shapes")
    for source, name in matches.items():
        co = curves[source]
        fcurve = compat.new_fcurve(fcurves, f'key_blocks["{name}"].value', 0, "Expressions")
        fcurve.keyframe_points.add(len(co))
        fcurve.keyframe_points.foreach_set("co", co.ravel())
        fcurve.update()
        block = target_key.key_blocks[name]
        block.slider_min = min(block.slider_min, float(np.floor(co[:, 1].min())))
        block.slider_max = max(block.slider_max, float(np.ceil(co[:, 1].max())))
    return RetargetReport(action, matches, sorted(set(curves) - set(matches)),
                          sorted(set(target_names) - set(matches.values())))
