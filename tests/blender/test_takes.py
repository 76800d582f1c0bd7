"""A take ready to judge and takes that are kept (issue 16): the fitted camera is the scene camera
with the footage behind it, render size/rate/range follow the clip and the take, objects sit in a
collection named after the take; one rig per identity, every fit a new action, a take list to
switch and delete, the overlay following the active take and coming back after reopening."""
import json

import bpy
import numpy as np
import pytest

import facecap_helpers as h
from test_jobs import add_movie_strip


def actor_result(tmp_path, name, stretch=1.0, frames=6, offset=1, job=None):
    """A result whose identity is the test head scaled by ``stretch`` (another actor for another value)."""
    rig, animation = h.synthetic_result_arrays(frames=frames, channels=4, grid=6)
    rig["vertices"] = (rig["vertices"] * stretch).astype(np.float32)
    folder = h.write_result_folder(tmp_path / name, rig, animation, {"take": name, "frame_offset": offset})
    manifest = json.loads((folder / "result" / "result.json").read_text())
    manifest["job"] = job or name
    (folder / "result" / "result.json").write_text(json.dumps(manifest))
    return folder


def test_a_video_take_is_ready_to_judge(addon, sample_clip):
    from facecap import compat, operators, scene_setup
    scene = bpy.context.scene
    strip = add_movie_strip(sample_clip, frame_start=101)
    width, height = strip.elements[0].orig_width, strip.elements[0].orig_height
    scene.frame_start, scene.frame_end = 1, 250
    job = h.run_until_ended(operators.start_fit(bpy.context))
    assert job.status == "done" and job.imported, operators.SESSION.log
    take = scene.facecap.takes[0]
    camera = take.camera
    assert scene.camera == camera
    background = camera.data.background_images[0]
    assert camera.data.show_background_images and background.source == "MOVIE_CLIP"
    assert bpy.path.abspath(background.clip.filepath) == str(sample_clip)
    assert background.clip.frame_start == 101 and not background.use_camera_clip  # in step with the strip
    assert (scene.render.resolution_x, scene.render.resolution_y) == (width, height)
    assert scene.render.resolution_percentage == 100 and scene.render.pixel_aspect_x == 1
    fps = float(np.load(job.result_dir / "animation.npz")["fps"])
    assert scene.render.fps / scene.render.fps_base == pytest.approx(fps)
    assert (scene.frame_start, scene.frame_end) == (101, 124)  # the whole 24-frame take, not 1-250
    assert (take.frame_start, take.frame_end) == (101, 124)
    collection = bpy.data.collections["actor"]
    assert {o.name for o in collection.objects} == {"actor Rig", "actor Head", "actor Camera"}
    assert collection.name in scene.collection.children
    # The strip still fills the preview at the new render size (it was fitted to 1920x1080).
    assert strip.transform.scale_x == pytest.approx(scene_setup.strip_fit_scale(strip, (width, height)))
    assert compat.find_strip(scene, "actor") is not None


def test_two_actors_get_two_rigs_and_both_takes_play(addon, tmp_path):
    from facecap import compat, operators
    scene = bpy.context.scene
    first = operators.import_job(bpy.context, actor_result(tmp_path, "anna", 1.0, frames=6, offset=1))
    second = operators.import_job(bpy.context, actor_result(tmp_path, "ben", 1.2, frames=9, offset=301))
    assert second.created and second.armature != first.armature
    assert second.notes == []  # nobody edited anything: no warning
    anna_vertices = np.array([v.co[:] for v in first.mesh.data.vertices])
    assert np.allclose(anna_vertices, h.synthetic_result_arrays(channels=4, grid=6)[0]["vertices"], atol=1e-6)
    assert first.mesh.data.shape_keys.animation_data.action.name.startswith("anna")  # still keyed
    assert [t.name for t in scene.facecap.takes] == ["anna", "ben"]
    assert (scene.frame_start, scene.frame_end) == (301, 309) and scene.camera == second.camera
    scene.facecap.active_take = 0  # the take list's click
    assert (scene.frame_start, scene.frame_end) == (1, 6) and scene.camera == first.camera
    key = first.mesh.data.shape_keys
    assert compat.action_fcurves(key.animation_data.action, key)


