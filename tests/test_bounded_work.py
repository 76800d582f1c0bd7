"""Work and memory are bounded on small inputs (issue 15 D7): the face search of a large frame
without a face runs a bounded number of detector windows, and images too large to hold are
refused before they are decoded."""
import numpy as np
import pytest

from fitter_backend.roi.detector import MAX_WINDOWS_PER_FRAME, MIN_WINDOW_PX, sliding_windows
from fitter_backend.video import VideoError, open_video


def windows_run(detector, width: int, height: int, monkeypatch) -> int:
    count = []
    run = type(detector)._run
    monkeypatch.setattr(detector, "_run", lambda squares, white: count.append(len(squares)) or run(
        detector, squares, white))
    grey = np.full((height, width, 3), 90, np.uint8)  # no face anywhere
    assert detector.detect(grey) == []
    return sum(count)


def test_a_4k_frame_without_a_face_runs_a_bounded_search(detector, monkeypatch):
    assert windows_run(detector, 3840, 2160, monkeypatch) <= MAX_WINDOWS_PER_FRAME


def test_frames_up_to_full_hd_search_every_level_as_before(detector, monkeypatch):
    # the whole frame, then every window level down to MIN_WINDOW_PX: nothing lost at the sizes people shoot
    levels = [1920 / 2 ** k for k in range(1, 4) if 1920 / 2 ** k >= MIN_WINDOW_PX]
    assert windows_run(detector, 1920, 1080, monkeypatch) == 1 + sum(len(sliding_windows(1920, 1080, w))
                                                                     for w in levels)


def test_an_image_too_large_to_hold_is_refused_before_decoding(tmp_path):
    import zlib
    width = height = 20000
    # A PNG header declaring 20000x20000 (the pixels need not exist: it must not get that far)
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                        + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(VideoError, match=r"huge.png is 20000x20000 pixels: more than the limit of"):
        open_video(tmp_path / "huge.png")
