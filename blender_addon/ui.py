"""Sidebar panels ("Facecap" tab) in the Sequencer and the 3D View."""
import time

import bpy

from . import backend, compat, preferences, text
from .state import SESSION


def _format_eta(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f", {seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f", {seconds} s left"


def _width(context) -> int:
    """Characters that fit on one line of the panel."""
    region = context.region
    return text.chars_that_fit(region.width if region else 300, context.preferences.system.ui_scale)


def _lines(layout, message: str, width: int, icon: str, limit: int = 6) -> None:
    lines = text.wrap(message, width)
    if len(lines) > limit:
        lines = lines[:limit - 1] + [lines[limit - 1][:max(1, width - 1)] + "…"]
    for n, line in enumerate(lines):
        layout.label(text=line, icon=icon if n == 0 else "BLANK1")


def draw_fit(layout, context) -> None:
    settings = context.scene.facecap
    width = _width(context)
    job = SESSION.active_job()
    row = layout.row(align=True)
    row.scale_y = 1.6
    if job is None:
        row.operator("facecap.fit", icon="PLAY")
    else:
        row.operator("facecap.cancel", icon="CANCEL")
    latest = SESSION.latest_job()
    if job is not None:
        box = layout.box()
        _lines(box, f"{job.take}: {job.stage}", width - 3, "TIME", limit=2)
        shown, left = job.estimate(SESSION.rates)
        elapsed = int(time.monotonic() - job.started)  # moves every second, whatever the backend says
        box.label(text=f"{100 * shown:.0f}%{_format_eta(left)} (running {elapsed // 60}:{elapsed % 60:02d})")
    elif latest is not None and latest.status in ("failed", "cancelled"):
        box = layout.box()
        box.alert = latest.status == "failed"
        _lines(box, f"{latest.take}: {latest.message}", width - 3,
               "ERROR" if latest.status == "failed" else "INFO")
    elif latest is not None and latest.status == "done":
        _lines(layout, f"{latest.take}: {latest.message}" + (", imported" if latest.imported else ""), width,
               "CHECKMARK", limit=2)
    layout.operator("facecap.view_take", icon="VIEW_CAMERA")
    layout.prop(settings, "show_landmarks")
    draw_takes(layout, context)
    row = layout.row(align=True)
    row.prop(settings, "auto_import")
    row.operator("wm.url_open", text="", icon="HELP").url = text.help_url(backend.backend_sources())


class FACECAP_UL_takes(bpy.types.UIList):
    """The take list: name and frames; a click shows the take."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.label(text=item.name, icon="ACTION")
        row.label(text=f"{item.frame_start}-{item.frame_end}")


def draw_takes(layout, context) -> None:
    settings = context.scene.facecap
    if not len(settings.takes):
        return
    row = layout.row()
    row.template_list("FACECAP_UL_takes", "", settings, "takes", settings, "active_take", rows=2)
    col = row.column(align=True)
    col.operator("facecap.take_reimport", text="", icon="FILE_REFRESH")
    col.operator("facecap.export_fbx", text="", icon="EXPORT")
    col.operator("facecap.take_delete", text="", icon="TRASH")


def draw_source(layout, context) -> None:
    scene = context.scene
    settings = scene.facecap
    layout.prop(settings, "source", expand=True)
    if settings.source == "SYNTHETIC":
        col = layout.column(align=True)
        col.prop(settings, "synthetic_frames")
        col.prop(settings, "synthetic_seed")
    else:
        row = layout.row(align=True)
        row.operator("facecap.views_from_selection", icon="SEQ_SEQUENCER")
        row.operator("facecap.views_clear", text="", icon="X")
        if len(settings.views):
            for number, view in enumerate(settings.views, 1):
                box = layout.box()
                strip = compat.find_strip(scene, view.strip)
                box.label(text=f"View {number}: {view.strip}", icon="FILE_MOVIE" if strip else "ERROR")
                if len(settings.views) > 1:
                    box.prop(view, "camera")
        else:
            editor = scene.sequence_editor
            active = editor.active_strip if editor else None
            if active is not None and active.type == "MOVIE":
                layout.label(text=f"Active strip: {active.name}", icon="FILE_MOVIE")
            else:
                layout.label(text="Select a movie strip", icon="INFO")
        layout.prop(settings, "use_strip_range")
        if not settings.use_strip_range:
            row = layout.row(align=True)
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        layout.prop(settings, "pupil_distance_mm")
    layout.prop(settings, "quality", expand=True)
    layout.prop(settings, "take")
    layout.prop(settings, "reuse_rig")


def draw_backend_status(layout, context) -> None:
    prefs = preferences.get(context)
    try:
        preferences.backend_python(context)
    except backend.BackendError as exc:
        box = layout.box()
        box.alert = True
        _lines(box, str(exc), _width(context) - 3, "ERROR")
        box.operator("facecap.setup_backend", icon="CONSOLE")
    if prefs is not None:
        layout.label(text="Head: " + ("open head" if prefs.head_model == "OPEN"
                                      else bpy.path.basename(prefs.flame_path) or "FLAME (no file)"), icon="USER")


def draw_output(layout, context) -> None:
    settings = context.scene.facecap
    col = layout.column(align=True)
    col.prop(settings, "retarget_target")
    col.operator("facecap.retarget", icon="SHAPEKEY_DATA")
    layout.separator()
    row = layout.row(align=True)
    row.prop(settings, "fbx_preset", text="")
    row.operator("facecap.export_fbx", icon="EXPORT").preset = settings.fbx_preset


class _Sidebar:
    bl_region_type = "UI"
    bl_category = "Facecap"


def _panels(space: str, prefix: str) -> list:
    """The same panels for one space type."""
    main_id = f"FACECAP_PT_{prefix}_fit"

    class Main(_Sidebar, bpy.types.Panel):
        bl_idname = main_id
        bl_space_type = space
        bl_label = "Facecap"

        def draw(self, context):
            draw_fit(self.layout, context)
            draw_backend_status(self.layout, context)

    class Source(_Sidebar, bpy.types.Panel):
        bl_idname = f"FACECAP_PT_{prefix}_source"
        bl_space_type = space
        bl_label = "Shot"
        bl_parent_id = main_id

        def draw(self, context):
            draw_source(self.layout, context)

    class Output(_Sidebar, bpy.types.Panel):
        bl_idname = f"FACECAP_PT_{prefix}_output"
        bl_space_type = space
        bl_label = "Retarget & Export"
        bl_parent_id = main_id
        bl_options = {"DEFAULT_CLOSED"}

        def draw(self, context):
            draw_output(self.layout, context)

    for cls in (Main, Source, Output):
        cls.__name__ = cls.bl_idname
    return [Main, Source, Output]


classes = (FACECAP_UL_takes,) + tuple(_panels("SEQUENCE_EDITOR", "sequencer") + _panels("VIEW_3D", "view3d"))
