"""Where the backend keeps files it builds: the user data folder, never the repository."""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The user data folder: $FACECAP_DATA, else $XDG_DATA_HOME/facecap, else ~/.local/share/facecap."""
    explicit = os.environ.get("FACECAP_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "facecap"


def open_head_path() -> Path:
    """The built open head model file."""
    return data_dir() / "heads" / "open_head.npz"


def downloads_dir() -> Path:
    """Third-party packages fetched from registries by the set-up step."""
    return data_dir() / "downloads"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks (downloads, caches and result manifests)."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def opencv_path(path: str | os.PathLike) -> str:
    """``path`` as OpenCV may take it. OpenCV encodes a path as UTF-8 and crashes (SIGSEGV) on
    one that holds bytes that are not UTF-8 (Python carries them as lone surrogates): those are
    refused here, naming the path, before they reach it."""
    from fitter_backend.errors import FacecapError
    text = os.fsdecode(os.fspath(path))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise FacecapError(f"the path '{shown}' holds bytes that are not UTF-8 text, which OpenCV cannot "
                           "open; rename it") from None
    return text
