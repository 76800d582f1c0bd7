"""The end-to-end job (``python -m fitter_backend fit``): a result folder a person and a tool
can use, a progress stream a tool can parse, one clear message for each bad input, and no
half-written or clobbered folders when a job fails or is cancelled.

Clips are rendered here from the open head, so nothing needs the shared fixtures."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fitter_backend.errors import FacecapError
from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.synthetic import look_at_rotation
from fitter_backend.head_models.lbs import rodrigues
from fitter_backend.head_models.open_head import load_open_head
from fitter_backend.landmarks import DEFAULT_LANDMARKS, LandmarkTrack, NoFaceError, load_landmarker
from fitter_backend.pipeline import FitJob, JobCancelled, fit_videos
from fitter_backend.render.head_png import render_head
from fitter_backend.sample_clip import render_sample_clip, render_views, sample_performance

REPO = Path(__file__).resolve().parents[1]
CLIP_FRAMES, CLIP_SIZE = 10, 256
RESULT_FILES = ("landmarks.npz", "fit.npz", "fit.json", "report.json", "previews/overlay.mp4")


def render_frames(count: int, size: int = CLIP_SIZE, yaw_offset_deg: float = 0.0) -> list[np.ndarray]:
    """BGR clay renders of the open head turning a little and opening its jaw."""
    model = load_open_head()
    return [render_head(model, expression={"jawOpen": 0.4 * abs(np.sin(t / 3))}, size=size,
                        yaw_deg=-12.0 + 3.0 * t + yaw_offset_deg, pitch_deg=3.0) for t in range(count)]


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The project's sample performance (talking, blinking, turning), short and small."""
    return render_sample_clip(load_open_head(), tmp_path_factory.mktemp("clip") / "head.mp4",
                              num_frames=CLIP_FRAMES, size_px=CLIP_SIZE)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m fitter_backend ...`` as a user runs it (what reaches the terminal is checked),
    without the OpenCV log settings this test process itself gained by importing the backend."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    return subprocess.run([sys.executable, "-m", "fitter_backend", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def leftovers(folder: Path) -> list[str]:
    """Hidden partial or old result folders a job may have left beside its output."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, clip) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("result") / "take1"
    return out, run_cli("fit", clip, "--out", out, "--progress", "json")


def test_result_folder_has_every_file_and_they_agree(fitted):
    out, run = fitted
    assert run.returncode == 0, run.stderr
    for name in RESULT_FILES:
        assert (out / name).is_file(), f"{name} missing from the result folder"
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "facecap-job" and report["frames"] == CLIP_FRAMES
    assert report["frames_fitted"] == CLIP_FRAMES and report["frames_flagged"] == {}
    assert report["fit"]["median_frame_rms"] < 1.0  # residuals within the landmarks' sigma
    assert set(report["timings"]) >= {"landmarks_s", "fit_s", "previews_s", "total_s"}
    track = LandmarkTrack.load_npz(out / "landmarks.npz")
    # The default landmarks: MediaPipe's 468 face points and 2 iris centres, then the dense
    # network's head points.
    assert track.landmark_set.startswith("mediapipe_468_iris+dense_320") and track.valid.all()
    default = load_landmarker(DEFAULT_LANDMARKS, progress=lambda m: None)
    assert track.mu_px.shape == (CLIP_FRAMES, 1, default.num_landmarks, 2) and default.num_landmarks > 468
    assert np.isfinite(track.mu_px[:, :, :468]).all()  # the iris centres go missing where the lids read half shut
    np.testing.assert_array_equal(track.frame_indices, np.arange(CLIP_FRAMES))
    with np.load(out / "fit.npz", allow_pickle=False) as fit:
        assert fit["expression"].shape[0] == CLIP_FRAMES and np.isfinite(fit["translation_m"]).all()
        assert np.all(fit["translation_m"][:, 2] < 0)  # the head is in front of the camera (looking down -Z)
        assert list(fit["frame_flags"]) == [""] * CLIP_FRAMES
    pngs = sorted((out / "previews").glob("frame_*_view0.png"))
    assert pngs and all(cv2.imread(str(p)).shape == (CLIP_SIZE, CLIP_SIZE, 3) for p in pngs)


def test_keyed_arkit_weights_stay_in_0_1(fitted):
    out, run = fitted
    assert run.returncode == 0, run.stderr
    with np.load(out / "fit.npz", allow_pickle=False) as fit:
        weights = fit["expression"]
    assert weights.shape[1] == 52 and weights.min() >= 0.0 and weights.max() <= 1.0


def decode_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        decoded.append(image)
    capture.release()
    return decoded


def test_overlay_video_is_readable_with_one_frame_per_fitted_frame(fitted, clip):
    out, _ = fitted
    decoded = decode_all(out / "previews" / "overlay.mp4")
    assert len(decoded) == CLIP_FRAMES and decoded[0].shape == (CLIP_SIZE, CLIP_SIZE, 3)
    # The video shows the overlay (as the PNG of frame 0 does), not the plain frames. Compared
    # blurred, since MPEG-4 smears the one-pixel landmark dots, inside the face's landmarks.
    mu = LandmarkTrack.load_npz(out / "landmarks.npz").mu_px[0, 0]
    (x0, y0), (x1, y1) = mu.min(0).astype(int), mu.max(0).astype(int)

    def face(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 3)[y0:y1, x0:x1]

    png = cv2.imread(str(out / "previews" / "frame_00000_view0.png"))
    assert np.abs(face(decoded[0]) - face(png)).mean() < 5
    assert np.abs(face(decoded[0]) - face(decode_all(clip)[0])).mean() > 10


def test_progress_stream_is_json_lines_ending_in_done(fitted):
    out, run = fitted
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    messages = [json.loads(line) for line in lines]  # every stdout line is JSON for a tool to read
    progress = [m for m in messages if m.get("type") == "progress"]
    fractions = [m["fraction"] for m in progress]
    assert len(progress) > CLIP_FRAMES and all(0.0 <= f <= 1.0 for f in fractions)
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), "progress went backwards"
    stages = list(dict.fromkeys(m["stage"] for m in progress))
    assert stages[0] == "landmarks" and {"fit", "previews"} <= set(stages)
    assert progress[-1]["stage"] == "done" and progress[-1]["fraction"] == 1.0
    assert progress[-1]["message"] == str(out)


# -- bad inputs: one line ``error: ...`` naming the file or value, exit 2, nothing written --
def _missing(folder: Path, clip: Path) -> tuple[list, str]:
    return [folder / "absent.mp4"], "absent.mp4 does not exist"


def _garbage(folder: Path, clip: Path) -> tuple[list, str]:
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 6000, np.uint8).tobytes())
    return [folder / "garbage.mp4"], "garbage.mp4 cannot be read"


def _empty(folder: Path, clip: Path) -> tuple[list, str]:
    (folder / "empty.mp4").write_bytes(b"")
    return [folder / "empty.mp4"], r"empty.mp4 is empty \(0 bytes\)"


def _truncated(folder: Path, clip: Path) -> tuple[list, str]:
    data = clip.read_bytes()
    (folder / "half.mp4").write_bytes(data[: len(data) // 2])  # MP4's index (moov) sits at the end
    return [folder / "half.mp4"], "half.mp4 cannot be read: .*damaged or truncated"


def _truncated_avi(folder: Path, clip: Path) -> tuple[list, str]:
    data = write_clip(folder / "whole.avi", render_frames(6, 128)).read_bytes()
    (folder / "cut.avi").write_bytes(data[: len(data) // 2])  # the header still announces 6 frames
    return [folder / "cut.avi"], "cut.avi is truncated or damaged"


def _mismatched_views(folder: Path, clip: Path) -> tuple[list, str]:
    frames = render_frames(6, 128)
    write_clip(folder / "front.avi", frames)
    write_clip(folder / "side.avi", frames[:4])
    cameras = [{"name": "front", "image_size_px": [128, 128], "focal_px": 300.0, "R": np.eye(3).tolist(),
                "t_m": [0, 0, 0]},
               {"name": "side", "image_size_px": [128, 128], "focal_px": 300.0, "R": np.eye(3).tolist(),
                "t_m": [0.3, 0, 0]}]
    (folder / "rig.json").write_text(json.dumps({"format": "facecap-calibration", "format_version": 1,
                                                 "cameras": cameras}))
    return [folder / "front.avi", folder / "side.avi", "--camera", folder / "rig.json"], \
        r"different frame counts: front 6 \(.*front\.avi\), side 4 \(.*side\.avi\)"


def _no_camera_for_two_views(folder: Path, clip: Path) -> tuple[list, str]:
    return [clip, clip], "2 videos need a calibration file"


def _unknown_landmarks(folder: Path, clip: Path) -> tuple[list, str]:
    return [clip, "--landmarks", "dense_700"], "no landmark model 'dense_700'"


def _missing_head(folder: Path, clip: Path) -> tuple[list, str]:
    return [clip, "--head", folder / "flame.pkl"], "flame.pkl'?: no such file"


def _bad_range(folder: Path, clip: Path) -> tuple[list, str]:
    return [clip, "--start", "8", "--stop", "3"], "8.*3"


def _out_is_a_file(folder: Path, clip: Path) -> tuple[list, str]:
    (folder / "notes.txt").write_text("the user's file")
    return [clip, "--out", folder / "notes.txt"], "notes.txt is a file"


def _out_cannot_be_written(folder: Path, clip: Path) -> tuple[list, str]:
    (folder / "notes.txt").write_text("the user's file")
    return [clip, "--out", folder / "notes.txt" / "take1"], "cannot write the result folder .*take1"


BAD_INPUTS = [_missing, _garbage, _empty, _truncated, _truncated_avi, _mismatched_views, _no_camera_for_two_views,
              _unknown_landmarks, _missing_head, _bad_range, _out_is_a_file, _out_cannot_be_written]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry of a folder with its contents (None for folders)."""
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in folder.iterdir()}


