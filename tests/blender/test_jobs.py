"""Fit jobs through the add-on's plain functions against a real backend process: a movie
strip fitted and imported where the strip sits, cancel and crash mid-job, re-import after a
restart, and bad inputs (each one clear message, the scene left as it was)."""
import os
import stat
import subprocess
import sys
import time

import bpy
import numpy as np
import pytest

import facecap_helpers as h


def add_movie_strip(path, frame_start=50, name="actor"):
    from facecap import compat
    scene = bpy.context.scene
    strip = compat.top_strips(scene).new_movie(name, str(path), channel=1, frame_start=frame_start)
    scene.sequence_editor.active_strip = strip
    return strip


def test_fit_a_movie_strip_imports_the_take_where_the_strip_is(addon, sample_clip):
    from facecap import compat, operators
    add_movie_strip(sample_clip, frame_start=50)
    settings = bpy.context.scene.facecap
    settings.use_strip_range, settings.frame_start, settings.frame_end = False, 55, 64
    started = time.perf_counter()
    job = h.run_until_ended(operators.start_fit(bpy.context))
    print(f"video fit of 10 frames through the add-on: {time.perf_counter() - started:.1f} s")
    assert job.status == "done", job.message
    assert job.request["source"] == {"kind": "video", "paths": [str(sample_clip)], "frame_start": 5, "frame_end": 14}
    assert job.imported, operators.SESSION.log
    mesh = bpy.data.objects["actor Head"]  # objects are named after the take that made the rig
    key = mesh.data.shape_keys
    action = key.animation_data.action
    # The take is named after the strip; before slotted actions (4.4) each data-block has its own.
    assert action.name == ("actor" if compat.SLOTTED_ACTIONS else "actor shapes")
    jaw = [fc for fc in compat.action_fcurves(action, key) if fc.data_path == 'key_blocks["jawOpen"].value'][0]
    assert np.array_equal(h.curve_values(jaw)[:, 0], np.arange(55, 65))  # source frame k at strip start + k


def test_a_second_fit_while_one_runs_is_refused(addon):
    from facecap import jobs, operators
    h.synthetic_settings(frames=30)
    job = operators.start_fit(bpy.context)
    with pytest.raises(jobs.JobError, match="already running"):
        operators.start_fit(bpy.context)
    operators.cancel_fit()
    h.run_until_ended(job)


def test_cancel_mid_job_stops_it_and_leaves_nothing(addon):
    from facecap import jobs, operators
    before = h.scene_snapshot()
    h.synthetic_settings(frames=40)
    job = operators.start_fit(bpy.context)
    h.run_until(lambda: job.stage.startswith("fitting"), job)
    asked = time.monotonic()
    operators.cancel_fit()
    h.run_until_ended(job)
    waited = time.monotonic() - asked
    print(f"cancel took {waited:.1f} s")
    assert job.status == "cancelled"
    assert waited < jobs.CANCEL_GRACE_S + 2
    assert not job.result_dir.exists()
    assert h.scene_snapshot() == before


def test_a_backend_crash_mid_job_is_reported_and_keeps_what_was_finished(addon, fitted_job):
    from facecap import operators
    operators.import_job(bpy.context, fitted_job)
    before = h.scene_snapshot()
    h.synthetic_settings(frames=40, take="doomed")
    job = operators.start_fit(bpy.context)
    h.run_until(lambda: job.stage.startswith("fitting"), job)
    operators.SESSION.backend.process.kill()  # what a segfault or the OOM killer does
    h.run_until_ended(job)
    assert job.status == "failed"
    assert "the backend stopped (exit status -9)" in job.message
    assert any("doomed" in message for _, message in operators.SESSION.log)
    assert h.scene_snapshot() == before
    # The next fit starts a new backend.
    h.synthetic_settings(frames=4, take="again")
    assert h.run_until_ended(operators.start_fit(bpy.context)).status == "done"


def test_a_finished_job_is_reimported_after_blender_restarts(addon, fitted_job, backend_python, jobs_root):
    h.fresh_addon(backend_python, jobs_root)  # a new session: nothing in memory about the job
    from facecap import jobs, operators
    assert fitted_job in jobs.finished_job_folders(jobs_root)
    report = operators.import_job(bpy.context, fitted_job)
    assert report.created and report.frame_start == 101


# -- bad inputs: one clear message each, nothing changed ------------------------------------
def fit_error(match, run_job=False):
    """Start a fit expecting a refusal (or, with run_job, a failed job) matching ``match``."""
    from facecap import operators
    before = h.scene_snapshot()
    if run_job:
        job = h.run_until_ended(operators.start_fit(bpy.context))
        assert job.status == "failed"
        message = job.message
    else:
        with pytest.raises(operators.ERRORS) as error:
            operators.start_fit(bpy.context)
        message = str(error.value)
    print(message)
    assert __import__("re").search(match, message), message
    assert h.scene_snapshot() == before
    assert operators.SESSION.active_job() is None


def test_no_strip_selected(addon):
    fit_error("select a movie strip")


def test_a_strip_that_is_not_a_movie(addon):
    from facecap import compat
    strip = compat.top_strips(bpy.context.scene).new_effect("red", "COLOR", channel=1, frame_start=1, length=10)
    bpy.context.scene.sequence_editor.active_strip = strip
    fit_error("strip 'red' is a color strip, not a movie")


