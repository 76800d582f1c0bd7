"""The JSON-lines protocol between the Blender add-on and the backend (version 1).

Every line is one JSON object with ``"protocol": 1`` and a ``"type"``; the fields of each
type are listed in :data:`REQUESTS` (add-on -> backend) and :data:`EVENTS` (backend ->
add-on) and documented in ``docs/protocol.md``. Both sides validate every message with
:func:`parse_request` / :func:`parse_event`; a bad message raises :class:`ProtocolError`
whose text names the field.

This module is shared: the add-on loads this very file from the backend sources it
ships, inside Blender's Python. Keep it standard-library only.
"""
from __future__ import annotations

import json
import math
import re

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20          # longer lines are refused, not parsed (counted in UTF-8 bytes)
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # safe as a folder name (whole string: fullmatch)
MAX_SYNTHETIC_FRAMES = 1000       # a synthetic shot's frames: about 0.5 MB each at peak (400 frames: 0.4 GB)


class ProtocolError(ValueError):
    """A message that is not valid protocol; the text names the offending field."""


# -- a small schema language: each spec is a function (value, where) -> value ----------
def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def string(value, where):
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: expected a string, got {_type_name(value)}")
    return value


def nonempty_string(value, where):
    if not string(value, where):
        raise ProtocolError(f"{where}: must not be empty")
    return value


