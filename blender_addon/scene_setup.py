"""A take ready to judge: the fitted camera is the scene camera with the footage behind it, the
render size and rate are the clip's, the timeline covers the take, and the take's objects sit in
a collection of their own. Plain functions on bpy data (no UI); the importer calls them.
"""
from pathlib import Path

import bpy

from . import compat

CLIP_KEY = "facecap_clip"   # on camera data: the background clip the add-on set


def take_collection(scene, name: str):
    """A new collection named after the take, linked under the scene's collection."""
    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    return collection


def fps_fraction(fps: float) -> tuple[int, float]:
    """Blender's (fps, fps_base) for a rate, fps / fps_base = rate: 25 -> (25, 1.0), 29.97 -> (30, 1.001)."""
    rounded = max(1, int(round(fps)))
    return rounded, rounded / fps


def strip_fit_scale(strip, render_size) -> float | None:
    """The scale that makes a movie strip fill the render frame ("Scale to Fit"), None if unknown."""
    element = strip.elements[0] if len(strip.elements) else None
    if element is None or not element.orig_width or not element.orig_height:
        return None
    return min(render_size[0] / element.orig_width, render_size[1] / element.orig_height)


def fit_render_to_clip(scene, image_size_px, fps: float) -> None:
    """Render size (100 %, square pixels) and frame rate of the clip. Movie strips whose transform
    was the Sequencer's "Scale to Fit" for the old size are refitted to the new one, so the
    preview still shows them whole; strips the artist moved or scaled are left as they are."""
    render = scene.render
    old_size = (render.resolution_x * render.resolution_percentage / 100,
                render.resolution_y * render.resolution_percentage / 100)
    fitted = []
    for strip in compat.all_strips(scene):
        if strip.type != "MOVIE":
            continue
        transform, old_scale = strip.transform, strip_fit_scale(strip, old_size)
        if (old_scale is not None and transform.offset_x == 0 and transform.offset_y == 0
                and abs(transform.scale_x - old_scale) < 1e-4 and abs(transform.scale_y - old_scale) < 1e-4):
            fitted.append(strip)
    render.resolution_x, render.resolution_y = (int(round(v)) for v in image_size_px)
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.fps, render.fps_base = fps_fraction(fps)
    for strip in fitted:
        scale = strip_fit_scale(strip, (render.resolution_x, render.resolution_y))
        strip.transform.scale_x = strip.transform.scale_y = scale


def frame_take(scene, frame_start: int, frame_end: int) -> None:
    """The scene's range is the take's; the current frame moves into it when outside."""
    scene.frame_start, scene.frame_end = int(frame_start), int(frame_end)
    if not frame_start <= scene.frame_current <= frame_end:
        scene.frame_set(int(frame_start))


def show_clip_behind(camera_obj, clip_path: Path, timeline_frame_of_clip_start: int) -> None:
    """The footage as the camera's background, its frame k on timeline frame start + k (as the
    strip shows it). The clip is loaded once per file (reused by later takes)."""
    path = str(clip_path)
    clip = next((c for c in bpy.data.movieclips if bpy.path.abspath(c.filepath) == path), None)
    if clip is None:
        clip = bpy.data.movieclips.load(path)
    clip.frame_start = int(timeline_frame_of_clip_start)
    data = camera_obj.data
    background = next((b for b in data.background_images if b.source == "MOVIE_CLIP" and b.clip == clip), None)
    if background is None:
        background = data.background_images.new()
        background.source = "MOVIE_CLIP"
        background.clip = clip
    background.use_camera_clip = False   # this clip, not the scene's active one
    background.frame_method = "FIT"
    background.alpha = 1.0
    background.display_depth = "BACK"
    background.show_background_image = True
    data.show_background_images = True
    data[CLIP_KEY] = path
