"""Frame sources: video files, image sequences and single images, streamed frame by frame.

Every source knows its length, frame rate and image size before the first frame is
decoded, checks what it can up front (missing, empty, unreadable, truncated files) and
then yields one :class:`Frame` at a time, so memory stays bounded for long 4K clips.
Images are RGB, ``uint8`` or ``uint16`` (16-bit PNG/TIFF sequences keep their depth; video
decoding through OpenCV's FFmpeg yields 8 bits, also for 10-bit streams). Grey inputs are
repeated to three channels; an alpha channel is dropped (and said so in ``notes``).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# FFmpeg's and OpenCV's own chatter on bad files; the errors below say what went wrong.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(8192 * 8192))
import cv2  # noqa: E402

from fitter_backend.paths import opencv_path  # noqa: E402
from fitter_backend.video.errors import VideoError  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")
MIN_SIDE_PX = 32
#: Largest frame taken (8K x 8K): a frame is decoded whole, 200 MB at 8 bits. Larger images are
#: refused from their header (PNG, JPEG; OpenCV's own limit below for other formats).
MAX_IMAGE_PIXELS = 8192 * 8192
DEFAULT_SEQUENCE_FPS = 25.0
#: Opening checks the last wanted frame; where seeking is unreliable, decode at most this many.
UPFRONT_DECODE_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded frame.

    index: frame number in the source (0-based, before stride and range).
    image: (H, W, 3) RGB, uint8 or uint16.
    timestamp_s: index / fps.
    white_level: the sample value of full white (255 for 8 bits, 65535 for 16-bit files
        unless the source was opened with another white level, e.g. 1023).
    """

    index: int
    image: np.ndarray
    timestamp_s: float
    white_level: int


def natural_key(text: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _frame_indices(name: str, count: int, frame_range, stride) -> range:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise VideoError(f"{name}: stride must be a whole number >= 1, got {stride!r}")
    start, stop = (0, count) if frame_range is None else frame_range
    stop = count if stop is None else stop
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop)) or not 0 <= start < stop:
        raise VideoError(f"{name}: frame range must be (start, stop) with 0 <= start < stop, got {frame_range!r}")
    if stop > count:
        raise VideoError(f"{name}: frame range {start}..{stop} goes past its {count} frames")
    return range(start, stop, stride)


def to_rgb(raw: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """A decoded OpenCV image (grey, BGR or BGRA; uint8 or uint16) -> (RGB image, had alpha)."""
    if raw.dtype not in (np.uint8, np.uint16):
        raise VideoError(f"{name}: {raw.dtype} samples are not supported (expected 8- or 16-bit integers)")
    if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 1):
        return cv2.cvtColor(raw.reshape(raw.shape[:2]), cv2.COLOR_GRAY2RGB), False
    if raw.ndim == 3 and raw.shape[2] == 3:
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB), False
    if raw.ndim == 3 and raw.shape[2] == 4:
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB), True
    raise VideoError(f"{name}: images with shape {raw.shape} are not supported (expected grey, RGB or RGBA)")


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise VideoError(f"{name} is {width}x{height} pixels: more than the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} "
                         "megapixels a frame may have; scale it down")
    if min(width, height) < MIN_SIDE_PX:
        raise VideoError(f"{name}: {width}x{height} pixels is too small to hold a face "
                         f"(need at least {MIN_SIDE_PX}x{MIN_SIDE_PX})")


class FrameSource:
    """Iterable of :class:`Frame`. ``len()``, ``fps``, ``size`` ((width, height)) and
    ``frame_indices`` are known before decoding; ``notes`` lists harmless surprises."""

    def __init__(self, name: str, fps: float, size: tuple[int, int], indices: range, white_level: int,
                 notes: list[str]):
        self.name, self.fps, self.size = name, fps, size
        self.frame_indices, self.white_level, self.notes = indices, white_level, notes

    def __len__(self) -> int:
        return len(self.frame_indices)

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _frame(self, index: int, image: np.ndarray) -> Frame:
        return Frame(index, image, index / self.fps, self.white_level)


