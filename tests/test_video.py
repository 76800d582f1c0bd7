"""Frame sources: video files, image sequences, multi-view sets, and their bad inputs."""
import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from fitter_backend.errors import FacecapError
from fitter_backend.video import CalibrationError, VideoError, load_calibration, open_multiview, open_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE_VIDEO = SHARED / "fixtures" / "video"


def frame_image(index: int, width: int = 96, height: int = 64) -> np.ndarray:
    """A BGR frame whose content identifies its index (a bar and a grey level)."""
    image = np.full((height, width, 3), 40, np.uint8)
    image[:, (index * 7) % (width - 8):(index * 7) % (width - 8) + 8] = (255, 200, 0)
    image[: height // 4] = 10 + 12 * index % 240
    return image


def write_video(path: Path, count: int, width: int = 96, height: int = 64, fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for index in range(count):
        writer.write(frame_image(index, width, height))
    writer.release()
    return path


def test_video_metadata_known_before_decoding_and_frames_match_index(tmp_path):
    path = write_video(tmp_path / "clip.avi", 30)
    source = open_video(path)
    assert (len(source), source.fps, tuple(source.size)) == (30, 20.0, (96, 64))
    frames = list(source)
    assert [f.index for f in frames] == list(range(30))
    assert frames[3].timestamp_s == pytest.approx(3 / 20.0)
    first = frames[0].image
    assert first.dtype == np.uint8 and first.shape == (64, 96, 3)
    # RGB order: the bar is (B, G, R) = (255, 200, 0) when written, so red channel ~0
    bar = first[40, 2]
    assert bar[2] > 200 and bar[0] < 60


def test_frame_range_and_stride_give_the_same_pixels_as_a_full_decode(tmp_path):
    path = write_video(tmp_path / "clip.avi", 40)
    full = {f.index: f.image for f in open_video(path)}
    source = open_video(path, frame_range=(5, 31), stride=4)
    assert len(source) == 7
    picked = list(source)
    assert [f.index for f in picked] == [5, 9, 13, 17, 21, 25, 29]
    for frame in picked:
        np.testing.assert_array_equal(frame.image, full[frame.index])
    assert [f.index for f in open_video(path, frame_range=(36, None))] == [36, 37, 38, 39]


@pytest.mark.parametrize("frame_range, stride, words", [
    ((10, 5), 1, "0 <= start < stop"),
    ((0, 50), 1, "goes past its 40 frames"),
    (None, 0, "stride"),
])
def test_bad_frame_selection_is_one_clear_error(tmp_path, frame_range, stride, words):
    path = write_video(tmp_path / "clip.avi", 40)
    with pytest.raises(VideoError, match=words):
        open_video(path, frame_range=frame_range, stride=stride)


def test_missing_empty_unreadable_and_truncated_videos(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        open_video(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty \(0 bytes\)"):
        open_video(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VideoError, match="cannot be read"):
        open_video(tmp_path / "noise.mp4")
    data = write_video(tmp_path / "long.avi", 60).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated") as caught:
        open_video(tmp_path / "cut.avi")
    assert "cut.avi" in str(caught.value)
    assert issubclass(VideoError, FacecapError)


def test_video_with_no_frames(tmp_path):
    path = tmp_path / "none.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (96, 64))
    writer.release()
    with pytest.raises(VideoError, match="none.avi"):
        open_video(path)


def test_image_sequence_natural_order_grey_and_glob(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for index in (1, 2, 10):
        cv2.imwrite(str(folder / f"frame{index}.png"), np.full((40, 48), index * 20, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    source = open_video(folder, fps=30.0)
    assert len(source) == 3 and source.fps == 30.0 and tuple(source.size) == (48, 40)
    frames = list(source)
    assert [int(f.image[0, 0, 0]) for f in frames] == [20, 40, 200]  # frame2 before frame10
    assert all(f.image.shape == (40, 48, 3) and np.all(f.image[..., 0] == f.image[..., 2]) for f in frames)
    globbed = open_video(folder / "frame1*.png")
    assert [int(f.image[0, 0, 0]) for f in globbed] == [20, 200]
    with pytest.raises(VideoError, match="no files match"):
        open_video(folder / "take*.png")


def test_sixteen_bit_sequence_keeps_its_depth(tmp_path):
    values = np.arange(36 * 40 * 3, dtype=np.uint16).reshape(36, 40, 3) * 40 + 1000  # 10-bit-like, scaled
    cv2.imwrite(str(tmp_path / "f0.png"), values)
    frame = next(iter(open_video(tmp_path / "f0.png")))
    assert frame.image.dtype == np.uint16 and frame.white_level == 65535
    np.testing.assert_array_equal(frame.image, values[..., ::-1])
    assert next(iter(open_video(tmp_path / "f0.png", white_level=1023))).white_level == 1023


def test_alpha_is_dropped_with_a_note_and_odd_sizes_work(tmp_path):
    rgba = np.zeros((37, 51, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA
    rgba[..., 3] = 128
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    source = open_video(tmp_path / "a.png")
    assert any("alpha" in note for note in source.notes)
    image = next(iter(source)).image
    assert image.shape == (37, 51, 3) and tuple(image[0, 0]) == (255, 0, 0)


def test_bad_images_in_sequences(tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(VideoError, match="too small"):
        open_video(tmp_path / "tiny.png")
    seq = tmp_path / "seq"
    seq.mkdir()
    cv2.imwrite(str(seq / "0.png"), np.zeros((40, 40, 3), np.uint8))
    cv2.imwrite(str(seq / "1.png"), np.zeros((40, 44, 3), np.uint8))
    (seq / "2.png").write_bytes(b"not a png")
    source = open_video(seq)
    with pytest.raises(VideoError, match=r"1\.png is 44x40"):
        list(source)
    with pytest.raises(VideoError, match=r"2\.png cannot be decoded"):
        list(open_video(seq, frame_range=(2, 3)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="contains no images"):
        open_video(empty)


def test_long_4k_decoding_keeps_memory_bounded(tmp_path):
    path = tmp_path / "uhd.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (3840, 2160))
    base = np.zeros((2160, 3840, 3), np.uint8)
    for index in range(12):
        base[:, :, 1] = index * 10
        writer.write(base)
    writer.release()
    frame_bytes = 3840 * 2160 * 3
    tracemalloc.start()
    count = 0
    for frame in open_video(path):
        count += 1
        assert frame.image.shape == (2160, 3840, 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 12
    assert peak < 4 * frame_bytes  # a whole-clip array would need 12


@pytest.mark.skipif(not FIXTURE_VIDEO.is_dir(), reason="shared fixtures absent")
@pytest.mark.parametrize("name, count, size", [("grid_bbaf2n.mpg", 75, (360, 288)),
                                                ("metrical_tracker_wojtek.mp4", 400, (512, 512))])
def test_fixture_videos_decode_with_exact_seeking(name, count, size):
    source = open_video(FIXTURE_VIDEO / name)
    assert (len(source), tuple(source.size), source.fps) == (count, size, 25.0)
    full = {f.index: f.image for f in open_video(FIXTURE_VIDEO / name, frame_range=(0, 40))}
    # MPEG-1 seeks land on the next keyframe: the source must notice and decode its way there
    for frame in open_video(FIXTURE_VIDEO / name, frame_range=(3, 40), stride=9):
        np.testing.assert_array_equal(frame.image, full[frame.index])


# -- multi-view ----------------------------------------------------------------------------
def calibration(cameras: list[dict]) -> dict:
    return {"format": "facecap-calibration", "format_version": 1, "cameras": cameras}


def camera(name: str, video: str | None = None, **overrides) -> dict:
    entry = {"name": name, "image_size_px": [96, 64], "focal_px": 120.0,
             "R": np.eye(3).tolist(), "t_m": [0.0, 0.0, 0.0]}
    if video:
        entry["video"] = video
    entry.update(overrides)
    return entry


def yaw(degrees: float) -> list:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_multiview_reads_synchronised_views(tmp_path):
    write_video(tmp_path / "a.avi", 12)
    write_video(tmp_path / "b.avi", 12)
    calib = write_json(tmp_path / "rig.json", calibration([
        camera("front", "a.avi"), camera("side", "b.avi", focal_px=None, R=yaw(30), t_m=[0.3, 0.0, -0.1])]))
    cameras = load_calibration(calib)
    assert [c.name for c in cameras] == ["front", "side"] and cameras[1].focal_px is None
    np.testing.assert_allclose(cameras[1].rotation, yaw(30))
    source = open_multiview(None, calib, frame_range=(2, 10), stride=3)
    steps = list(source)
    assert len(source) == 3 and [s.index for s in steps] == [2, 5, 8]
    assert all(len(s.frames) == 2 and {f.index for f in s.frames} == {s.index} for s in steps)
    explicit = open_multiview([tmp_path / "b.avi", tmp_path / "a.avi"], calib)
    assert [v.name for v in explicit.views] == [str(tmp_path / "b.avi"), str(tmp_path / "a.avi")]


def test_multiview_mismatched_frame_counts_and_sizes(tmp_path):
    write_video(tmp_path / "a.avi", 12)
    write_video(tmp_path / "b.avi", 10)
    write_video(tmp_path / "c.avi", 12, width=128)
    calib = write_json(tmp_path / "rig.json", calibration([camera("front", "a.avi"), camera("side", "b.avi")]))
    with pytest.raises(VideoError, match=r"different frame counts: front 12 .*side 10"):
        open_multiview(None, calib)
    calib2 = write_json(tmp_path / "rig2.json", calibration([camera("front", "a.avi"), camera("side", "c.avi")]))
    with pytest.raises(CalibrationError, match="128x64 pixels but camera side"):
        open_multiview(None, calib2)
    with pytest.raises(CalibrationError, match="1 videos given for the 2 cameras"):
        open_multiview([tmp_path / "a.avi"], calib)


@pytest.mark.parametrize("cameras, words", [
    ([camera("a", R=yaw(10))], "world frame"),
    ([camera("a"), camera("b", R=[[1, 0, 0], [0, 1, 0], [0, 0, 2]])], "not a rotation"),
    ([camera("a"), camera("b", R=[[1, 0], [0, 1]])], r"shape \(3, 3\)"),
    ([camera("a"), camera("a")], "unique"),
    ([camera("a", focal_px=-3.0)], "focal_px"),
    ([camera("a", focal_px=True)], "focal_px"),
    ([camera("a", image_size_px=[96.5, 64])], "image_size_px"),
    ([camera("a", lens="fisheye")], "unknown keys"),
    ([{"name": "a", "image_size_px": [96, 64]}], r"missing \['R', 't_m'\]"),
    ([camera("a"), camera("b", t_m=[0.1, 0.0, True])], r"t_m: expected finite numbers"),
    ([camera("a", "../outside.avi")], "must stay inside"),
    ([camera("a", "/etc/passwd")], "must stay inside"),
    ([], "non-empty list"),
])
def test_calibration_is_validated_strictly(tmp_path, cameras, words):
    calib = write_json(tmp_path / "rig.json", calibration(cameras))
    with pytest.raises(CalibrationError, match=words):
        load_calibration(calib)


def test_calibration_file_errors(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{'python': 'dict'}")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(tmp_path / "bad.json")
    write_json(tmp_path / "other.json", {"format": "something-else", "cameras": []})
    with pytest.raises(CalibrationError, match="facecap-calibration"):
        load_calibration(tmp_path / "other.json")
    write_json(tmp_path / "novideo.json", calibration([camera("a")]))
    with pytest.raises(CalibrationError, match="name no video"):
        open_multiview(None, tmp_path / "novideo.json")
