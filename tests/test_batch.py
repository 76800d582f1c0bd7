"""``python -m fitter_backend batch`` on real Ray: a local runtime with two workers (as the
command starts it: two CPUs, a small object store, no dashboard), and a ``ray start --head``
cluster reached with ``--ray-address``. Runs in the batch environment (requirements/batch.txt);
skipped where Ray is not installed."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from fitter_backend.batch.shots import ShotListError, load_shots  # noqa: E402
from fitter_backend.head_models.open_head import load_open_head  # noqa: E402
from fitter_backend.sample_clip import render_sample_clip  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE_CLIP = FIXTURES / "video" / "grid_bbaf2n.mpg"
RESULT_FILES = {"landmarks.npz", "fit.npz", "fit.json", "report.json"}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}


def batch_command(shots: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fitter_backend", "batch", str(shots), "--out", str(out), "--workers", "2", *args]


def run_batch(shots: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(shots, out, *args), cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=_env())


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def leftovers(folder: Path) -> list[str]:
    """Hidden partial or old folders beside the results."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_shots(path: Path, shots: list[dict], defaults: dict | None = None) -> Path:
    path.write_text(json.dumps({"defaults": defaults or {"previews": False}, "shots": shots}))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Short synthetic performances (the project's sample actor), a long one, and a clip with no face."""
    folder = tmp_path_factory.mktemp("clips")
    model = load_open_head()
    noise = folder / "noise.mp4"
    writer = cv2.VideoWriter(str(noise), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (128, 128))
    for frame in np.random.default_rng(0).integers(0, 255, (4, 128, 128, 3), dtype=np.uint8):
        writer.write(frame)
    writer.release()
    return {"short": render_sample_clip(model, folder / "short.mp4", num_frames=8, size_px=160),
            "other": render_sample_clip(model, folder / "other.mp4", num_frames=8, size_px=192),
            "long": render_sample_clip(model, folder / "long.mp4", num_frames=60, size_px=192),
            "noise": noise}


# -- bad input: one message, exit 2, before any work ------------------------------------------------

def _malformed_toml(folder: Path, clips: dict) -> tuple[Path, str]:
    path = folder / "shots.toml"
    path.write_text('[[shots]]\nvideos = ["a.mp4"\n')
    return path, f"shot list {path} is not valid TOML"


def _malformed_json(folder: Path, clips: dict) -> tuple[Path, str]:
    path = folder / "shots.json"
    path.write_text('{"shots": [')
    return path, f"shot list {path} is not valid JSON"


def _missing_video(folder: Path, clips: dict) -> tuple[Path, str]:
    path = write_shots(folder / "shots.json", [{"name": "ok", "videos": [str(clips["short"])]},
                                               {"name": "gone", "videos": ["nowhere.mp4"]}])
    return path, f"shot 'gone': video {folder / 'nowhere.mp4'} does not exist"


def _unknown_option(folder: Path, clips: dict) -> tuple[Path, str]:
    path = write_shots(folder / "shots.json", [{"name": "take", "videos": [str(clips["short"])], "strid": 2}])
    return path, "shot 'take': unknown option 'strid'"


def _unknown_default(folder: Path, clips: dict) -> tuple[Path, str]:
    path = write_shots(folder / "shots.json", [{"videos": [str(clips["short"])]}], defaults={"preview": False})
    return path, "defaults: unknown option 'preview'"


@pytest.mark.parametrize("bad_input", [_malformed_toml, _malformed_json, _missing_video, _unknown_option,
                                       _unknown_default])
def test_bad_shot_list_is_one_clear_message_before_any_work(tmp_path, clips, bad_input):
    shots, expected = bad_input(tmp_path, clips)
    run = run_batch(shots, tmp_path / "out")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and run.stderr.startswith("error: ")
    assert expected in run.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.mark.parametrize("shot, message", [
    ({"videos": []}, "expected a list of video files"),
    ({"frames": [5, 2]}, "frames = [5, 2] must satisfy 0 <= start < stop"),
    ({"stride": True}, "stride = True is not a whole number"),
    ({"name": "../escape"}, "name '../escape' cannot be a result folder name"),
    ({"name": ".hidden"}, "name '.hidden' cannot be a result folder name"),
    ({"videos": ["short.mp4", "short.mp4"]}, "2 videos need a 'calibration' file"),
    ({"device": "tpu"}, "device = 'tpu' is not one of cpu, cuda, auto"),
    ({"head": "missing.pkl"}, "head"),
    ({"pupil_distance_mm": 200}, "pupil_distance_mm = 200 is not an actor's pupil distance (40 to 90 mm)"),
    ({"pupil_distance_mm": float("nan")}, "pupil_distance_mm = nan is not an actor's pupil distance"),
    ({"pupil_distance_mm": "63"}, "pupil_distance_mm = '63' is not a number"),
])
def test_shot_values_are_checked(tmp_path, clips, shot, message):
    (tmp_path / "short.mp4").write_bytes(clips["short"].read_bytes())
    path = write_shots(tmp_path / "shots.json", [{"name": "take", "videos": ["short.mp4"], **shot}])
    with pytest.raises(ShotListError) as error:
        load_shots(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_toml_and_json_lists_read_the_same(tmp_path, clips):
    (tmp_path / "short.mp4").write_bytes(clips["short"].read_bytes())
    (tmp_path / "shots.toml").write_text('[defaults]\nstride = 2\n\n[[shots]]\nname = "a"\n'
                                         'videos = ["short.mp4"]\nframes = [1, 7]\npupil_distance_mm = 63\n')
    write_shots(tmp_path / "shots.json", [{"name": "a", "videos": ["short.mp4"], "frames": [1, 7],
                                           "pupil_distance_mm": 63.0}], defaults={"stride": 2})
    from_toml, = load_shots(tmp_path / "shots.toml")
    from_json, = load_shots(tmp_path / "shots.json")
    assert from_toml == from_json
    assert from_toml.videos == ((tmp_path / "short.mp4").resolve(),) and from_toml.frame_range == (1, 7)
    assert from_toml.stride == 2 and from_toml.job(tmp_path / "out").out == tmp_path / "out" / "a"
    assert from_toml.job(tmp_path / "out").pupil_distance_mm == 63   # the actor's size reaches the fit


def test_the_key_follows_the_backends_code(tmp_path, clips, monkeypatch):
    from fitter_backend.batch import cache_key

    package = tmp_path / "package"
    (package / "fitting").mkdir(parents=True)
    (package / "fitting" / "solver.py").write_text("STEP = 1\n")
    (package / "notes.txt").write_text("not code")
    before = cache_key.folder_digest(package, ("*.py",))
    (package / "notes.txt").write_text("still not code")
    assert cache_key.folder_digest(package, ("*.py",)) == before          # only the sources count
    (package / "fitting" / "solver.py").write_text("STEP = 2\n")
    assert cache_key.folder_digest(package, ("*.py",)) != before          # an edited source does
    assert cache_key.folder_digest(tmp_path / "absent", ("*.py",)) == cache_key.folder_digest(tmp_path / "e", ())
    assert len(cache_key.backend_fingerprint()) == 64

    shot, = load_shots(write_shots(tmp_path / "shots.json", [{"name": "a", "videos": [str(clips["short"])]}]))
    key = cache_key.shot_key(shot, {})
    assert cache_key.shot_key(shot, {}) == key
    monkeypatch.setattr(cache_key, "backend_fingerprint", lambda: "an updated fitter")
    assert cache_key.shot_key(shot, {}) != key                              # an updated backend refits


# -- a batch on the local runtime ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def first_run(tmp_path_factory, clips):
    """Shots on two workers: synthetic ones (one with previews, as `fit` writes by default), a
    real fixture clip when the shared fixtures are there, and one with no face (fails)."""
    folder = tmp_path_factory.mktemp("batch")
    shots = [{"name": "short", "videos": [str(clips["short"])], "frames": [0, 6]},
             {"name": "same", "videos": [str(clips["short"])], "frames": [2, 8]},
             {"name": "with_previews", "videos": [str(clips["other"])], "previews": True},
             {"name": "noface", "videos": [str(clips["noise"])]}]
    if FIXTURE_CLIP.is_file():
        shots.append({"name": "fixture", "videos": [str(FIXTURE_CLIP)], "frames": [10, 18]})
    path = write_shots(folder / "shots.json", shots)
    out = folder / "out"
    return path, out, run_batch(path, out, "--progress", "json")


def test_each_shot_is_a_fit_result_or_its_reported_error(first_run, clips, tmp_path):
    shots, out, run = first_run
    assert run.returncode == 1, run.stderr  # one shot failed on purpose; the others finished
    records = json_lines(run.stdout)
    ended = {r["name"]: r for r in records if r["type"] == "shot"}
    expected_ok = {"short", "same", "with_previews"} | ({"fixture"} if FIXTURE_CLIP.is_file() else set())
    assert {name for name, r in ended.items() if r["status"] == "ok"} == expected_ok
    assert ended["noface"]["status"] == "failed" and "no face found" in ended["noface"]["error"]
    assert ended["short"]["frames"] == 6 and ended["short"]["median_residual"] < 1.0
    for name in expected_ok:
        assert RESULT_FILES <= {p.name for p in (out / name).iterdir()}
        assert json.loads((out / name / "report.json").read_text())["frames"] == ended[name]["frames"]
    assert not (out / "noface").exists() and leftovers(out) == []
    summary = records[-1]
    assert summary["type"] == "summary" and (summary["ok"], summary["failed"]) == (len(expected_ok), 1)
    # The same folder as `fit` writes for the same clip and options.
    fit_out = tmp_path / "fit"
    fit = subprocess.run([sys.executable, "-m", "fitter_backend", "fit", str(clips["other"]), "--out", str(fit_out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())
    assert fit.returncode == 0, fit.stderr
    listing = lambda folder: sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))  # noqa: E731
    assert listing(out / "with_previews") == listing(fit_out)
    with np.load(out / "with_previews" / "fit.npz") as batch_fit, np.load(fit_out / "fit.npz") as own_fit:
        assert np.allclose(batch_fit["expression"], own_fit["expression"], atol=1e-6)


def test_progress_is_json_lines_naming_shot_and_worker(first_run):
    _, _, run = first_run
    records = json_lines(run.stdout)
    starts = [r for r in records if r["type"] == "start"]
    assert {r["shot"] for r in starts} >= {"short", "same", "with_previews", "noface"}
    assert len({r["worker_pid"] for r in starts}) == 2  # two workers shared the shots
    stages = {r["stage"] for r in records if r["type"] == "progress" and r["shot"] == "with_previews"}
    assert {"landmarks", "fit", "previews"} <= stages


def test_rerun_skips_finished_shots_and_redoes_changed_ones(first_run):
    shots, out, _ = first_run
    unchanged = {p: p.stat().st_mtime_ns for p in (out / "same").rglob("*")}
    # A changed option and a damaged result are fitted again; untouched finished shots are
    # skipped, the failed one is tried again.
    listed = json.loads(shots.read_text())
    listed["shots"][0]["frames"] = [0, 5]
    changed = shots.with_name("changed.json")
    changed.write_text(json.dumps(listed))
    (out / "with_previews" / "fit.json").unlink()
    rerun = run_batch(changed, out)  # terminal style: the summary table on stdout
    assert rerun.returncode == 1, rerun.stderr
    lines = rerun.stdout.splitlines()
    assert lines[0].split() == ["shot", "frames", "status", "time_s", "median_residual"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line and not line.startswith(" ")}
    assert rows["short"][:3] == ["short", "5", "ok"] and rows["with_previews"][2] == "ok"
    assert rows["same"][:3] == ["same", "6", "skipped"] and rows.get("fixture", ["", "", "skipped"])[2] == "skipped"
    assert rows["noface"][2] == "failed" and "noface: no face found" in rerun.stdout
    assert unchanged == {p: p.stat().st_mtime_ns for p in (out / "same").rglob("*")}
    assert json.loads((out / "short" / "report.json").read_text())["frames"] == 5
    assert (out / "with_previews" / "fit.json").is_file() and leftovers(out) == []


def test_a_folder_the_project_did_not_write_is_refused(tmp_path, clips):
    shots = write_shots(tmp_path / "shots.json", [{"name": "mine", "videos": [str(clips["short"])]}])
    (tmp_path / "out" / "mine").mkdir(parents=True)
    (tmp_path / "out" / "mine" / "notes.txt").write_text("an artist's file")
    run = run_batch(shots, tmp_path / "out")
    assert run.returncode == 2 and "is not a facecap result" in run.stderr
    assert (tmp_path / "out" / "mine" / "notes.txt").read_text() == "an artist's file"


# -- a worker killed mid-shot, Ctrl-C ----------------------------------------------------------------

def _stream_until(process: subprocess.Popen, act) -> list[dict]:
    """Read the JSON lines of a running batch; ``act(record)`` is called on each (once it returns
    True it is not called again)."""
    records, acted = [], False
    for line in process.stdout:
        record = json.loads(line)
        records.append(record)
        if not acted:
            acted = bool(act(record))
    process.wait(timeout=120)
    return records


def _in_stage(record: dict, shot: str, stage: str) -> bool:
    return record["type"] == "progress" and record["shot"] == shot and record["stage"] == stage


@pytest.mark.parametrize("retries", [1, 0])
def test_a_worker_killed_mid_shot_is_retried_or_reported_never_half_written(tmp_path, clips, retries):
    # Killed while writing previews: its partial result folder exists by then.
    shots = write_shots(tmp_path / "shots.json", [{"name": "long", "videos": [str(clips["long"])], "previews": True},
                                                  {"name": "short", "videos": [str(clips["short"])]}])
    out = tmp_path / "out"
    killed = []

    def kill_worker(record: dict) -> bool:
        if _in_stage(record, "long", "previews"):
            os.kill(record["worker_pid"], signal.SIGKILL)
            killed.append(record["worker_pid"])
            return True
        return False

    process = subprocess.Popen(batch_command(shots, out, "--progress", "json", "--retries", str(retries)), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    records = _stream_until(process, kill_worker)
    assert killed, "the long shot never reached its previews"
    ended = {r["name"]: r for r in records if r["type"] == "shot"}
    assert ended["short"]["status"] == "ok"  # the other shot is not disturbed
    starts = [r["worker_pid"] for r in records if r["type"] == "start" and r["shot"] == "long"]
    if retries:
        assert process.returncode == 0 and ended["long"]["status"] == "ok" and ended["long"]["attempts"] == 2
        assert starts[0] == killed[0] and starts[1] != killed[0]
        assert RESULT_FILES <= {p.name for p in (out / "long").iterdir()}
    else:
        assert process.returncode == 1 and ended["long"]["status"] == "failed"
        assert "worker lost" in ended["long"]["error"] and not (out / "long").exists()
    assert leftovers(out) == []


def test_ctrl_c_cancels_and_keeps_the_earlier_result(tmp_path, clips):
    out = tmp_path / "out"
    earlier = subprocess.run([sys.executable, "-m", "fitter_backend", "fit", str(clips["long"]), "--out",
                              str(out / "long"), "--stop", "4", "--no-previews"], cwd=REPO, capture_output=True,
                             text=True, timeout=300, env=_env())
    assert earlier.returncode == 0, earlier.stderr
    kept = {p.name: p.read_bytes() for p in (out / "long").iterdir()}
    shots = write_shots(tmp_path / "shots.json", [{"name": "long", "videos": [str(clips["long"])]}])
    process = subprocess.Popen(batch_command(shots, out, "--progress", "json"), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=_env())
    records = _stream_until(process, lambda r: _in_stage(r, "long", "fit") and process.send_signal(signal.SIGINT) is None)
    assert process.returncode == 130
    ended = {r["name"]: r for r in records if r["type"] == "shot"}
    assert ended["long"]["status"] == "cancelled" and records[-1]["cancelled"] == 1
    assert {p.name: p.read_bytes() for p in (out / "long").iterdir()} == kept and leftovers(out) == []


# -- an existing cluster -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_existing_cluster_is_used_with_ray_address(tmp_path, clips):
    """``ray start --head`` on loopback (stopped afterwards by its process group, which this test started)."""
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    # Its own temporary folder (short: Ray's socket paths have a length limit), removed afterwards.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-"))
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                             "--temp-dir", str(temp_dir),
                             "--object-store-memory", str(96 * 2**20)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=_env())
    try:
        deadline = time.monotonic() + 60
        while True:  # the head's control service accepts connections once it is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and head.poll() is None, "ray start --head did not come up"
                time.sleep(0.5)
        shots = write_shots(tmp_path / "shots.json", [{"name": "short", "videos": [str(clips["short"])]}])
        run = run_batch(shots, tmp_path / "out", "--ray-address", f"127.0.0.1:{port}", "--progress", "json")
        assert run.returncode == 0, run.stderr
        ended = [r for r in json_lines(run.stdout) if r["type"] == "shot"]
        assert [(r["name"], r["status"]) for r in ended] == [("short", "ok")]
        assert RESULT_FILES <= {p.name for p in (tmp_path / "out" / "short").iterdir()}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:  # Ray drains for up to 30 s: the test's own cluster need not
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
