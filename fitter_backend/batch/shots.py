"""The shot list: a JSON or TOML file naming each shot's videos, calibration, frame range,
head and options (format in docs/batch.md). Everything is checked here, before any work, so
a bad file is one clear message naming the file, the shot and the value."""
from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from fitter_backend.errors import FacecapError
from fitter_backend.fitting.problem import PUPIL_DISTANCE_MM, is_pupil_distance_mm
from fitter_backend.landmarks import DEFAULT_LANDMARKS
from fitter_backend.pipeline import FitJob

#: Options a shot (or the list's ``defaults``) may set, with their types.
OPTIONS: dict[str, type] = {
    "head": str, "realtime": bool, "stride": int, "landmarks": str, "device": str, "previews": bool,
    "pupil_distance_mm": float,
}
TYPE_WORDS = {str: "a string", bool: "true or false", int: "a whole number", float: "a number"}
SHOT_KEYS = {"name", "videos", "calibration", "frames"} | set(OPTIONS)
DEVICES = ("cpu", "cuda", "auto")
# A shot's name becomes its result folder's name: no separators, no hidden or parent folders.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ShotListError(FacecapError):
    """The shot list cannot be used as written."""


@dataclasses.dataclass(frozen=True)
class Shot:
    """One shot: ``videos`` one per camera (absolute), the options of :class:`FitJob`."""

    name: str
    videos: tuple[Path, ...]
    calibration: Path | None = None
    frame_range: tuple[int, int | None] | None = None
    head: str = "open"
    realtime: bool = False
    stride: int = 1
    landmarks: str = DEFAULT_LANDMARKS
    device: str = "cpu"
    previews: bool = True
    pupil_distance_mm: float | None = None

    def job(self, out_dir: Path) -> FitJob:
        """The pipeline's job for this shot, writing ``out_dir/<name>``."""
        return FitJob(videos=self.videos, out=out_dir / self.name, head=self.head, calibration=self.calibration,
                      realtime=self.realtime, frame_range=self.frame_range, stride=self.stride,
                      landmarks=self.landmarks, device=self.device, previews=self.previews,
                      pupil_distance_mm=self.pupil_distance_mm)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ShotListError(f"shot list {path} does not exist (expected a .json or .toml file)")
    text = path.read_bytes()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ShotListError(f"shot list {path}: expected a .json or .toml file")
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ShotListError(f"shot list {path} is not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shots"), list) or not data["shots"]:
        raise ShotListError(f"shot list {path}: expected a top-level 'shots' list with at least one shot")
    unknown = sorted(set(data) - {"shots", "defaults"})
    if unknown:
        raise ShotListError(f"shot list {path}: unknown top-level key {unknown[0]!r} (expected 'shots', 'defaults')")
    return data


def _option(where: str, key: str, value: Any) -> Any:
    expected = OPTIONS[key]
    accepted = (int, float) if expected is float else expected   # 63 is a number of mm too
    # bool is an int in Python: a stride of true is a mistake, not 1.
    if not isinstance(value, accepted) or (expected in (int, float) and isinstance(value, bool)):
        raise ShotListError(f"{where}: {key} = {value!r} is not {TYPE_WORDS[expected]}")
    if key == "pupil_distance_mm" and not is_pupil_distance_mm(value):
        raise ShotListError(f"{where}: pupil_distance_mm = {value!r} is not an actor's pupil distance "
                            f"({PUPIL_DISTANCE_MM[0]:g} to {PUPIL_DISTANCE_MM[1]:g} mm)")
    if key == "stride" and value < 1:
        raise ShotListError(f"{where}: stride = {value} must be 1 or more")
    if key == "device" and value not in DEVICES:
        raise ShotListError(f"{where}: device = {value!r} is not one of {', '.join(DEVICES)}")
    return value


def _file(where: str, key: str, value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ShotListError(f"{where}: {key} = {value!r} is not a file path")
    path = (base / Path(value).expanduser()).resolve()
    if not path.exists():
        raise ShotListError(f"{where}: {key} {path} does not exist")
    return path


def _frames(where: str, value: Any) -> tuple[int, int | None]:
    ok = (isinstance(value, list) and 1 <= len(value) <= 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value[:1])
          and (len(value) == 1 or value[1] is None or (isinstance(value[1], int) and not isinstance(value[1], bool))))
    if not ok:
        raise ShotListError(f"{where}: frames = {value!r} is not [start] or [start, stop] (frame numbers)")
    start, stop = value[0], (value[1] if len(value) == 2 else None)
    if start < 0 or (stop is not None and stop <= start):
        raise ShotListError(f"{where}: frames = {value!r} must satisfy 0 <= start < stop")
    return start, stop


def _shot(entry: Any, index: int, defaults: dict[str, Any], path: Path) -> Shot:
    where = f"shot list {path}, shot {index + 1}"
    if not isinstance(entry, dict):
        raise ShotListError(f"{where}: expected a table/object with 'videos', got {entry!r}")
    if isinstance(entry.get("name"), str):
        where = f"shot list {path}, shot {entry['name']!r}"
    unknown = sorted(set(entry) - SHOT_KEYS)
    if unknown:
        raise ShotListError(f"{where}: unknown option {unknown[0]!r} (expected {', '.join(sorted(SHOT_KEYS))})")
    base = path.parent
    videos = entry.get("videos")
    if isinstance(videos, str):
        videos = [videos]
    if not isinstance(videos, list) or not videos:
        raise ShotListError(f"{where}: videos = {videos!r}; expected a list of video files (one per camera)")
    video_paths = tuple(_file(where, "video", v, base) for v in videos)
    name = entry.get("name", video_paths[0].stem)
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise ShotListError(f"{where}: name {name!r} cannot be a result folder name "
                            "(letters, digits, '_', '-', '.'; not starting with '.' or '-')")
    calibration = entry.get("calibration")
    calibration_path = None if calibration is None else _file(where, "calibration", calibration, base)
    if len(video_paths) > 1 and calibration_path is None:
        raise ShotListError(f"{where}: {len(video_paths)} videos need a 'calibration' file saying where each camera is")
    options = {key: _option(where, key, value) for key, value in {**defaults, **entry}.items() if key in OPTIONS}
    head = options.get("head", "open")
    if head != "open":
        options["head"] = str(_file(where, "head", head, base))
    frame_range = None if entry.get("frames") is None else _frames(where, entry["frames"])
    return Shot(name=name, videos=video_paths, calibration=calibration_path, frame_range=frame_range, **options)


def load_shots(path: Path) -> list[Shot]:
    """Read and check a shot list; relative paths are relative to the list's folder.

    Raises ShotListError naming the file, the shot and the value at the first problem.
    """
    path = Path(path)
    data = _read(path)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ShotListError(f"shot list {path}: defaults = {defaults!r} is not a table/object of options")
    unknown = sorted(set(defaults) - set(OPTIONS))
    if unknown:
        raise ShotListError(f"shot list {path}, defaults: unknown option {unknown[0]!r} "
                            f"(expected {', '.join(sorted(OPTIONS))})")
    for key, value in defaults.items():
        _option(f"shot list {path}, defaults", key, value)
    shots = [_shot(entry, i, defaults, path) for i, entry in enumerate(data["shots"])]
    seen: set[str] = set()
    for shot in shots:
        if shot.name in seen:
            raise ShotListError(f"shot list {path}: two shots are named {shot.name!r} (names become result folders)")
        seen.add(shot.name)
    return shots
