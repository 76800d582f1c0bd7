"""Operators (thin) and the plain functions they call (which tests call directly).

The top of the add-on's imports: operators use overlay, preferences and the plain modules;
none of those imports operators (the running state lives in ``state``).

Plain functions: :func:`build_fit_request`, :func:`start_fit`, :func:`tick`,
:func:`import_job`, :func:`cancel_fit`, :func:`retarget_to`, :func:`export_rig`. The UI's timer
calls :func:`tick`; in bpy module mode and ``blender -b`` timers never fire, so tests call it.
"""
import time
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import backend, backend_setup, compat, fbx_export, importer, jobs, overlay, preferences, results, retarget, takes
from .state import SESSION, SETUP

TIMER_INTERVAL_S = 0.25
XRAY_ALPHA = 0.6   # how opaque the head is over the footage in "View over Footage"
ERRORS = (jobs.JobError, results.ResultError, backend.BackendError, retarget.RetargetError,
          fbx_export.ExportError, ValueError)


# -- what to fit -------------------------------------------------------------------------
def strip_view_cameras(scene) -> list:
    """(strip, camera or None) of every view: the panel's views, else the active strip."""
    settings = scene.facecap
    if len(settings.views):
        entries = [(v.strip, v.camera) for v in settings.views]
    else:
        editor = scene.sequence_editor
        active = editor.active_strip if editor else None
        if active is None:
            raise jobs.JobError("select a movie strip in the Sequencer (or add views with 'Use Selected Strips')")
        entries = [(active.name, None)]
    views = []
    for number, (name, camera) in enumerate(entries, 1):
        strip = compat.find_strip(scene, name)
        if strip is None:
            raise jobs.JobError(f"view {number}: strip {name!r} no longer exists")
        if strip.type != "MOVIE":
            raise jobs.JobError(f"strip {name!r} is a {strip.type.lower()} strip, not a movie: pick a movie strip")
        path = Path(bpy.path.abspath(strip.filepath))
        if not path.is_file():
            hint = "" if path.is_absolute() else " (relative to the .blend file, which is not saved)"
            raise jobs.JobError(f"the video file of strip {name!r} is missing: {strip.filepath}{hint}")
        if len(entries) > 1 and (camera is None or camera.type != "CAMERA"):
            raise jobs.JobError(f"view {number} (strip {name!r}) needs a camera object: multi-view uses one "
                                "Blender camera per view as calibration")
        views.append((strip, camera, path))
    starts = {int(round(strip.frame_start)) for strip, _, _ in views}
    if len(starts) > 1:
        raise jobs.JobError("the strips of a multi-view shot must be synchronised: they start on frames "
                            f"{sorted(starts)}; move them to start on the same frame")
    return views


def camera_focal_px(camera, image_size_px) -> float | None:
    """A Blender camera's focal length in pixels for an image of this size (None if unknown)."""
    width, height = image_size_px
    if not width or not height:
        return None
    data = camera.data
    fit = data.sensor_fit if data.sensor_fit != "AUTO" else ("HORIZONTAL" if width >= height else "VERTICAL")
    if fit == "HORIZONTAL":
        return data.lens / data.sensor_width * width
    sensor = data.sensor_height if data.sensor_fit == "VERTICAL" else data.sensor_width
    return data.lens / sensor * height


