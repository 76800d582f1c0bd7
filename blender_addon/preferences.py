"""Add-on preferences: the backend environment, head model, landmark model, device, jobs folder."""
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from . import backend, compat
from .state import SETUP

PACKAGE = __package__


class FacecapPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python of the backend environment (its venv folder or its python executable); "
                    "empty: auto-detect")
    jobs_folder: StringProperty(
        name="Jobs folder", subtype="DIR_PATH",
        description="Where fit jobs and their results are kept; empty: 'facecap_jobs' next to the saved "
                    ".blend file, else the user data folder")
    head_model: EnumProperty(
        name="Head model", default="OPEN",
        items=[("OPEN", "Open head", "The embedded open head (MakeHuman CC0), ARKit expression channels"),
               ("FLAME", "FLAME file", "Your own FLAME model file (.pkl), PCA expression channels exp000...")])
    flame_path: StringProperty(name="FLAME file", subtype="FILE_PATH",
                               description="FLAME model: generic_model.pkl, flame2023.pkl, ...")
    landmark_model: EnumProperty(
        name="Landmarks", default="WHOLE_HEAD",
        items=[("WHOLE_HEAD", "Whole head", "MediaPipe's face mesh for the face plus the dense network's ears, "
                                            "neck and back of head (the default)"),
               ("BOOTSTRAP", "Bootstrap", "MediaPipe's 468-point face mesh alone, mapped onto the head"),
               ("DENSE", "Dense", "The dense landmark network alone: 320 whole-head landmarks with "
                                  "uncertainties, trained on synthetic renders")])
    device: EnumProperty(name="Device", default="CPU",
                         items=[("CPU", "CPU", "Run the networks on the CPU"),
                                ("GPU", "GPU", "Run the networks on a CUDA GPU when the backend has one")])

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_python")
        try:
            python = backend.find_backend_python(bpy.path.abspath(self.backend_python))
            col.label(text=f"Backend: {python}", icon="CHECKMARK")
        except backend.BackendError as exc:
            col.label(text=str(exc), icon="ERROR")
        task = SETUP.task
        row = col.row()
        row.enabled = task is None or task.status != "running"
        row.operator("facecap.setup_backend", icon="CONSOLE")
        if task is not None:
            box = col.box()
            box.label(text=f"Set-up: {task.stage} ({100 * task.fraction:.0f}%)" if task.status == "running"
                      else task.message, icon="ERROR" if task.status == "failed" else "INFO")
            if task.status == "running" and task.last_line:
                box.label(text=task.last_line[-120:])
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
    prefs = get(context)
    if prefs is not None and prefs.jobs_folder:
        return Path(bpy.path.abspath(prefs.jobs_folder))
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
