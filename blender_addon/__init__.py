"""Facecap: fit a head rig to video strips with a dense-landmark backend, import it keyed.

Installs as a Blender 4.2+ extension (``blender_manifest.toml``) and as a legacy add-on
for Blender 3.4 to 4.1 (``bl_info``). The fitting runs in a separate backend process (its
own Python environment); this package imports nothing but Blender's own modules and numpy.
"""
bl_info = {
    "name": "Facecap",
    "author": "facecap contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Sequencer and 3D View > Sidebar > Facecap",
    "description": "Facial performance capture: fit a head rig to video strips and import it keyed",
    "category": "Animation",
}

import bpy  # noqa: E402

from . import operators, overlay, preferences, properties, ui  # noqa: E402

_classes = preferences.classes + properties.classes + operators.classes + ui.classes


def register() -> None:
    for cls in _classes:
        bpy.utils.register_class(cls)
    properties.register()
    bpy.app.handlers.load_post.append(overlay.after_load)


def unregister() -> None:
    operators.shutdown()
    if overlay.after_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(overlay.after_load)
    overlay.hide()
    properties.unregister()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)