def build_fit_request(context) -> tuple:
    """(request fields, blender info) for the scene's settings; JobError for bad input."""
    scene = context.scene
    settings = scene.facecap
    prefs = preferences.get(context)
    fields = {"head": preferences.head_spec(context), "mode": settings.quality,
              "device": prefs.device.lower() if prefs else "cpu"}
    if prefs:  # without preferences the backend's default model is used
        fields["landmarks"] = prefs.landmark_model.lower()
    if settings.source == "SYNTHETIC":
        fields["source"] = {"kind": "synthetic", "frames": settings.synthetic_frames, "seed": settings.synthetic_seed}
        blender = {"take": settings.take or "synthetic", "frame_offset": scene.frame_start, "views": []}
    else:
        views = strip_view_cameras(scene)
        first = views[0][0]
        start = max(int(round(s.frame_final_start)) for s, _, _ in views)
        end = min(int(round(s.frame_final_end)) - 1 for s, _, _ in views)
        if not settings.use_strip_range:
            start, end = max(start, settings.frame_start), min(end, settings.frame_end)
        if end < start:
            raise jobs.JobError(f"the frame range {settings.frame_start}-{settings.frame_end} does not overlap "
                                f"the strip {first.name!r} (frames {int(first.frame_final_start)}-"
                                f"{int(first.frame_final_end) - 1})")
        offset = int(round(first.frame_start))  # timeline frame of the clip's frame 0
        source = {"kind": "video", "paths": [str(p) for _, _, p in views],
                  "frame_start": start - offset, "frame_end": end - offset}
        if settings.pupil_distance_mm > 0:  # 0: unknown
            fields["pupil_distance_mm"] = settings.pupil_distance_mm
        if len(views) > 1:
            source["cameras"] = []
            for strip, camera, _ in views:
                element = strip.elements[0] if len(strip.elements) else None
                size = (element.orig_width, element.orig_height) if element else (0, 0)
                source["cameras"].append({"matrix_world": [list(row) for row in camera.matrix_world],
                                          "focal_px": camera_focal_px(camera, size)})
        fields["source"] = source
        blender = {"take": settings.take or jobs.safe_name(Path(first.name).stem),
                   "frame_offset": offset,
                   "views": [{"strip": s.name, "camera": c.name if c else None} for s, c, _ in views]}
    blender["scene"] = scene.name
    blender["reuse_rig"] = settings.reuse_rig.name if settings.reuse_rig else None
    return fields, blender


# -- jobs ---------------------------------------------------------------------------------
def start_fit(context) -> jobs.Job:
    """Validate the scene's settings and start a fit; JobError (etc.) with a message otherwise."""
    running = SESSION.active_job()
    if running is not None:
        raise jobs.JobError(f"a fit is already running ({running.take}); cancel it or wait for it to finish")
    fields, blender = build_fit_request(context)
    python = preferences.backend_python(context)
    root = preferences.jobs_root(context)
    job = jobs.start_fit(SESSION, python, root, fields, blender)
    settings = context.scene.facecap
    settings.last_job = str(job.folder)
    if not settings.jobs_folder:
        settings.jobs_folder = str(root)  # later fits stay there, saved .blend or not
    return job


def cancel_fit() -> jobs.Job | None:
    return jobs.cancel(SESSION)


def import_job(context, folder, scene=None) -> importer.ImportReport:
    """Import a finished job folder (its ``job.json`` says where the take goes)."""
    folder = Path(folder)
    if not (folder / jobs.JOB_FILE).is_file() and (folder.parent / jobs.JOB_FILE).is_file():
        folder = folder.parent  # the artist picked the job's result folder itself
    job_file = jobs.read_job_file(folder)
    info = job_file["blender"]
    result = results.read_result(folder / jobs.RESULT_FOLDER)
    scene = scene or bpy.data.scenes.get(info.get("scene", "")) or context.scene
    views = info.get("views") or []
    camera = None
    if len(views) > 1:
        camera = bpy.data.objects.get(views[0].get("camera") or "")
        if camera is None:
            raise jobs.JobError(f"the camera {views[0].get('camera')!r} of view 1 no longer exists; "
                                "the multi-view rig is placed relative to it")
    reuse = None
    if info.get("reuse_rig"):
        reuse = bpy.data.objects.get(info["reuse_rig"])
        if reuse is None:
            raise jobs.JobError(f"the rig {info['reuse_rig']!r} chosen for this take no longer exists")
    offset = int(info.get("frame_offset", scene.frame_start))
    last = offset + int(result.animation.frame_indices[-1])
    if not -results.MAX_FRAME_INDEX <= offset + int(result.animation.frame_indices[0]) <= last <= results.MAX_FRAME_INDEX:
        raise jobs.JobError(f"{folder / jobs.JOB_FILE}: frame_offset {offset} puts the take on frames beyond "
                            f"Blender's +-{results.MAX_FRAME_INDEX}")
    report = importer.import_result(scene, result, take=str(info.get("take", folder.name)), frame_offset=offset,
                                    view_camera=camera, clip_path=jobs.clip_path(job_file), reuse_rig=reuse)
    scene.facecap.last_job = str(folder)
    takes.record(scene, report, folder)
    if scene.facecap.show_landmarks:
        overlay.load(folder)
    return report