@pytest.mark.parametrize("bad_input", BAD_INPUTS, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_clear_message_and_writes_nothing(tmp_path, clip, bad_input):
    args, words = bad_input(tmp_path, clip)
    out = tmp_path / "result"
    before = snapshot(tmp_path)
    run = run_cli("fit", "--out", out, *args)  # a case's own --out comes later and wins
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one message, got:\n{run.stderr}"
    assert lines[0].startswith("error: ")
    assert re.search(words, lines[0]), lines[0]
    assert not out.exists() and snapshot(tmp_path) == before


def test_a_clip_without_a_face_is_a_clear_error_and_an_earlier_result_stays(tmp_path):
    rng = np.random.default_rng(1)
    noise = write_clip(tmp_path / "noise.avi", [rng.integers(0, 256, (160, 200, 3), np.uint8) for _ in range(4)])
    out = tmp_path / "take1"
    (out / "previews").mkdir(parents=True)
    (out / "report.json").write_text('{"earlier": true}')
    (out / "previews" / "frame_00000_view0.png").write_bytes(b"earlier png")
    with pytest.raises(NoFaceError, match=r"no face found in any of the 4 frames of .*noise\.avi"):
        fit_videos(FitJob(videos=(noise,), out=out))
    assert (out / "report.json").read_text() == '{"earlier": true}'
    assert (out / "previews" / "frame_00000_view0.png").read_bytes() == b"earlier png"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("cancel_in", ["landmarks", "fit", "previews"])
def test_a_cancelled_job_leaves_nothing_and_keeps_an_earlier_result(tmp_path, clip, cancel_in):
    out = tmp_path / "take1"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": true}')
    seen: list[str] = []

    def cancelled() -> bool:  # asked at every progress step: cancel three steps into the stage
        return seen.count(cancel_in) >= 3

    with pytest.raises(JobCancelled, match="cancelled"):
        fit_videos(FitJob(videos=(clip,), out=out, frame_range=(0, 6)),
                   progress=lambda stage, fraction, message: seen.append(stage), cancelled=cancelled)
    assert cancel_in in seen and "done" not in seen
    assert (out / "report.json").read_text() == '{"earlier": true}' and sorted(os.listdir(out)) == ["report.json"]
    assert leftovers(tmp_path) == []


def test_two_faces_follow_the_larger_central_one_and_say_so(tmp_path):
    big, small = render_frames(3, 256), render_frames(3, 160, yaw_offset_deg=20.0)
    frames = []
    for a, b in zip(big, small):  # the larger face nearer the middle of a 456 px wide frame
        canvas = np.full((256, 456, 3), 60, np.uint8)
        canvas[:, 40:296] = a
        canvas[48:208, 296:456] = b
        frames.append(canvas)
    video = write_clip(tmp_path / "two.avi", frames)
    out = fit_videos(FitJob(videos=(video,), out=tmp_path / "two", previews=False))
    report = json.loads((out / "report.json").read_text())
    assert any("2 faces detected in frame 0" in n and "following the largest, most central one" in n
               for n in report["notes"]), report["notes"]
    track = LandmarkTrack.load_npz(out / "landmarks.npz")
    assert track.flags["multiple_faces"][0, 0] and track.valid.all()
    centre_x = np.nanmean(track.mu_px[:, 0, :, 0])
    assert 40 < centre_x < 296, "followed the smaller face"


def test_an_odd_sized_image_with_alpha_is_fitted_with_a_note(tmp_path):
    face = render_frames(1, 256)[0][:-3, 5:]                       # 253 x 251: odd on both sides
    alpha = np.full(face.shape[:2] + (1,), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "still.png"), np.concatenate([face, alpha], axis=-1))
    out = fit_videos(FitJob(videos=(tmp_path / "still.png",), out=tmp_path / "still"))
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 1 and report["frames_fitted"] == 1
    assert any("alpha" in note for note in report["notes"]), report["notes"]
    png = cv2.imread(str(out / "previews" / "frame_00000_view0.png"))
    assert png.shape == (253, 251, 3)


