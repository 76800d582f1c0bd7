"""Sidebar panels ("Facecap" tab) in the Sequencer and the 3D View."""
import bpy

from . import backend, compat, preferences
from .state import SESSION


def _format_eta(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f", {seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f", {seconds} s left"


def draw_fit(layout, context) -> None:
    settings = context.scene.facecap
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
        box.label(text=f"{job.take}: {job.stage}", icon="TIME")
        box.label(text=f"{100 * job.fraction:.0f}%{_format_eta(job.eta_s)}")
    elif latest is not None and latest.status in ("failed", "cancelled"):
        box = layout.box()
        box.alert = latest.status == "failed"
        icon = "ERROR" if latest.status == "failed" else "INFO"
        for n, line in enumerate(_wrap(f"{latest.take}: {latest.message}", 48)[:6]):
            box.label(text=line, icon=icon if n == 0 else "BLANK1")
    elif latest is not None and latest.status == "done":
        layout.label(text=f"{latest.take}: {latest.message}" + (", imported" if latest.imported else ""),
                     icon="CHECKMARK")
    row = layout.row(align=True)
    row.operator("facecap.import_result", icon="IMPORT")
    row.operator("facecap.reimport", icon="FILE_FOLDER")
    layout.prop(settings, "auto_import")


def _wrap(text: str, width: int) -> list:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


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
    layout.prop(settings, "quality", expand=True)
    layout.prop(settings, "take")


def draw_backend_status(layout, context) -> None:
    prefs = preferences.get(context)
    try:
        preferences.backend_python(context)
    except backend.BackendError as exc:
        box = layout.box()
        box.alert = True
        for n, line in enumerate(_wrap(str(exc), 48)):
            box.label(text=line, icon="ERROR" if n == 0 else "BLANK1")
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
    layout.prop(settings, "show_landmarks")


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


classes = tuple(_panels("SEQUENCE_EDITOR", "sequencer") + _panels("VIEW_3D", "view3d"))
