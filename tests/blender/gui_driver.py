"""Runs inside a real Blender GUI (``blender --python gui_driver.py``) for test_gui_blender.py.

It adds a movie strip (``FACECAP_GUI_CLIP``), lays the window out as a Sequencer (timeline and
preview, Facecap sidebar) beside a 3D View, then reports through a
JSON status file (``FACECAP_GUI_STATUS``) what the harness needs: where the sidebar is on the
screen, whether the Facecap panel is showing (the sidebar is redrawn every 0.2 s, so a
showing panel draws that often), the job's state after the harness clicks Fit, and
what the import keyed. It quits when the harness creates the file ``FACECAP_GUI_QUIT``.
"""
import json
import os
import sys
import time
from pathlib import Path

import bpy

STATUS = Path(os.environ["FACECAP_GUI_STATUS"])
QUIT = Path(os.environ["FACECAP_GUI_QUIT"])
SECOND = Path(os.environ["FACECAP_GUI_QUIT"] + ".second")   # the harness asks for a second take
state = {"panel_draws": 0, "started": time.time()}


def write_status(**fields) -> None:
    partial = STATUS.with_name(STATUS.name + ".partial")
    partial.write_text(json.dumps(fields))
    partial.replace(STATUS)


def configure() -> None:
    import addon_utils
    addon_utils.enable("facecap", default_set=True, handle_error=lambda exc: (_ for _ in ()).throw(exc))
    prefs = bpy.context.preferences.addons["facecap"].preferences
    prefs.backend_python = os.environ["FACECAP_GUI_BACKEND"]
    prefs.jobs_folder = os.environ["FACECAP_GUI_JOBS"]
    scene = bpy.context.scene
    from facecap import compat
    strip = compat.top_strips(scene).new_movie("actor", os.environ["FACECAP_GUI_CLIP"], channel=1, frame_start=1)
    scene.sequence_editor.active_strip = strip
    scene.render.resolution_x, scene.render.resolution_y = strip.elements[0].orig_width, strip.elements[0].orig_height
    settings = scene.facecap
    settings.source = "STRIPS"
    settings.use_strip_range, settings.frame_start, settings.frame_end = False, 1, 8
    settings.take = "gui_take"
    settings.show_landmarks = True
    panel = bpy.types.FACECAP_PT_sequencer_fit
    draw = panel.draw

    def counted(self, context):
        state["panel_draws"] += 1
        state["panel_drawn_at"] = time.time()
        draw(self, context)
    panel.draw = counted


def layout_window():
    """Once: the biggest area is split into a Sequencer with its sidebar shown (left) and a 3D
    View (right). Returns (window, sequencer area, its sidebar region, 3D view area)."""
    window = bpy.context.window_manager.windows[0]
    if "areas" not in state:
        area = max(window.screen.areas, key=lambda a: a.width * a.height)
        before = {a.as_pointer() for a in window.screen.areas}
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.screen.area_split(direction="VERTICAL", factor=0.55)
        new = [a for a in window.screen.areas if a.as_pointer() not in before]
        left, right = sorted([area] + new, key=lambda a: a.x)
        left.type, right.type = "SEQUENCE_EDITOR", "VIEW_3D"
        space = left.spaces.active
        space.view_type = "SEQUENCER_PREVIEW"
        space.show_region_ui = True
        state["areas"] = (left, right)
    left, right = state["areas"]
    sidebar = next((r for r in left.regions if r.type == "UI"), None)
    return window, left, sidebar, right


def look_through_fitted_camera(view3d) -> None:
    """What the panel's "View over Footage" does, in the 3D View, mid-take."""
    from facecap import operators
    scene = bpy.context.scene
    window = bpy.context.window_manager.windows[0]
    with bpy.context.temp_override(window=window, area=view3d):
        operators.view_through_scene_camera(bpy.context)
    scene.frame_set(scene.frame_start + 3)
    state["viewing"] = True


def report() -> float | None:
    try:
        return report_once()
    except Exception as exc:  # tell the harness at once instead of letting it time out
        write_status(error=f"{type(exc).__name__}: {exc}")
        return None


def report_once() -> float | None:
    window, area, sidebar, view3d = layout_window()
    from facecap import operators
    job = operators.SESSION.latest_job()
    if job is not None and job.imported and "viewing" not in state:
        look_through_fitted_camera(view3d)
    rig = bpy.data.objects.get("gui_take Rig")
    keyed = {}
    if rig is not None and rig.animation_data and rig.animation_data.action:
        mesh = bpy.data.objects["gui_take Head"]
        key_action = mesh.data.shape_keys.animation_data.action
        keyed = {"bone_curves": len(rig.animation_data.action.fcurves),
                 "shape_curves": len(key_action.fcurves),
                 "keys_per_curve": len(key_action.fcurves[0].keyframe_points),
                 "action": key_action.name}
    scene = bpy.context.scene
    camera = scene.camera
    backgrounds = [b.clip.filepath for b in camera.data.background_images if b.clip] if camera else []
    ready = {"camera": camera.name if camera else None, "backgrounds": backgrounds,
             "shows_backgrounds": bool(camera and camera.data.show_background_images),
             "resolution": [scene.render.resolution_x, scene.render.resolution_y],
             "frames": [scene.frame_start, scene.frame_end],
             "takes": [t.name for t in scene.facecap.takes]}
    write_status(
        blender=bpy.app.version_string, window=[window.x, window.y, window.width, window.height],
        sidebar=[sidebar.x, sidebar.y, sidebar.width, sidebar.height] if sidebar else None,
        ui_scale=bpy.context.preferences.system.ui_scale, panel_draws=state["panel_draws"],
        since_panel_drawn_s=time.time() - state.get("panel_drawn_at", 0.0),
        job=None if job is None else {"status": job.status, "stage": job.stage, "message": job.message,
                                      "imported": job.imported},
        keyed=keyed, ready=ready, viewing="viewing" in state, log=[m for _, m in operators.SESSION.log][-5:],
        elapsed_s=time.time() - state["started"])
    if QUIT.exists():
        bpy.ops.wm.quit_blender()
        return None
    if SECOND.exists() and "second" not in state:
        state["second"] = True  # another actor: a test shot with its own identity, as a second take
        settings = bpy.context.scene.facecap
        settings.source, settings.synthetic_frames, settings.synthetic_seed = "SYNTHETIC", 6, 7
        settings.take = "second_actor"
        bpy.ops.facecap.fit()
    area.tag_redraw()
    view3d.tag_redraw()
    return 0.2


bpy.context.preferences.view.show_splash = False
try:
    configure()
    bpy.app.timers.register(report, first_interval=0.5)
except Exception as exc:  # make the harness fail with the reason instead of waiting
    write_status(error=f"{type(exc).__name__}: {exc}")
    sys.exit(1)
