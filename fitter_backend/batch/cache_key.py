"""When a finished result can be reused: a key over the inputs' sha256, the options and the
backend's code, and a manifest (``DIR/batch-manifest.json``, written only by the driver) that
ties each key to a digest of every file of the result it produced. A re-run skips a shot whose
key is unchanged and whose result folder still holds exactly those files (``fit`` moves a
result folder into place only when it is complete, so a digest is only ever taken of a whole
one)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import fitter_backend
from fitter_backend.batch.shots import Shot
from fitter_backend.landmarks.names import SHIPPED_MODELS_DIR
from fitter_backend.paths import open_head_path, sha256_file

MANIFEST = "batch-manifest.json"


def folder_digest(folder: Path, patterns: tuple[str, ...]) -> str:
    """sha256 hex over the files under ``folder`` matching ``patterns`` (relative paths and
    contents, in sorted order); the empty digest when the folder is missing."""
    digest = hashlib.sha256()
    if folder.is_dir():
        paths = sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})
        for path in paths:
            digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def backend_fingerprint() -> str:
    """The code and shipped networks that compute a result: the backend's Python sources and
    ``onnx_models/models/``. Any change to them makes earlier results stale (keyed on the version
    number alone, a fitter change reused results the old fitter had made)."""
    package = Path(fitter_backend.__file__).resolve().parent
    return hashlib.sha256((folder_digest(package, ("*.py",)) + folder_digest(
        SHIPPED_MODELS_DIR, ("*.onnx", "*.json"))).encode()).hexdigest()


def shot_key(shot: Shot, file_digests: dict[Path, str]) -> str:
    """sha256 hex of the shot's inputs (videos, calibration, head file or the built open head)
    and options, and of the backend that fits it (:func:`backend_fingerprint`). ``file_digests``
    memoises file hashes across shots (shared calibrations)."""

    def digest(path: Path) -> str:
        if path not in file_digests:
            file_digests[path] = sha256_file(path)
        return file_digests[path]

    head = open_head_path() if shot.head == "open" else Path(shot.head)
    options = {k: v for k, v in dataclasses.asdict(shot).items() if k not in ("name", "videos", "calibration", "head")}
    described = {
        "backend_version": fitter_backend.__version__,
        "backend": backend_fingerprint(),
        "videos": [digest(v) for v in shot.videos],
        "calibration": None if shot.calibration is None else digest(shot.calibration),
        "head": shot.head if shot.head == "open" and not head.is_file() else digest(head),
        "options": options,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest's shots by name ({} when there is none or it is unreadable)."""
    try:
        shots = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8")).get("shots", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return shots if isinstance(shots, dict) else {}


def write_manifest(out_dir: Path, shots: dict[str, Any]) -> None:
    """Replace the manifest atomically (a killed driver leaves the previous one)."""
    partial = out_dir / f".{MANIFEST}.partial-{os.getpid()}"
    partial.write_text(json.dumps({"format": "facecap-batch", "format_version": 1, "shots": shots}, indent=1),
                       encoding="utf-8")
    partial.replace(out_dir / MANIFEST)


def result_digest(folder: Path) -> str | None:
    """sha256 hex over every file of a result folder (relative paths and contents); None
    when the folder has no report.json (not a finished result)."""
    if not (folder / "report.json").is_file():
        return None
    return folder_digest(folder, ("*",))


def is_finished(out_dir: Path, name: str, key: str, manifest: dict[str, Any]) -> bool:
    """True when ``out_dir/name`` holds the result this key produced, unchanged since."""
    entry = manifest.get(name)
    return (isinstance(entry, dict) and entry.get("status") == "ok" and entry.get("key") == key
            and entry.get("result_sha256") == result_digest(out_dir / name))
