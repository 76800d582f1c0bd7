"""Per-scene settings of the panel (``scene.facecap``)."""
import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import importer, overlay, takes
from .state import SESSION


def _is_camera(self, obj) -> bool:
    return obj.type == "CAMERA"


def _is_mesh(self, obj) -> bool:
    return obj.type == "MESH"


def _is_facecap_rig(self, obj) -> bool:
    return obj.type == "ARMATURE" and obj.get(importer.RIG_KEY) is not None


def _overlay_changed(self, context) -> None:
    overlay.refresh(context)


def _take_switched(self, context) -> None:
    if 0 <= self.active_take < len(self.takes):
        try:
            takes.switch(context.scene, self.takes[self.active_take])
        except takes.TakeError as exc:
            SESSION.report("ERROR", str(exc))
    overlay.refresh(context)


class FacecapTake(bpy.types.PropertyGroup):
    """One imported take: its job folder, rig, camera, actions and frames."""

    job_folder: StringProperty(name="Job folder", subtype="DIR_PATH")
    rig: PointerProperty(name="Rig", type=bpy.types.Object)
    camera: PointerProperty(name="Camera", type=bpy.types.Object)
    shape_action: StringProperty(name="Shape-key action")
    rig_action: StringProperty(name="Bone action")
    frame_start: IntProperty(name="Start")
    frame_end: IntProperty(name="End")


class FacecapView(bpy.types.PropertyGroup):
    """One view of a shot: a movie strip and, for multi-view, the camera that saw it."""

    strip: StringProperty(name="Strip", description="Movie strip in the Sequencer")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                            description="Blender camera of this view (multi-view calibration)")


class FacecapSettings(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Source", default="STRIPS",
        items=[("STRIPS", "Movie strips", "Fit the selected movie strip(s) of the Sequencer"),
               ("SYNTHETIC", "Test shot", "Fit a generated talking head: try the rig without footage")])
    views: CollectionProperty(type=FacecapView)
    active_view: IntProperty(default=0)
    use_strip_range: BoolProperty(name="Whole strip", default=True,
                                  description="Fit every frame of the strip; off: only the frame range below")
    frame_start: IntProperty(name="Start", default=1, min=0, description="First timeline frame to fit")
    frame_end: IntProperty(name="End", default=250, min=0, description="Last timeline frame to fit")
    quality: EnumProperty(
        name="Quality", default="offline",
        items=[("offline", "Offline", "All frames at once: best quality"),
               ("realtime", "Real-time", "Frame by frame, identity from the first frames: fast")])
    # 0: unknown; otherwise the backend protocol's PUPIL_DISTANCE_MM range (a test keeps them equal)
    pupil_distance_mm: FloatProperty(
        name="Pupil distance (mm)", default=0.0, min=0.0, max=90.0, soft_min=0.0, precision=1,
        description="The actor's pupillary distance, if known (an optician's PD, 40-90 mm): the head's true "
                    "size from one camera. 0: unknown, the average head's size")
    # max: the backend protocol's MAX_SYNTHETIC_FRAMES (a test keeps them equal)
    synthetic_frames: IntProperty(name="Frames", default=50, min=2, max=1000)
    synthetic_seed: IntProperty(name="Seed", default=1, min=0)
    take: StringProperty(name="Take", description="Name of the take (action); empty: from the strip or 'take'")
    auto_import: BoolProperty(name="Import when done", default=True)
    jobs_folder: StringProperty(name="Jobs folder", subtype="DIR_PATH", options={"HIDDEN"},
                                description="The jobs folder of this scene's first fit (kept when the .blend "
                                            "is saved later)")
    last_job: StringProperty(name="Last job", subtype="DIR_PATH", description="Folder of the latest fit job")
    retarget_target: PointerProperty(name="Target", type=bpy.types.Object, poll=_is_mesh,
                                     description="Mesh with ARKit-named shape keys to receive the animation")
    fbx_preset: EnumProperty(name="Preset", default="UNITY",
                             items=[("UNITY", "Unity", "Unity's axes and scale"),
                                    ("UNREAL", "Unreal", "Unreal Engine's axes and scale")])
    takes: CollectionProperty(type=FacecapTake)
    active_take: IntProperty(name="Take", default=0, update=_take_switched,
                             description="The take shown: its keys on its rig, its camera, its frames")
    reuse_rig: PointerProperty(name="Reuse rig", type=bpy.types.Object, poll=_is_facecap_rig,
                               description="Key the next fit on this rig (same actor); empty: a new actor "
                                           "gets a new rig")
    show_landmarks: BoolProperty(name="Show landmarks", default=True, update=_overlay_changed,
                                 description="Draw the fitted landmarks over the Sequencer preview "
                                             "(green: confident, red: uncertain)")


classes = (FacecapView, FacecapTake, FacecapSettings)


def register() -> None:
    bpy.types.Scene.facecap = PointerProperty(type=FacecapSettings)


def unregister() -> None:
    del bpy.types.Scene.facecap
