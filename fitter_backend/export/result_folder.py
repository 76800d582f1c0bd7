"""Where a job's results go, and how they get there without harming anything else.

The promises (README, "Reliability"):

- A result folder is written beside its final place (``.NAME.partial-PID``) and renamed into
  place at the end, so a folder the job wrote is always complete.
- Only an empty folder or a folder that is recognisably an earlier facecap result (its files
  are all names a job writes, see :data:`RESULT_NAMES`) is ever replaced. Anything else, a
  symbolic link, a folder holding one of the job's inputs, ``/`` or a file is refused before
  any work starts, with a message naming the path.
- The replacement happens under an exclusive lock on the parent folder (two jobs racing for
  one folder take turns), and a run killed between its two renames is repaired by the next
  run: the hidden ``.NAME.old-PID`` earlier result is moved back when nothing replaced it.
  Partial folders of dead processes are removed.
- Folders above the result that did not exist are created only when the results are
  written, and removed again when writing fails.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from fitter_backend.errors import FacecapError
from fitter_backend.paths import opencv_path

#: Every name a job writes at the top of its result folder (pipeline, export, server).
RESULT_NAMES = frozenset({"landmarks.npz", "fit.npz", "fit.json", "report.json", "previews", "rig.npz",
                          "animation.npz", "result.json", "calibration.json"})
#: Files of which one marks a folder as an earlier result.
RESULT_MARKERS = ("report.json", "result.json")
_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")


class OutputError(FacecapError):
    """The result folder cannot be used: the message names it and says why."""


def is_earlier_result(folder: Path) -> bool:
    """True for a folder holding only what a facecap job writes, including a report or manifest."""
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except OSError:
        return False
    return bool(names) and names <= RESULT_NAMES and any(marker in names for marker in RESULT_MARKERS)


def _absolute(path: Path) -> Path:
    """The path with its parent resolved (symbolic links, ``..``), its last part kept as given:
    a symbolic link at the result's own place is seen, not followed."""
    text = os.fsdecode(os.fspath(path))
    absolute = Path(os.path.abspath(text))  # lexical: drops "." and trailing "/"
    if absolute == Path(absolute.anchor):
        raise OutputError(f"result folder {text!r} is the root of the filesystem; choose a folder for the results")
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path):
        path = path.parent
    return path


def check_output(out: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (),
                 replace_results: bool = True) -> Path:
    """The result folder as an absolute path, checked before any work starts.

    Refused (OutputError): a symbolic link, a file, the root, a folder holding any of
    ``inputs``, a non-empty folder that is not an earlier result (with ``replace_results``
    False: any non-empty folder), a place under a file or on a filesystem that cannot be
    written. Creates nothing.
    """
    target = _absolute(Path(out))
    opencv_path(target)  # the overlay video is written through OpenCV
    if target.is_symlink():
        raise OutputError(f"result folder {target} is a symbolic link; give the folder it points to instead")
    if target.exists() and not target.is_dir():
        raise OutputError(f"result folder {target} is a file; expected a folder for the results")
    for source in inputs:
        source_path = Path(os.path.realpath(os.fsdecode(os.fspath(source))))
        if source_path == target or target in source_path.parents:
            raise OutputError(f"result folder {target} holds the input {source}; choose a folder of its own")
    if target.is_dir() and any(target.iterdir()):
        if not replace_results:
            raise OutputError(f"result folder {target} already exists and is not empty; choose a new folder")
        if not is_earlier_result(target):
            raise OutputError(f"result folder {target} already holds files that are not an earlier facecap "
                              "result; choose a new or empty folder (nothing was changed)")
    existing = _nearest_existing(target.parent)
    if not existing.is_dir():
        raise OutputError(f"cannot write the result folder {target}: {existing} is a file, not a folder")
    try:  # the honest test of writability (root ignores permission bits; /proc and read-only mounts refuse)
        Path(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=existing)).rmdir()
    except OSError as error:
        raise OutputError(f"cannot write the result folder {target}: {error.strerror or error} "
                          f"in {existing}") from None
    return target


def make_parents(target: Path) -> list[Path]:
    """Create the missing folders above ``target``; returns those created, outermost first."""
    created = []
    for folder in reversed(target.parents):
        if not folder.exists():
            folder.mkdir()
            created.append(folder)
    return created


def remove_created(created: list[Path]) -> None:
    """Remove folders :func:`make_parents` created, innermost first, where they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _parent_locked(target: Path) -> Iterator[None]:
    """An exclusive lock on the result's parent folder (a flock on the folder itself: no file left)."""
    handle = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _recover(target: Path) -> None:
    """With the parent locked: repair what killed runs left beside ``target``. An ``old`` folder
    is an earlier result a run moved aside (no run holds the lock, so none is mid-replace): put
    back when nothing replaced it, else removed. A dead process's ``partial`` is removed."""
    for entry in sorted(target.parent.iterdir()):
        match = _STALE.match(entry.name)
        if not match or match["name"] != target.name or not entry.is_dir() or entry.is_symlink():
            continue
        if match["kind"] == "old":
            if not os.path.lexists(target):
                entry.rename(target)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def staging_folder(target: Path) -> Path:
    """A fresh hidden sibling of ``target`` to write the results into (parents must exist)."""
    with _parent_locked(target):
        _recover(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


def publish(partial: Path, target: Path, replace_results: bool = True) -> None:
    """Move a finished result into place, replacing an earlier result (or empty folder) only now.

    Under the parent's lock; the earlier result is moved aside, the new one renamed in and
    the earlier one deleted last. A run killed in between leaves ``.NAME.old-PID``, which
    the next run puts back (see :func:`_recover`).
    """
    with _parent_locked(target):
        _recover(target)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise OutputError(f"result folder {target} was replaced by a file or link while the job ran; "
                              "nothing was changed")
        if target.is_dir():
            if any(target.iterdir()) and not (replace_results and is_earlier_result(target)):
                raise OutputError(f"result folder {target} gained files that are not a facecap result while "
                                  "the job ran; nothing was changed")
            target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)