class VideoFileSource(FrameSource):
    """A video file decoded with OpenCV's FFmpeg backend (8-bit RGB frames)."""

    def __init__(self, path: Path, frame_range=None, stride: int = 1):
        self.path = path
        if not path.exists():
            raise VideoError(f"video file {path} does not exist")
        if not path.is_file():
            raise VideoError(f"{path} is not a file")
        if path.stat().st_size == 0:
            raise VideoError(f"video file {path} is empty (0 bytes)")
        capture = self._open()
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(capture.get(cv2.CAP_PROP_FPS))
            size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        finally:
            capture.release()
        if count <= 0:
            raise VideoError(f"video file {path} contains no frames")
        notes = []
        if not (np.isfinite(fps) and fps > 0):
            fps = DEFAULT_SEQUENCE_FPS
            notes.append(f"{path} does not state its frame rate; assuming {fps:g} fps")
        _check_size(*size, str(path))
        super().__init__(str(path), fps, size, _frame_indices(str(path), count, frame_range, stride), 255, notes)
        self.source_frame_count = count
        # Fail now, not hours later: the first and the last wanted frames must decode.
        for index in {self.frame_indices[0], self.frame_indices[-1]}:
            self._check_decodes(index)

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(opencv_path(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise VideoError(f"video file {self.path} cannot be read: not a video format FFmpeg decodes, "
                             f"or the file is damaged or truncated")
        return capture

    def _capture_at(self, index: int, decode_limit: int | None = None) -> cv2.VideoCapture | None:
        """A capture whose next read() returns frame ``index``.

        Seeking is only trusted when the frame before the target reports the expected
        timestamp (MPEG-1 streams, for one, land on the next keyframe); otherwise the frames
        are decoded from the start, unless that means more than ``decode_limit`` frames
        (then None).
        """
        capture = self._open()
        if index > 1 and capture.set(cv2.CAP_PROP_POS_FRAMES, index - 1) and capture.grab() \
                and round(capture.get(cv2.CAP_PROP_POS_MSEC) * self.fps / 1000.0) == index - 1:
            return capture
        capture.release()
        if decode_limit is not None and index > decode_limit:
            return None
        capture = self._open()
        for skipped in range(index):
            if not capture.grab():
                capture.release()
                raise self._truncated(skipped)
        return capture

    def _truncated(self, index: int) -> VideoError:
        return VideoError(f"video file {self.path} is truncated or damaged: frame {index} of the "
                          f"{self.source_frame_count} its header announces cannot be decoded")

    def _check_decodes(self, index: int) -> None:
        """Frame ``index`` must decode; checked where a seek or a short decode gets there."""
        capture = self._capture_at(index, decode_limit=UPFRONT_DECODE_LIMIT)
        if capture is None:
            return  # cannot seek reliably: a truncation is reported when iteration gets there
        try:
            ok = capture.grab()
        finally:
            capture.release()
        if not ok:
            raise self._truncated(index)

    def __iter__(self) -> Iterator[Frame]:
        indices = self.frame_indices
        capture = self._capture_at(indices.start)
        try:
            for index in range(indices.start, indices[-1] + 1):
                wanted = (index - indices.start) % indices.step == 0
                # grab() skips the colour conversion of frames that stride leaves out
                ok, image = capture.read() if wanted else (capture.grab(), None)
                if not ok:
                    raise self._truncated(index)
                if wanted:
                    yield self._frame(index, to_rgb(image, self.name)[0])
        finally:
            capture.release()


class ImageSequenceSource(FrameSource):
    """Image files in natural order (``f2`` before ``f10``), one frame each, all the same size."""

    def __init__(self, files: list[Path], name: str, frame_range=None, stride: int = 1,
                 fps: float | None = None, white_level: int | None = None):
        self.files = files
        indices = _frame_indices(name, len(files), frame_range, stride)
        first = _read_image(files[indices[0]])
        self.height, self.width = first.shape[:2]
        self.dtype = first.dtype
        _check_size(self.width, self.height, str(files[indices[0]]))
        rgb, had_alpha = to_rgb(first, str(files[indices[0]]))
        notes = [f"{files[indices[0]]} has an alpha channel; it is ignored"] if had_alpha else []
        if fps is None:
            fps = DEFAULT_SEQUENCE_FPS
            if len(files) > 1:
                notes.append(f"{name}: image sequences carry no frame rate; assuming {fps:g} fps")
        if white_level is None:
            white_level = 255 if rgb.dtype == np.uint8 else 65535
        super().__init__(name, fps, (self.width, self.height), indices, white_level, notes)

    def __iter__(self) -> Iterator[Frame]:
        for index in self.frame_indices:
            path = self.files[index]
            raw = _read_image(path)
            if raw.shape[:2] != (self.height, self.width) or raw.dtype != self.dtype:
                raise VideoError(f"{path} is {raw.shape[1]}x{raw.shape[0]} {raw.dtype}, but the sequence "
                                 f"{self.name} started with {self.width}x{self.height} {self.dtype}")
            yield self._frame(index, to_rgb(raw, str(path))[0])


def declared_image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares, read before decoding; None for others."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        at = 2
        while at + 9 < len(head) and head[at] == 0xFF:
            marker, length = head[at + 1], int.from_bytes(head[at + 2:at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(head[at + 7:at + 9], "big"), int.from_bytes(head[at + 5:at + 7], "big")
            at += 2 + length
    return None


def _read_image(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise VideoError(f"image {path} cannot be read: {error.strerror or error}") from None
    declared = declared_image_size(data[:1 << 16].tobytes())
    if declared is not None:
        _check_size(*declared, str(path))
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise VideoError(f"image {path} cannot be decoded: empty, damaged or not an image format OpenCV reads")
    return raw


def open_video(path: str | Path, frame_range: tuple[int, int | None] | None = None, stride: int = 1,
               fps: float | None = None, white_level: int | None = None) -> FrameSource:
    """Open a video file, an image sequence (a folder of images or a glob pattern such as
    ``shots/take1_*.png``) or a single image.

    frame_range: (start, stop) source frame numbers, stop exclusive (None: to the end).
    stride: keep every stride-th frame from start.
    fps: frame rate of an image sequence (default 25); ignored for video files.
    white_level: full white of 16-bit images (default 65535; e.g. 1023 for unscaled 10-bit).
    """
    path = Path(path).expanduser()
    text = str(path)
    if not path.exists() and glob.has_magic(text):
        files = sorted((Path(p) for p in glob.glob(text) if Path(p).is_file()), key=lambda p: natural_key(p.name))
        if not files:
            raise VideoError(f"no files match the image pattern {text}")
        return ImageSequenceSource(files, text, frame_range, stride, fps, white_level)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise VideoError(f"folder {path} contains no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSequenceSource(files, text, frame_range, stride, fps, white_level)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise VideoError(f"image {path} does not exist")
        return ImageSequenceSource([path], text, frame_range, stride, fps, white_level)
    return VideoFileSource(path, frame_range, stride)