def is_job_id(value) -> bool:
    """True for a string that is a whole job id (no trailing newline, no path)."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def job_id(value, where):
    if not is_job_id(string(value, where)):
        raise ProtocolError(f"{where}: {value!r} is not a job id (1-64 letters, digits, '_', '.', '-')")
    return value


def integer(minimum=None, maximum=None):
    def check(value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer, got {_type_name(value)}")
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            raise ProtocolError(f"{where}: {value} is outside [{minimum}, {maximum}]")
        return value
    return check


def number(minimum=None, maximum=None):
    def check(value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}: expected a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise ProtocolError(f"{where}: expected a finite number, got {value!r}")
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            raise ProtocolError(f"{where}: {value} is outside [{minimum}, {maximum}]")
        return float(value)
    return check


def one_of(*choices):
    def check(value, where):
        if value not in choices:
            raise ProtocolError(f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    return check


def nullable(spec):
    def check(value, where):
        return None if value is None else spec(value, where)
    return check


def list_of(spec, min_items=0, max_items=1000):
    def check(value, where):
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list, got {_type_name(value)}")
        if not min_items <= len(value) <= max_items:
            raise ProtocolError(f"{where}: expected {min_items} to {max_items} items, got {len(value)}")
        return [spec(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return check


def obj(required: dict, optional: dict | None = None):
    """An object with exactly these fields: all of ``required``, any of ``optional``."""
    optional = optional or {}

    def check(value, where):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {_type_name(value)}")
        missing = [k for k in required if k not in value]
        if missing:
            raise ProtocolError(f"{where}.{missing[0]}: missing field")
        extra = [k for k in value if k not in required and k not in optional]
        if extra:
            raise ProtocolError(f"{where}.{extra[0]}: unknown field")
        out = {}
        for key, item in value.items():
            out[key] = (required.get(key) or optional[key])(item, f"{where}.{key}")
        return out
    return check


def tagged(tag: str, variants: dict):
    """An object whose ``tag`` field picks its schema from ``variants``."""
    def check(value, where):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {_type_name(value)}")
        kind = value.get(tag)
        if not isinstance(kind, str) or kind not in variants:
            raise ProtocolError(f"{where}.{tag}: expected one of {', '.join(map(repr, variants))}, got {kind!r}")
        return variants[kind](value, where)
    return check


# -- the messages ------------------------------------------------------------------------
#: The actor's pupil distances a fit accepts, mm (fitting.problem.PUPIL_DISTANCE_MM; a test
#: keeps them equal: this module imports nothing heavy).
PUPIL_DISTANCE_MM = (40.0, 90.0)
MATRIX_4X4 = list_of(list_of(number(), 4, 4), 4, 4)

#: A view's calibration from the artist's Blender camera: camera-to-world matrix in
#: Blender's world frame (the backend converts) and the focal length in pixels; null = unknown.
CAMERA = obj({"matrix_world": nullable(MATRIX_4X4), "focal_px": nullable(number(1.0, 1e6))})

SOURCE = tagged("kind", {
    "video": obj({"kind": one_of("video"), "paths": list_of(nonempty_string, 1, 64),
                  "frame_start": integer(0), "frame_end": integer(0)},
                 {"cameras": list_of(CAMERA, 1, 64)}),
    "synthetic": obj({"kind": one_of("synthetic"), "frames": integer(2, MAX_SYNTHETIC_FRAMES),
                      "seed": integer(0, 2 ** 32 - 1)}),
})

REQUESTS = {
    "hello": {},
    "fit": {"job": job_id, "source": SOURCE, "head": nonempty_string,
            "mode": one_of("offline", "realtime"), "out": nonempty_string},
    "cancel": {"job": job_id},
    "shutdown": {},
}
#: Optional request fields (defaults in brackets): landmarks [the backend's default model, see
#: server.runner.DEFAULT_LANDMARK_CHOICE], device ["cpu"], pupil_distance_mm [unknown: the mean
#: head's size].
OPTIONAL_REQUEST_FIELDS = {
    "fit": {"landmarks": one_of("whole_head", "dense", "bootstrap"), "device": one_of("cpu", "gpu"),
            "pupil_distance_mm": number(*PUPIL_DISTANCE_MM)},
}

EVENTS = {
    "hello": {"backend_version": string, "providers": list_of(string)},
    "progress": {"job": job_id, "stage": string, "fraction": number(0.0, 1.0), "eta_s": nullable(number(0.0))},
    "done": {"job": job_id, "result_dir": nonempty_string},
    "error": {"message": nonempty_string},
    "cancelled": {"job": job_id},
}
OPTIONAL_EVENT_FIELDS = {"error": {"job": job_id}}


def _parse(message, schemas: dict, optional: dict, side: str) -> dict:
    if not isinstance(message, dict):
        raise ProtocolError(f"{side} message: expected a JSON object, got {_type_name(message)}")
    version = message.get("protocol")
    if type(version) is not int or version != PROTOCOL_VERSION:  # not true, not 1.0
        raise ProtocolError(f"protocol: this side speaks version {PROTOCOL_VERSION}, got {version!r}")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in schemas:
        raise ProtocolError(f"type: unknown {side} type {kind!r} (expected one of {', '.join(schemas)})")
    fields = {k: v for k, v in message.items() if k not in ("protocol", "type")}
    body = obj(schemas[kind], optional.get(kind))(fields, kind)
    if kind == "fit" and body["source"]["kind"] == "video":
        source = body["source"]
        if source["frame_end"] < source["frame_start"]:
            raise ProtocolError(f"fit.source.frame_end: {source['frame_end']} is before frame_start "
                                f"{source['frame_start']}")
        if "cameras" in source and len(source["cameras"]) != len(source["paths"]):
            raise ProtocolError(f"fit.source.cameras: {len(source['cameras'])} cameras for "
                                f"{len(source['paths'])} videos")
    return {"protocol": PROTOCOL_VERSION, "type": kind, **body}


def parse_request(message) -> dict:
    """A validated request (a new dict), or ProtocolError."""
    return _parse(message, REQUESTS, OPTIONAL_REQUEST_FIELDS, "request")


def parse_event(message) -> dict:
    """A validated event (a new dict), or ProtocolError."""
    return _parse(message, EVENTS, OPTIONAL_EVENT_FIELDS, "event")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def decode_line(line: str | bytes):
    """One line -> the JSON value it holds; ProtocolError for overlong, too deeply nested or
    non-JSON lines (NaN and Infinity are not JSON)."""
    size = len(line) if isinstance(line, bytes) else len(line.encode("utf-8", "surrogatepass"))
    if size > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {size} bytes is longer than the limit of {MAX_LINE_BYTES}")
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("line is not UTF-8 text") from None
    try:
        return json.loads(line, parse_constant=_no_constant)
    except RecursionError:
        raise ProtocolError("line is nested too deeply to be a protocol message") from None
    except ValueError as exc:
        shown = line.strip()
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ProtocolError(f"line is not JSON ({exc.args[0] if exc.args else exc}): {shown!r}") from None


def encode(message: dict) -> str:
    """One message -> one line (with its newline). Non-ASCII stays escaped: lines are ASCII."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"


def request(kind: str, **fields) -> dict:
    """A validated request built from keyword fields, e.g. ``request("cancel", job="a")``."""
    return parse_request({"protocol": PROTOCOL_VERSION, "type": kind, **fields})


def event(kind: str, **fields) -> dict:
    """A validated event built from keyword fields."""
    return parse_event({"protocol": PROTOCOL_VERSION, "type": kind, **fields})
