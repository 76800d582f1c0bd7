"""Draw the fitted landmarks over the Sequencer preview for the current frame.

Points are coloured by their sigma relative to the image width (green: confident, 0.5% of
the width or less; red: uncertain, 4% or more; log scale between). Image pixels (x right, y down) map onto the preview as a strip that fits the render
frame (the Sequencer's default "Scale to Fit"), centred on the preview's origin.
"""
from pathlib import Path

import bpy
import numpy as np

from . import compat, jobs, results
from .state import SESSION

SIGMA_GREEN = 0.005   # of the image width
SIGMA_RED = 0.04
POINT_SIZE_PX = 4.0

_state = {"handle": None, "animation": None, "frame_offset": 0, "view": 0, "folder": None}


def sigma_colours(sigma_px: np.ndarray, image_width_px: float) -> np.ndarray:
    """(S,) sigmas -> (S, 4) RGBA from green to yellow to red on a log scale."""
    relative = np.maximum(sigma_px, 1e-9) / image_width_px
    t = np.clip(np.log(relative / SIGMA_GREEN) / np.log(SIGMA_RED / SIGMA_GREEN), 0, 1)
    return np.stack([np.minimum(1.0, 2 * t), np.minimum(1.0, 2 * (1 - t)), np.zeros_like(t), np.ones_like(t)],
                    axis=-1).astype(np.float32)


def frame_landmarks(animation, timeline_frame: int, frame_offset: int, view: int = 0):
    """(S', 2) image pixels and (S',) sigmas of the observed landmarks at a timeline frame, or None."""
    if animation is None or animation.landmarks_px is None:
        return None
    found = np.flatnonzero(animation.frame_indices == timeline_frame - frame_offset)
    if not len(found):
        return None
    mu = animation.landmarks_px[found[0], view]
    sigma = animation.landmarks_sigma_px[found[0], view]
    seen = np.all(np.isfinite(mu), axis=1) & np.isfinite(sigma)
    return mu[seen], sigma[seen]


def image_to_preview(points_px: np.ndarray, image_size_px, render_size_px) -> np.ndarray:
    """Image pixels -> preview view coordinates (render pixels, origin at the centre, y up)."""
    width, height = image_size_px
    scale = min(render_size_px[0] / width, render_size_px[1] / height)  # "Scale to Fit"
    x = (points_px[:, 0] - width / 2) * scale
    y = (height / 2 - points_px[:, 1]) * scale
    return np.stack([x, y], axis=1)


def _draw() -> None:
    context = bpy.context
    space = context.space_data
    if space is None or space.view_type not in ("PREVIEW", "SEQUENCER_PREVIEW") or context.region.type != "PREVIEW":
        return
    animation = _state["animation"]
    landmarks = frame_landmarks(animation, context.scene.frame_current, _state["frame_offset"], _state["view"])
    if landmarks is None or not len(landmarks[0]):
        return
    import gpu
    from gpu_extras.batch import batch_for_shader
    render = context.scene.render
    image_size = animation.image_size_px[_state["view"]]
    # The preview's view space is in full-resolution render pixels, whatever the percentage.
    view = image_to_preview(landmarks[0], image_size, (render.resolution_x, render.resolution_y))
    view2d = context.region.view2d
    region_xy = [view2d.view_to_region(float(x), float(y), clip=False) for x, y in view]
    shader = compat.builtin_shader("FLAT_COLOR")
    batch = batch_for_shader(shader, "POINTS", {"pos": region_xy, "color": sigma_colours(landmarks[1], image_size[0]).tolist()})
    gpu.state.point_size_set(POINT_SIZE_PX)
    shader.bind()
    batch.draw(shader)


def show(animation, frame_offset: int, view: int = 0, folder: str | None = None) -> None:
    """Draw these landmarks from now on (replacing earlier ones); ``folder``: their job's."""
    _state.update(animation=animation, frame_offset=int(frame_offset), view=int(view), folder=folder)
    if _state["handle"] is None:
        _state["handle"] = bpy.types.SpaceSequenceEditor.draw_handler_add(_draw, (), "PREVIEW", "POST_PIXEL")


def hide() -> None:
    if _state["handle"] is not None:
        bpy.types.SpaceSequenceEditor.draw_handler_remove(_state["handle"], "PREVIEW")
    _state.update(handle=None)


@bpy.app.handlers.persistent
def after_load(_file=None) -> None:
    """A reopened .blend draws its active take's landmarks without a toggle."""
    _state.update(animation=None, folder=None)
    if bpy.context.scene is not None:
        refresh(bpy.context)


def load(folder) -> None:
    """Show the landmarks of a finished single-view video job over the Sequencer preview (none for
    other jobs; a warning in the log when the folder cannot be read)."""
    try:
        job_file = jobs.read_job_file(folder)
        if jobs.clip_path(job_file) is None:  # a test shot or multi-view: no strip they belong on
            hide()
            _state.update(animation=None, folder=str(folder))
            return
        result = results.read_result(Path(folder) / jobs.RESULT_FOLDER, verify_files=False)
    except (jobs.JobError, results.ResultError) as exc:
        SESSION.report("WARNING", f"no landmarks to show: {exc}")
        return
    info = job_file["blender"]
    show(result.animation, int(info.get("frame_offset", 0)), folder=str(folder))


def shown_job(settings) -> str:
    """The job whose landmarks belong on screen: the active take's, else the latest job's."""
    takes = settings.takes
    if len(takes) and 0 <= settings.active_take < len(takes):
        return takes[settings.active_take].job_folder
    return settings.last_job


def refresh(context) -> None:
    """Follow the scene's "Show landmarks" switch and its active take (after a switch, or after
    the .blend was opened), loading that take's landmarks when needed."""
    settings = context.scene.facecap
    folder = shown_job(settings)
    if not settings.show_landmarks:
        hide()
    elif folder and _state["folder"] != folder:
        load(folder)
    elif _state["animation"] is not None:
        show(_state["animation"], _state["frame_offset"], _state["view"], _state["folder"])
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()