def test_job_without_videos_is_refused():
    with pytest.raises(FacecapError, match="no video given"):
        fit_videos(FitJob(videos=(), out=Path("unused")))


def test_multiview_shot_fits_with_its_calibration(tmp_path):
    """Two synchronised cameras 35 degrees apart, calibrated: one fit over both views."""
    model = load_open_head()
    vertices, _ = sample_performance(model, 12, seed=3, yaw_deg=15)
    head = np.array([0.0, 0.0, -0.7])
    eye = head + 0.7 * np.array([np.sin(np.radians(35)), 0.0, np.cos(np.radians(35))])
    rotation = look_at_rotation(eye, head)
    focal = 256 / np.tan(np.radians(20))
    cameras = Cameras.create([(512, 512)] * 2, [focal] * 2, [np.zeros(3), cv2.Rodrigues(rotation)[0].ravel()],
                             [np.zeros(3), -rotation @ eye])
    assert np.allclose(rodrigues(cameras.rotation[1]), rotation)
    videos = render_views(model, vertices, cameras, [tmp_path / "front.mp4", tmp_path / "side.mp4"])
    calibration = tmp_path / "calib.json"
    calibration.write_text(json.dumps({"format": "facecap-calibration", "format_version": 1, "cameras": [
        {"name": "front", "image_size_px": [512, 512], "focal_px": focal,
         "R": np.eye(3).tolist(), "t_m": [0.0, 0.0, 0.0]},
        {"name": "side", "image_size_px": [512, 512], "focal_px": focal,
         "R": rotation.tolist(), "t_m": (-rotation @ eye).tolist()}]}))
    out = fit_videos(FitJob(videos=tuple(videos), out=tmp_path / "result", calibration=calibration, previews=False))
    report = json.loads((out / "report.json").read_text())
    assert report["fit"]["cameras"] == 2 and report["frames_fitted"] == 12
    with np.load(out / "fit.npz") as fit:
        assert fit["focal_px"].tolist() == [focal, focal]  # calibrated: held fixed
        assert np.allclose(fit["camera_rotation"][1], cameras.rotation[1])
    assert report["fit"]["median_frame_rms"] < 1.0


def test_overlay_draws_the_landmarks_seen_when_one_is_missing():
    # An iris centre under a shut lid is missing alone; the other landmarks stay drawn.
    from types import SimpleNamespace

    from fitter_backend.preview import draw_overlay

    model = load_open_head()
    far_away = model.template + np.array([50.0, 0.0, -1.0])          # the mesh out of the picture
    result = SimpleNamespace(params=SimpleNamespace(cameras=Cameras.monocular(64, 64, focal_px=60.0)))
    black = np.zeros((64, 64, 3), np.uint8)
    mu = np.array([[20.5, 20.5], [np.nan, np.nan], [40.5, 40.5]])
    image = draw_overlay(black, model, far_away, result, 0, mu, np.ones(3), "")
    assert image[20, 20].any() and image[40, 40].any() and not image[55:, :].any()
