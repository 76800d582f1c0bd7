"""Add-on preferences: the backend environment, head model, landmark model, device, jobs folder."""
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend, compat
from .state import SESSION, SETUP
from .text import wrap

PACKAGE = __package__


class FacecapPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python of the backend environment (its venv folder or its python executable); "
                    "empty: auto-detect")
    jobs_folder: StringProperty(
        name="Jobs folder", subtype="DIR_PATH",
        description="Where fit jobs and their results are kept; empty: 'facecap_jobs' next to the .blend "
                    "file when it was saved before the first fit, else the user data folder (a scene keeps "
                    "the folder of its first fit)")
    head_model: EnumProperty(
        name="Head model", default="OPEN",
        items=[("OPEN", "Open head", "The embedded open head (MakeHuman CC0), ARKit expression channels"),
               ("FLAME", "FLAME file", "Your own FLAME model file (.pkl), PCA expression channels exp000...")])
    flame_path: StringProperty(name="FLAME file", subtype="FILE_PATH",
                               description="FLAME model: generic_model.pkl, flame2023.pkl, ...")
    landmark_model: EnumProperty(
        name="Landmarks", default="WHOLE_HEAD",
        items=[("WHOLE_HEAD", "MediaPipe face + whole head (default)",
                "MediaPipe's face points plus the project's network for ears, neck and back of the head"),
               ("BOOTSTRAP", "MediaPipe face only", "MediaPipe's 468 face points alone (no ears or back of head)"),
               ("DENSE", "Whole-head network only", "The project's 320-point whole-head network alone, trained "
                                                   "on rendered heads (experimental)")])
    device: EnumProperty(name="Device", default="CPU",
                         items=[("CPU", "CPU", "Run the networks on the CPU"),
                                ("GPU", "GPU", "Run the networks on a CUDA GPU when the backend has one")])

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_python")
        task = SETUP.task
        try:
            python = backend.find_backend_python(bpy.path.abspath(self.backend_python))
        except backend.BackendError as exc:
            python = None
            for n, line in enumerate(wrap(str(exc).replace(" in the add-on preferences", ""), 90)):
                col.label(text=line, icon="ERROR" if n == 0 else "BLANK1")
        if python is not None:
            answered = SESSION.hello is not None and SESSION.backend_python == python
            col.label(text=f"Backend ready: {python}" if answered else f"Backend found, not checked yet: {python}",
                      icon="CHECKMARK" if answered else "QUESTION")
        row = col.row()
        row.enabled = task is None or task.status != "running"
        row.operator("facecap.setup_backend", icon="CONSOLE")
        row.operator("facecap.check_backend", icon="PLUGIN")
        if task is not None:
            box = col.box()
            text = (f"{task.stage} ({100 * task.fraction:.0f}%)" if task.status == "running" else task.message)
            for n, line in enumerate(wrap(text, 90)):
                box.label(text=line, icon=("ERROR" if task.status == "failed" else "INFO") if n == 0 else "BLANK1")
        col.separator()
        col.prop(self, "head_model")
        if self.head_model == "FLAME":
            col.prop(self, "flame_path")
        col.prop(self, "landmark_model")
        col.prop(self, "device")
        col.prop(self, "jobs_folder")


def get(context=None):
    """The preferences, or None when the add-on is imported without being enabled."""
    return compat.addon_preferences(context or bpy.context, PACKAGE)


def jobs_root(context) -> Path:
    """The preferences' jobs folder; else the one this scene's first fit used (it does not move
    when the .blend is saved later); else 'facecap_jobs' next to the saved .blend or the user
    data folder."""
    prefs = get(context)
    if prefs is not None and prefs.jobs_folder:
        return Path(bpy.path.abspath(prefs.jobs_folder))
    if context.scene.facecap.jobs_folder:
        return Path(context.scene.facecap.jobs_folder)
    if bpy.data.filepath:
        return Path(bpy.data.filepath).parent / "facecap_jobs"
    return backend.data_dir() / "jobs"


def head_spec(context) -> str:
    """``"open"`` or the absolute FLAME path; ValueError with a message for a bad path."""
    prefs = get(context)
    if prefs is None or prefs.head_model == "OPEN":
        return "open"
    path = Path(bpy.path.abspath(prefs.flame_path)) if prefs.flame_path else None
    if path is None:
        raise ValueError("the head model is set to FLAME but no FLAME file is chosen (add-on preferences)")
    if not path.is_file():
        raise ValueError(f"the FLAME file does not exist: {path}")
    if path.suffix.lower() not in (".pkl", ".npz"):
        raise ValueError(f"{path.name} is not a FLAME model: expected a .pkl file such as generic_model.pkl")
    return str(path)


def backend_python(context) -> Path:
    prefs = get(context)
    configured = bpy.path.abspath(prefs.backend_python) if prefs is not None and prefs.backend_python else ""
    return backend.find_backend_python(configured)


classes = (FacecapPreferences,)