def tick(context) -> list:
    """Follow the running job (and set-up); import finished jobs when asked. Returns the jobs
    that ended. Problems go to ``SESSION.log``."""
    ended = jobs.poll(SESSION)
    for job in ended:
        if job.status == "done":
            SESSION.report("INFO", f"{job.take}: fit {job.message}")
            scene = bpy.data.scenes.get(job.blender.get("scene", "")) or context.scene
            if scene.facecap.auto_import and not job.imported:
                try:
                    report = import_job(context, job.folder, scene)
                except ERRORS as exc:
                    SESSION.report("ERROR", f"{job.take}: import failed: {exc}")
                else:
                    job.imported = True
                    SESSION.report("INFO", import_summary(report))
                    for note in report.notes:
                        SESSION.report("WARNING", note)
        elif job.status == "cancelled":
            SESSION.report("INFO", f"{job.take}: {job.message}")
    if SETUP.task is not None and SETUP.task.status == "running" and backend_setup.poll(SETUP.task):
        SESSION.report("INFO" if SETUP.task.status == "done" else "ERROR", SETUP.task.message)
        if SETUP.task.status == "done":  # ready once the new backend answers hello
            try:
                jobs.ensure_backend(SESSION, SETUP.task.python)
            except backend.BackendError as exc:
                SESSION.report("ERROR", f"the new backend does not start: {exc}")
    return ended


def import_summary(report: importer.ImportReport) -> str:
    return (f"imported take into {report.armature.name!r} (frames {report.frame_start}-{report.frame_end}, "
            f"{report.seconds:.2f} s)")


def _busy() -> bool:
    return (SESSION.active_job() is not None or (SETUP.task is not None and SETUP.task.status == "running")
            or (SESSION.backend is not None and SESSION.hello is None))  # a check waiting for hello


def _redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("SEQUENCE_EDITOR", "VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _timer():
    context = bpy.context
    tick(context)
    for level, message in SESSION.drain_log():
        bpy.ops.facecap.report(level=level, message=message)
    window_manager = context.window_manager
    job = SESSION.active_job()
    _redraw(context)
    if job is not None:
        window_manager.progress_update(int(100 * job.estimate(SESSION.rates)[0]))
        return TIMER_INTERVAL_S
    window_manager.progress_end()
    return TIMER_INTERVAL_S if _busy() else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=TIMER_INTERVAL_S)


def retarget_to(context, target) -> retarget.RetargetReport:
    source = facecap_mesh(context)
    return retarget.retarget_shape_keys(source, target)


def facecap_armature(context):
    """The facecap rig to act on: the active object's, else the only one in the scene, else the
    active take's."""
    obj = context.view_layer.objects.active
    if obj is not None and obj.get(importer.RIG_KEY):
        return obj if obj.type == "ARMATURE" else obj.parent
    rigs = [o for o in context.scene.objects if o.type == "ARMATURE" and o.get(importer.RIG_KEY)]
    if len(rigs) == 1:
        return rigs[0]
    take = active_take(context)  # several rigs: the one of the take shown in the take list
    if take is not None and take.rig in rigs:
        return take.rig
    raise jobs.JobError("select the facecap rig (its armature or head mesh)" if rigs
                        else "no facecap rig in the scene: import a fit first")


def facecap_mesh(context):
    armature = facecap_armature(context)
    return fbx_export.rig_objects(armature)[1]


def export_rig(context, path, preset: str) -> Path:
    return fbx_export.export_fbx(context, facecap_armature(context), path, preset)


def active_take(context):
    settings = context.scene.facecap
    return settings.takes[settings.active_take] if 0 <= settings.active_take < len(settings.takes) else None


def default_fbx_path(context) -> Path:
    """``<take>.fbx`` next to the .blend (in the jobs folder while the .blend is not saved)."""
    armature = facecap_armature(context)
    take = jobs.safe_name(str(armature.get(importer.TAKE_KEY, armature.name)))
    folder = Path(bpy.data.filepath).parent if bpy.data.filepath else preferences.jobs_root(context)
    return folder / f"{take}.fbx"


def view_through_scene_camera(context) -> None:
    """A 3D View of the window (the current area when there is none) looks through the scene
    camera, so the head shows over the footage behind the camera."""
    camera = context.scene.camera
    if camera is None:
        raise jobs.JobError("the scene has no camera: import a take first")
    areas = [a for a in context.window.screen.areas if a.type == "VIEW_3D"]
    area = areas[0] if areas else context.area
    if area is None:
        raise jobs.JobError("no area to show the camera view in")
    area.type = "VIEW_3D"
    space = area.spaces.active
    space.shading.type = "SOLID"
    # The fitted camera may sit inside other objects (the default cube): their inner faces face
    # away from it and are culled, and the head is see-through enough to judge it on the actor.
    space.shading.show_backface_culling = True
    space.shading.show_xray = True
    space.shading.xray_alpha = XRAY_ALPHA
    space.overlay.show_overlays = True
    space.region_3d.view_perspective = "CAMERA"
    area.tag_redraw()


