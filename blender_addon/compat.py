"""The few places where Blender 3.4 to 5.0 differ, behind one function each.

- 4.4 renamed the Sequencer's ``sequences``/``sequences_all`` to ``strips``/``strips_all``.
- 4.4 introduced slotted actions (one action animates several data-blocks through slots);
  5.0 removed ``Action.fcurves``: F-curves live in the channelbag of a slot. 4.4 and 4.5
  lack ``anim_utils.action_ensure_channelbag_for_slot`` and F-curve groups on creation.
- 4.0 renamed the built-in GPU shaders ``2D_UNIFORM_COLOR`` -> ``UNIFORM_COLOR`` and so on.
- 4.2 added extensions: the add-on may be a package ``bl_ext.<repo>.facecap`` or ``facecap``.
"""
import bpy

VERSION = bpy.app.version
SLOTTED_ACTIONS = "slots" in bpy.types.Action.bl_rna.properties
STRIPS_RENAMED = "strips_all" in bpy.types.SequenceEditor.bl_rna.properties


# -- Sequencer -------------------------------------------------------------------------
def all_strips(scene) -> list:
    """Every strip of the scene, in meta strips too ([] without a sequence editor)."""
    editor = scene.sequence_editor
    if editor is None:
        return []
    return list(editor.strips_all if STRIPS_RENAMED else editor.sequences_all)


def top_strips(scene):
    """The editable top-level strip collection (created on demand), for adding strips."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return editor.strips if STRIPS_RENAMED else editor.sequences


def find_strip(scene, name: str):
    for strip in all_strips(scene):
        if strip.name == name:
            return strip
    return None


# -- actions ---------------------------------------------------------------------------
def assign_action(id_block, action, slot_name: str):
    """Make ``action`` animate ``id_block``; returns the F-curve collection to add curves to.

    With slotted actions every data-block gets its own slot (named ``slot_name``) in the
    one action; before 4.4 the action itself holds the curves of exactly one data-block.
    """
    animation = id_block.animation_data or id_block.animation_data_create()
    if not SLOTTED_ACTIONS:
        animation.action = action
        return action.fcurves
    from bpy_extras import anim_utils
    id_type = id_block.id_type
    slot = next((s for s in action.slots if s.target_id_type == id_type and s.name_display == slot_name), None)
    if slot is None:
        slot = action.slots.new(id_type=id_type, name=slot_name)
    animation.action = action
    animation.action_slot = slot
    if hasattr(anim_utils, "action_ensure_channelbag_for_slot"):
        return anim_utils.action_ensure_channelbag_for_slot(action, slot).fcurves
    # 4.4 and 4.5 lack that helper: the same steps by hand (first layer, first keyframe strip).
    layer = action.layers[0] if action.layers else action.layers.new("Layer")
    strip = layer.strips[0] if layer.strips else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True).fcurves


def action_fcurves(action, id_block) -> list:
    """The F-curves of ``action`` that animate ``id_block`` (its assigned slot)."""
    if not SLOTTED_ACTIONS:
        return list(action.fcurves)
    from bpy_extras import anim_utils
    animation = id_block.animation_data
    if animation is None or animation.action != action or animation.action_slot is None:
        return []
    channelbag = anim_utils.action_get_channelbag_for_slot(action, animation.action_slot)
    return list(channelbag.fcurves) if channelbag else []


def all_action_fcurves(action) -> list:
    """Every F-curve of an action, over all its slots."""
    if not SLOTTED_ACTIONS:
        return list(action.fcurves)
    return [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags
            for fc in bag.fcurves]


def new_fcurve(fcurves, data_path: str, index: int, group: str = ""):
    """Add an F-curve to a collection from :func:`assign_action`."""
    if not SLOTTED_ACTIONS:
        return fcurves.new(data_path, index=index, action_group=group)
    if "group_name" in fcurves.bl_rna.functions["new"].parameters:
        return fcurves.new(data_path, index=index, group_name=group)
    # 4.4 and 4.5: the channelbag's F-curves take no group; set it on the new curve.
    fcurve = fcurves.new(data_path, index=index)
    if group:
        channelbag = fcurves.data
        fcurve.group = channelbag.groups.get(group) or channelbag.groups.new(group)
    return fcurve


def clear_fcurves(fcurves) -> None:
    for fcurve in list(fcurves):
        fcurves.remove(fcurve)


# -- drawing ---------------------------------------------------------------------------
def builtin_shader(name: str):
    """``"FLAT_COLOR"``/``"UNIFORM_COLOR"``; before 4.0 these were prefixed with ``2D_``."""
    import gpu
    if VERSION < (4, 0, 0):
        name = "2D_" + name
    return gpu.shader.from_builtin(name)


# -- add-on identity -------------------------------------------------------------------
def addon_preferences(context, package: str):
    """This add-on's preferences, or None when it is not enabled (e.g. imported by a test)."""
    addon = context.preferences.addons.get(package)
    return addon.preferences if addon else None