def test_a_missing_video_file(addon, sample_clip):
    add_movie_strip(sample_clip).filepath = "//no_such_video.mp4"
    fit_error("video file of strip 'actor' is missing")


def test_multi_view_without_cameras(addon, sample_clip):
    add_movie_strip(sample_clip, name="front").select = True
    add_movie_strip(sample_clip, name="side").select = True
    assert bpy.ops.facecap.views_from_selection() == {"FINISHED"}
    fit_error(r"view 1 \(strip 'front'\) needs a camera object")


def test_no_backend_environment(addon):
    h.synthetic_settings()
    h.preferences().backend_python = "/nonexistent/venv/bin/python"
    fit_error("backend Python set in the preferences does not exist")


def test_a_broken_backend_environment(addon, tmp_path):
    venv = tmp_path / "empty-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    h.synthetic_settings()
    h.preferences().backend_python = str(venv)
    fit_error(r"the backend stopped \(exit status 1\): ModuleNotFoundError: No module named 'numpy' before it "
              r"answered: the backend environment may be incomplete", run_job=True)


def test_a_backend_that_answers_garbage(addon, tmp_path):
    fake = tmp_path / "garbage-backend"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault? no: just text'\nsleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    h.synthetic_settings()
    h.preferences().backend_python = str(fake)
    fit_error(r"the backend sent an invalid message: line is not JSON", run_job=True)


@pytest.mark.parametrize("name, content, match, run_job", [
    ("model.txt", "x", r"model\.txt is not a FLAME model: expected a \.pkl file", False),
    ("missing.pkl", None, "the FLAME file does not exist", False),
    ("generic_model.pkl", "not a pickle", "expected a FLAME model pickle", True),
])
def test_a_flame_path_that_is_not_flame(addon, tmp_path, name, content, match, run_job):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    h.synthetic_settings()
    prefs = h.preferences()
    prefs.head_model, prefs.flame_path = "FLAME", str(path)
    fit_error(match, run_job=run_job)


def test_the_backend_validates_requests_from_the_addon_side_too(addon):
    from facecap import backend
    proto = backend.protocol()
    with pytest.raises(proto.ProtocolError, match=rf"fit\.source\.frames: 1 is outside \[2, {proto.MAX_SYNTHETIC_FRAMES}\]"):
        proto.parse_request({"protocol": 1, "type": "fit", "job": "a", "head": "open", "mode": "offline",
                             "out": "/tmp/x", "source": {"kind": "synthetic", "frames": 1, "seed": 0}})
    import bpy
    frames = bpy.context.scene.facecap.bl_rna.properties["synthetic_frames"]
    assert (frames.hard_min, frames.hard_max) == (2, proto.MAX_SYNTHETIC_FRAMES)  # the panel offers what is accepted
    assert "numpy" not in vars(proto)  # the shared protocol module is standard library only
    assert os.path.samefile(proto.__file__, h.ROOT / "fitter_backend" / "server" / "protocol.py")


def test_the_actors_pupil_distance_goes_with_the_request_when_given(addon, sample_clip):
    from facecap import backend, operators
    add_movie_strip(sample_clip).select = True
    settings = bpy.context.scene.facecap
    fields, _ = operators.build_fit_request(bpy.context)
    assert "pupil_distance_mm" not in fields                  # 0: unknown, the backend's mean head
    settings.pupil_distance_mm = 63.5
    fields, _ = operators.build_fit_request(bpy.context)
    assert fields["pupil_distance_mm"] == pytest.approx(63.5)
    proto = backend.protocol()
    request = {"protocol": 1, "type": "fit", "job": "a", "out": "/tmp/x", **fields}
    assert proto.parse_request(request)["pupil_distance_mm"] == pytest.approx(63.5)
    settings.pupil_distance_mm = 20.0                         # a typo is one clear message, not a fit
    fit_error(r"invalid fit request: fit\.pupil_distance_mm: 20\.0 is outside \[40\.0, 90\.0\]")
    assert settings.bl_rna.properties["pupil_distance_mm"].hard_max == proto.PUPIL_DISTANCE_MM[1]


def test_a_multi_view_request_carries_each_views_camera(addon, sample_clip):
    from facecap import operators
    scene = bpy.context.scene
    cameras = []
    for name, x in (("front", 0.0), ("side", 0.5)):
        add_movie_strip(sample_clip, name=name).select = True
        camera = bpy.data.objects.new(f"cam_{name}", bpy.data.cameras.new(f"cam_{name}"))
        camera.location = (x, -0.6, 0.0)
        camera.data.lens, camera.data.sensor_width = 50.0, 36.0
        scene.collection.objects.link(camera)
        cameras.append(camera)
    bpy.ops.facecap.views_from_selection()
    for view, camera in zip(scene.facecap.views, cameras):
        view.camera = camera
    bpy.context.view_layer.update()
    fields, blender = operators.build_fit_request(bpy.context)
    source = fields["source"]
    assert source["paths"] == [str(sample_clip)] * 2
    assert np.allclose(source["cameras"][1]["matrix_world"], np.array(cameras[1].matrix_world))
    assert source["cameras"][0]["focal_px"] == pytest.approx(50.0 / 36.0 * 320)  # a 320 px wide clip
    assert blender["views"] == [{"strip": "front", "camera": "cam_front"}, {"strip": "side", "camera": "cam_side"}]