# -- operators ---------------------------------------------------------------------------
class FACECAP_OT_fit(bpy.types.Operator):
    bl_idname = "facecap.fit"
    bl_label = "Fit"
    bl_description = "Fit the head rig to the chosen strip(s) in the background"

    def execute(self, context):
        try:
            job = start_fit(context)
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.window_manager.progress_begin(0, 100)
        ensure_timer()
        self.report({"INFO"}, f"fit started: {job.take} ({job.folder})")
        return {"FINISHED"}


class FACECAP_OT_cancel(bpy.types.Operator):
    bl_idname = "facecap.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running fit"

    def execute(self, context):
        job = cancel_fit()
        if job is None:
            self.report({"WARNING"}, "no fit is running")
            return {"CANCELLED"}
        self.report({"INFO"}, f"cancelling {job.take}")
        return {"FINISHED"}


class FACECAP_OT_import(bpy.types.Operator):
    bl_idname = "facecap.import_result"
    bl_label = "Import"
    bl_description = "Import the latest finished fit into the scene"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})

    def execute(self, context):
        folder = self.directory or context.scene.facecap.last_job
        if not folder:
            self.report({"ERROR"}, "no fit to import yet: press Fit, or Re-import a job folder")
            return {"CANCELLED"}
        try:
            report = import_job(context, Path(bpy.path.abspath(folder)).resolve())
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for note in report.notes:
            self.report({"WARNING"}, note)
        self.report({"INFO"}, import_summary(report))
        return {"FINISHED"}


_JOB_ITEMS = []   # Blender keeps no reference to dynamic enum items: they live here


def finished_job_items(context) -> list:
    """(folder, "take, finished date", folder) of every finished job, newest first."""
    items = []
    for folder in jobs.finished_job_folders(preferences.jobs_root(context)):
        try:
            take = jobs.read_job_file(folder)["blender"].get("take") or folder.name
        except jobs.JobError:
            continue
        finished = time.strftime("%Y-%m-%d %H:%M", time.localtime(
            (folder / jobs.RESULT_FOLDER / results.MANIFEST).stat().st_mtime))
        items.append((str(folder), f"{take}, {finished}", str(folder)))
    return items


def _job_items(self, context):
    _JOB_ITEMS[:] = finished_job_items(context) or [("", "no finished jobs", "")]
    return _JOB_ITEMS


class FACECAP_OT_reimport(bpy.types.Operator):
    bl_idname = "facecap.reimport"
    bl_label = "Re-import"
    bl_description = "Import a finished job (e.g. one that finished while Blender was closed)"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "job"

    job: EnumProperty(name="Job", items=_job_items)

    def invoke(self, context, event):
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.job:
            self.report({"ERROR"}, f"no finished job in {preferences.jobs_root(context)}")
            return {"CANCELLED"}
        return bpy.ops.facecap.import_result(directory=self.job)


class FACECAP_OT_views_from_selection(bpy.types.Operator):
    bl_idname = "facecap.views_from_selection"
    bl_label = "Use Selected Strips"
    bl_description = "Make the selected movie strips the views of the shot (several: multi-view)"

    def execute(self, context):
        settings = context.scene.facecap
        strips = sorted((s for s in compat.all_strips(context.scene) if s.select and s.type == "MOVIE"),
                        key=lambda s: (s.channel, s.name))
        if not strips:
            self.report({"ERROR"}, "select one or more movie strips in the Sequencer")
            return {"CANCELLED"}
        cameras = {v.strip: v.camera for v in settings.views}
        settings.views.clear()
        for strip in strips:
            view = settings.views.add()
            view.strip = strip.name
            view.camera = cameras.get(strip.name)
        return {"FINISHED"}


class FACECAP_OT_views_clear(bpy.types.Operator):
    bl_idname = "facecap.views_clear"
    bl_label = "Clear Views"
    bl_description = "Forget the views: the active strip is fitted"

    def execute(self, context):
        context.scene.facecap.views.clear()
        return {"FINISHED"}


class FACECAP_OT_retarget(bpy.types.Operator):
    bl_idname = "facecap.retarget"
    bl_label = "Retarget"
    bl_description = "Copy the take's expressions onto the target mesh's ARKit-named shape keys"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        target = context.scene.facecap.retarget_target
        if target is None:
            self.report({"ERROR"}, "choose a target mesh with ARKit-named shape keys")
            return {"CANCELLED"}
        try:
            report = retarget_to(context, target)
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"WARNING"} if report.unmatched_source else {"INFO"}, report.summary())
        return {"FINISHED"}


