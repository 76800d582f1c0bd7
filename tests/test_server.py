"""The backend process the add-on talks to: protocol validation, jobs (synthetic and video),
one at a time, cancel, errors as events, and the real process over stdin/stdout."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fitter_backend.export.result_files import camera_matrices_world
from fitter_backend.server import protocol
from fitter_backend.server.runner import calibration_file
from fitter_backend.server.server import Server

ROOT = Path(__file__).resolve().parents[1]


def fit(job="j1", out="/tmp/out", **overrides):
    message = {"protocol": 1, "type": "fit", "job": job, "head": "open", "mode": "offline", "out": str(out),
               "source": {"kind": "synthetic", "frames": 6, "seed": 1}}
    message.update(overrides)
    return message


# -- protocol -------------------------------------------------------------------------------
@pytest.mark.parametrize("message, error", [
    ({"protocol": 2, "type": "hello"}, "protocol: this side speaks version 1, got 2"),
    ({"type": "hello"}, "protocol: this side speaks version 1, got None"),
    ({"protocol": 1, "type": "dance"}, "type: unknown request type 'dance'"),
    ({"protocol": 1, "type": "hello", "extra": 1}, "hello.extra: unknown field"),
    ({"protocol": 1, "type": "cancel"}, "cancel.job: missing field"),
    ({"protocol": 1, "type": "cancel", "job": "../x"}, "cancel.job: '../x' is not a job id"),
    (fit(mode="fast"), "fit.mode: expected one of 'offline', 'realtime', got 'fast'"),
    (fit(head=3), "fit.head: expected a string, got int"),
    (fit(source={"kind": "synthetic", "frames": True, "seed": 0}), "fit.source.frames: expected an integer, got bool"),
    (fit(source={"kind": "webcam"}), "fit.source.kind: expected one of 'video', 'synthetic', got 'webcam'"),
    (fit(source={"kind": "video", "paths": [], "frame_start": 0, "frame_end": 9}),
     r"fit.source.paths: expected 1 to 64 items, got 0"),
    (fit(source={"kind": "video", "paths": ["a.mp4"], "frame_start": 5, "frame_end": 4}),
     "fit.source.frame_end: 4 is before frame_start 5"),
    (fit(source={"kind": "video", "paths": ["a.mp4", "b.mp4"], "frame_start": 0, "frame_end": 4,
                 "cameras": [{"matrix_world": None, "focal_px": None}]}), "fit.source.cameras: 1 cameras for 2 videos"),
    (fit(landmarks="sparse"), "fit.landmarks: expected one of 'whole_head', 'dense', 'bootstrap', got 'sparse'"),
    (fit(pupil_distance_mm=30), "fit.pupil_distance_mm: 30 is outside [40.0, 90.0]"),
    (fit(pupil_distance_mm="63"), "fit.pupil_distance_mm: expected a number, got str"),
    ([1, 2], "request message: expected a JSON object, got list"),
])
def test_bad_requests_name_the_field(message, error):
    with pytest.raises(protocol.ProtocolError) as raised:
        protocol.parse_request(message)
    assert str(raised.value).startswith(error), str(raised.value)


def test_events_are_validated_the_same_way():
    assert protocol.parse_event({"protocol": 1, "type": "progress", "job": "a", "stage": "x", "fraction": 0.5,
                                 "eta_s": None})["fraction"] == 0.5
    for message, error in [
        ({"protocol": 1, "type": "progress", "job": "a", "stage": "x", "fraction": 1.5, "eta_s": 1},
         "progress.fraction: 1.5 is outside [0.0, 1.0]"),
        ({"protocol": 1, "type": "done", "job": "a"}, "done.result_dir: missing field"),
        ({"protocol": 1, "type": "error", "message": ""}, "error.message: must not be empty"),
        ({"protocol": 1, "type": "fit"}, "type: unknown event type 'fit'"),
    ]:
        with pytest.raises(protocol.ProtocolError, match=error.replace("[", r"\[").replace(".", r"\.")):
            protocol.parse_event(message)


def test_lines_round_trip_and_garbage_is_named():
    message = protocol.request("fit", **{k: v for k, v in fit().items() if k not in ("protocol", "type")})
    line = protocol.encode(message)
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    assert protocol.parse_request(protocol.decode_line(line)) == message
    with pytest.raises(protocol.ProtocolError, match="line is not JSON .*'hello world'"):
        protocol.decode_line("hello world")
    with pytest.raises(protocol.ProtocolError, match="longer than the limit"):
        protocol.decode_line("[" * (protocol.MAX_LINE_BYTES + 1))


def test_the_protocol_module_is_standard_library_only():
    # The Blender add-on loads this file into Blender's Python.
    script = ("import importlib.util, sys\n"
              f"spec = importlib.util.spec_from_file_location('p', {str(Path(protocol.__file__))!r})\n"
              "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
              "print(sorted(n for n in ('numpy', 'fitter_backend') if n in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_the_protocol_accepts_the_pupil_distances_a_fit_accepts():
    from fitter_backend.fitting.problem import PUPIL_DISTANCE_MM
    assert protocol.PUPIL_DISTANCE_MM == PUPIL_DISTANCE_MM   # kept apart: the protocol imports nothing heavy


# -- the server in process --------------------------------------------------------------------
class Recorder:
    """A server whose events are collected (validated again on the way in)."""

    def __init__(self):
        self.events, self.lock = [], threading.Lock()
        self.server = Server(self._write)

    def _write(self, line):
        with self.lock:
            self.events.append(protocol.parse_event(protocol.decode_line(line)))

    def send(self, message):
        return self.server.handle_line(message if isinstance(message, str) else json.dumps(message))

    def wait(self, kind, job=None, timeout_s=120, where=lambda event: True):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = [e for e in self.events
                         if e["type"] == kind and (job is None or e.get("job") == job) and where(e)]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {kind} event for {job}: {self.events[-5:]}")

    def of(self, job):
        with self.lock:
            return [e for e in self.events if e.get("job") == job]


@pytest.fixture
def server():
    recorder = Recorder()
    yield recorder
    recorder.server.stop()


def test_a_synthetic_job_reports_progress_and_finishes_a_complete_folder(server, tmp_path):
    server.send({"protocol": 1, "type": "hello"})
    hello = server.wait("hello")
    assert "CPUExecutionProvider" in hello["providers"]
    server.send(fit("talk", tmp_path / "talk"))
    done = server.wait("done", "talk")
    assert done["result_dir"] == str(tmp_path / "talk")
    progress = [e for e in server.of("talk") if e["type"] == "progress"]
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.9
    assert {"loading head model", "fitting: identity", "writing results"} <= {e["stage"] for e in progress}
    assert any(e["eta_s"] is not None for e in progress)
    manifest = json.loads((tmp_path / "talk" / "result.json").read_text())
    assert manifest["job"] == "talk" and manifest["frames"] == 6 and manifest["head_model"] == "open_head"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk"]  # no temporary folder left


def test_one_job_at_a_time_and_cancel(server, tmp_path):
    server.send(fit("long", tmp_path / "long", source={"kind": "synthetic", "frames": 40, "seed": 2}))
    server.send(fit("second", tmp_path / "second"))
    refused = server.wait("error", "second")
    assert refused["message"] == "job 'long' is still running; cancel it or wait for it to finish"
    server.wait("progress", "long", where=lambda e: e["stage"].startswith("fitting"))
    server.send({"protocol": 1, "type": "cancel", "job": "long"})
    server.wait("cancelled", "long")
    assert list(tmp_path.iterdir()) == []  # neither the result nor its temporary folder
    server.send({"protocol": 1, "type": "cancel", "job": "long"})
    assert server.wait("error", "long")["message"] == "no running job 'long' to cancel"


@pytest.mark.parametrize("overrides, error", [
    ({"head": "/nonexistent/generic_model.pkl"}, "head model '/nonexistent/generic_model.pkl': no such file"),
    ({"source": {"kind": "video", "paths": ["/nonexistent/take.mp4"], "frame_start": 0, "frame_end": 9}},
     "video file not found: /nonexistent/take.mp4"),
    ({"out": "relative/folder"}, "result folder 'relative/folder' must be an absolute path"),
])
def test_job_errors_are_events_naming_the_problem(server, overrides, error):
    server.send(fit("bad", **overrides))
    assert server.wait("error", "bad")["message"].startswith(error)


def test_a_file_that_is_not_flame_is_refused(server, tmp_path):
    fake = tmp_path / "generic_model.pkl"
    fake.write_bytes(b"definitely not a pickle")
    server.send(fit("flame", tmp_path / "out", head=str(fake)))
    message = server.wait("error", "flame")["message"]
    assert "expected a FLAME model pickle" in message and str(fake) in message
    assert not (tmp_path / "out").exists()


def test_an_existing_result_is_never_overwritten(server, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier")
    server.send(fit("again", tmp_path / "out"))
    assert "already exists and is not empty" in server.wait("error", "again")["message"]
    assert (tmp_path / "out" / "keep.txt").read_text() == "earlier"


def test_bad_lines_get_error_events_and_the_server_keeps_serving(server):
    server.send("not json at all")
    server.send({"protocol": 1, "type": "cancel", "job": "x", "why": "because"})
    server.send({"protocol": 1, "type": "hello"})
    server.wait("hello")
    errors = [e for e in server.events if e["type"] == "error"]
    assert errors[0]["message"].startswith("bad request: line is not JSON")
    assert errors[1] == {"protocol": 1, "type": "error", "job": "x", "message": "bad request: cancel.why: unknown field"}


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory):
    from fitter_backend.head_models.open_head import load_open_head
    from fitter_backend.sample_clip import render_sample_clip
    return render_sample_clip(load_open_head(), tmp_path_factory.mktemp("clip") / "actor.mp4", num_frames=16,
                              size_px=320)


def test_a_video_job_fits_the_requested_frames(server, tmp_path, sample_clip):
    server.send(fit("video", tmp_path / "video", landmarks="bootstrap", pupil_distance_mm=63.0, source={
        "kind": "video", "paths": [str(sample_clip)], "frame_start": 3, "frame_end": 12}))
    server.wait("done", "video", timeout_s=300)
    folder = tmp_path / "video"
    manifest = json.loads((folder / "result.json").read_text())
    assert {"rig.npz", "animation.npz", "fit.npz", "landmarks.npz", "report.json"} <= set(manifest["files"])
    with np.load(folder / "animation.npz") as animation:
        assert animation["frame_indices"].tolist() == list(range(3, 13))
        assert animation["landmarks_px"].shape[:2] == (10, 1) and float(animation["fps"]) == pytest.approx(25.0)
    stages = {e["stage"].split(":")[0] for e in server.of("video") if e["type"] == "progress"}
    assert {"landmarks", "fit"} <= stages
    # The artist's pupil distance reached the fit: the head's eyeball centres are that far apart
    # (the mean head's are 57.8 mm).
    from fitter_backend.head_models.head_size import eye_distance_line
    from fitter_backend.head_models.open_head import load_open_head
    line = eye_distance_line(load_open_head())
    with np.load(folder / "fit.npz") as fitted:
        identity = fitted["identity"]
    assert 1000 * (line.size_m + line.gradient_m @ (identity - line.reference)) == pytest.approx(63.0, abs=1.0)


def test_a_dense_landmark_job_fits_with_the_shipped_network(server, tmp_path, sample_clip):
    server.send(fit("dense", tmp_path / "dense", landmarks="dense", source={
        "kind": "video", "paths": [str(sample_clip)], "frame_start": 0, "frame_end": 5}))
    server.wait("done", "dense", timeout_s=300)
    folder = tmp_path / "dense"
    with np.load(folder / "landmarks.npz") as track:
        assert track["mu_px"].shape == (6, 1, 320, 2) and np.isfinite(track["mu_px"]).all()
    assert json.loads((folder / "result.json").read_text())["landmarks"] == "dense"


def test_a_whole_head_job_fits_face_mesh_and_dense_head_points_together(server, tmp_path, sample_clip):
    server.send(fit("whole", tmp_path / "whole", landmarks="whole_head", source={
        "kind": "video", "paths": [str(sample_clip)], "frame_start": 0, "frame_end": 3}))
    server.wait("done", "whole", timeout_s=300)
    with np.load(tmp_path / "whole" / "landmarks.npz") as track:
        # MediaPipe's 468 face points and 2 iris centres, then the dense ears, neck and back of head (14 + 35 + 52)
        assert track["mu_px"].shape == (4, 1, 470 + 101, 2) and np.isfinite(track["mu_px"][:, :, :468]).all()
        assert str(track["landmark_set"]).startswith("mediapipe_468_iris+dense_320[")
    assert json.loads((tmp_path / "whole" / "result.json").read_text())["landmarks"] == "whole_head"


def test_blender_cameras_become_the_landmark_stages_calibration(tmp_path, sample_clip):
    rotation = np.array([[0.0, 0.0, 0.0], [0.0, 0.6, 0.1]])  # camera 0 is the world frame
    translation = np.array([[0.0, 0.0, 0.0], [0.3, -0.02, 0.1]])
    matrices = camera_matrices_world(rotation, translation)
    # The artist's rig may sit anywhere: move both cameras by the same transform.
    offset = np.eye(4)
    offset[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    offset[:3, 3] = [2.0, 1.0, 0.5]
    cameras = [{"matrix_world": (offset @ m).tolist(), "focal_px": f} for m, f in zip(matrices, (400.0, None))]
    path = calibration_file(tmp_path, [sample_clip, sample_clip], cameras)
    entries = json.loads(path.read_text())["cameras"]
    from fitter_backend.head_models.lbs import rodrigues
    assert np.allclose(entries[0]["R"], np.eye(3)) and np.allclose(entries[0]["t_m"], 0)
    assert np.allclose(entries[1]["R"], rodrigues(rotation[1]), atol=1e-9)
    assert np.allclose(entries[1]["t_m"], translation[1], atol=1e-9)
    assert [e["image_size_px"] for e in entries] == [[320, 320]] * 2 and entries[1]["focal_px"] is None


# -- the real process ----------------------------------------------------------------------------
def test_the_process_speaks_only_protocol_on_stdout_and_exits_cleanly():
    lines = "\n".join(json.dumps(m) for m in ({"protocol": 1, "type": "hello"}, {"protocol": 1, "type": "shutdown"}))
    out = subprocess.run([sys.executable, "-m", "fitter_backend.server"], input=lines + "\n garbage\n",
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    events = [protocol.parse_event(protocol.decode_line(line)) for line in out.stdout.splitlines()]
    assert [e["type"] for e in events] == ["hello"]  # nothing after shutdown is read
    eof = subprocess.run([sys.executable, "-m", "fitter_backend.server"], input="", capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert eof.returncode == 0 and eof.stdout == ""  # stdin closed: the add-on is gone