def test_each_fit_makes_a_new_action_and_keeps_the_earlier_one(addon, tmp_path):
    from facecap import operators
    first = operators.import_job(bpy.context, actor_result(tmp_path, "take", 1.0))
    folder = actor_result(tmp_path / "again", "take", 1.0, job="take-2")  # the same actor fitted again
    second = operators.import_job(bpy.context, folder)
    assert not second.created and second.armature == first.armature  # same identity, same rig
    assert set(first.actions).isdisjoint(second.actions)
    assert all(a.name in bpy.data.actions and a.use_fake_user for a in first.actions)
    assert second.notes == []
    assert len(bpy.context.scene.facecap.takes) == 2


def test_a_new_actor_can_reuse_a_rig_without_changing_its_head(addon, tmp_path):
    from facecap import operators
    first = operators.import_job(bpy.context, actor_result(tmp_path, "anna", 1.0))
    before = np.array([v.co[:] for v in first.mesh.data.vertices])
    folder = actor_result(tmp_path, "ben", 1.3)
    job = json.loads((folder / "job.json").read_text())
    job["blender"]["reuse_rig"] = first.armature.name
    (folder / "job.json").write_text(json.dumps(job))
    objects = len(bpy.data.objects)
    second = operators.import_job(bpy.context, folder)
    assert second.armature == first.armature and not second.created
    assert len(bpy.data.objects) == objects + 1  # only ben's camera
    assert np.array_equal(np.array([v.co[:] for v in first.mesh.data.vertices]), before)


def test_deleting_a_take_removes_its_actions_and_keeps_the_others(addon, tmp_path):
    from facecap import operators, takes
    first = operators.import_job(bpy.context, actor_result(tmp_path, "anna", 1.0))
    second = operators.import_job(bpy.context, actor_result(tmp_path, "ben", 1.2))
    second_actions = [a.name for a in second.actions]
    assert takes.delete(bpy.context.scene, 1) == "ben"
    assert not any(name in bpy.data.actions for name in second_actions)
    assert "ben Rig" not in bpy.data.objects  # no other take used ben's rig
    assert all(a.name in bpy.data.actions for a in first.actions)
    assert [t.name for t in bpy.context.scene.facecap.takes] == ["anna"]


def as_video_job(folder, clip):
    """The job, as if it had fitted ``clip`` (what the overlay draws over)."""
    job = json.loads((folder / "job.json").read_text())
    job["request"]["source"] = {"kind": "video", "paths": [str(clip)], "frame_start": 0, "frame_end": 9}
    (folder / "job.json").write_text(json.dumps(job))
    return folder


def test_the_overlay_is_on_and_follows_the_active_take_after_reopening(addon, fitted_job, sample_clip, tmp_path):
    import shutil
    from facecap import operators, overlay
    assert bpy.context.scene.facecap.show_landmarks  # on by default
    video_job = as_video_job(shutil.copytree(fitted_job, tmp_path / "video_job"), sample_clip)
    operators.import_job(bpy.context, video_job)
    path = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    overlay.hide()
    overlay._state.update(animation=None, folder=None)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    assert overlay._state["handle"] is not None and overlay._state["folder"] == str(video_job)
    assert overlay._state["animation"] is not None


def test_a_test_shot_draws_no_landmarks_over_the_footage(addon, fitted_job, sample_clip, tmp_path):
    import shutil
    from facecap import operators, overlay
    operators.import_job(bpy.context, as_video_job(shutil.copytree(fitted_job, tmp_path / "video"), sample_clip))
    assert overlay._state["animation"] is not None
    operators.import_job(bpy.context, fitted_job)  # a synthetic shot has no footage to align with
    assert overlay._state["animation"] is None and overlay._state["handle"] is None
    bpy.context.scene.facecap.active_take = 0  # back to the video take: its landmarks again
    assert overlay._state["animation"] is not None


def test_export_from_the_take_list_writes_the_active_take_next_to_the_blend(addon, tmp_path):
    from facecap import operators
    operators.import_job(bpy.context, actor_result(tmp_path, "anna", 1.0))
    operators.import_job(bpy.context, actor_result(tmp_path, "ben", 1.2))
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    bpy.context.view_layer.objects.active = None
    bpy.context.scene.facecap.active_take = 0
    assert operators.default_fbx_path(bpy.context) == tmp_path / "anna.fbx"
    path = operators.export_rig(bpy.context, operators.default_fbx_path(bpy.context), "UNITY")
    assert path == tmp_path / "anna.fbx" and path.stat().st_size > 10_000