class FACECAP_OT_export_fbx(bpy.types.Operator, ExportHelper):
    bl_idname = "facecap.export_fbx"
    bl_label = "Export FBX"
    bl_description = ("Export the rig and its take as FBX for a game engine (re-import in Blender with "
                      "Animation Offset 0 to keep the strip's frames)")

    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})
    preset: EnumProperty(name="Preset", items=[("UNITY", "Unity", ""), ("UNREAL", "Unreal", "")])

    def invoke(self, context, event):
        self.preset = context.scene.facecap.fbx_preset
        try:
            self.filepath = str(default_fbx_path(context))
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            path = export_rig(context, self.filepath, self.preset)
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"exported {path}")
        return {"FINISHED"}


class FACECAP_OT_take_reimport(bpy.types.Operator):
    bl_idname = "facecap.take_reimport"
    bl_label = "Re-import Take"
    bl_description = "Import the selected take's job again (its keys are rewritten unless you edited them)"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        entry = active_take(context)
        if entry is None:
            self.report({"ERROR"}, "no take selected")
            return {"CANCELLED"}
        return bpy.ops.facecap.import_result(directory=entry.job_folder)


class FACECAP_OT_take_delete(bpy.types.Operator):
    bl_idname = "facecap.take_delete"
    bl_label = "Delete Take"
    bl_description = "Remove the selected take's keys and camera (its rig too when no other take uses it)"
    bl_options = {"REGISTER", "UNDO"}

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        if active_take(context) is None:
            self.report({"ERROR"}, "no take selected")
            return {"CANCELLED"}
        name = takes.delete(context.scene, context.scene.facecap.active_take)
        self.report({"INFO"}, f"deleted take {name!r} (its job folder is kept for a re-import)")
        return {"FINISHED"}


class FACECAP_OT_view_take(bpy.types.Operator):
    bl_idname = "facecap.view_take"
    bl_label = "View over Footage"
    bl_description = "Look through the take's fitted camera, with the footage behind the head, in a 3D View"

    def execute(self, context):
        try:
            view_through_scene_camera(context)
        except ERRORS as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class FACECAP_OT_check_backend(bpy.types.Operator):
    bl_idname = "facecap.check_backend"
    bl_label = "Check Backend"
    bl_description = "Start the backend and wait for its answer (the check mark shows when it answers)"

    def execute(self, context):
        try:
            jobs.ensure_backend(SESSION, preferences.backend_python(context))
        except backend.BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        ensure_timer()
        return {"FINISHED"}


class FACECAP_OT_setup_backend(bpy.types.Operator):
    bl_idname = "facecap.setup_backend"
    bl_label = "Set up Backend"
    bl_description = ("Create the backend's Python environment (downloads numpy, OpenCV, onnxruntime and "
                      "the open head data; several minutes)")

    def execute(self, context):
        if SETUP.task is not None and SETUP.task.status == "running":
            self.report({"WARNING"}, "the set-up is already running")
            return {"CANCELLED"}
        try:
            SETUP.task = backend_setup.start()
        except backend.BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        ensure_timer()
        self.report({"INFO"}, f"setting up the backend in {SETUP.task.venv}")
        return {"FINISHED"}


class FACECAP_OT_report(bpy.types.Operator):
    """Puts a message from the background into the info log."""

    bl_idname = "facecap.report"
    bl_label = "Facecap Message"
    bl_options = {"INTERNAL"}

    level: StringProperty(default="INFO")
    message: StringProperty()

    def execute(self, context):
        self.report({self.level if self.level in ("INFO", "WARNING", "ERROR") else "INFO"}, self.message)
        return {"FINISHED"}


classes = (FACECAP_OT_fit, FACECAP_OT_cancel, FACECAP_OT_import, FACECAP_OT_reimport,
           FACECAP_OT_views_from_selection, FACECAP_OT_views_clear, FACECAP_OT_retarget, FACECAP_OT_export_fbx,
           FACECAP_OT_take_reimport, FACECAP_OT_take_delete, FACECAP_OT_view_take, FACECAP_OT_check_backend,
           FACECAP_OT_setup_backend, FACECAP_OT_report)


def shutdown() -> None:
    """Stop the backend and the timer (on unregister)."""
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    jobs.stop_backend(SESSION)
    if SETUP.task is not None and SETUP.task.status == "running":
        backend_setup.cancel(SETUP.task)
