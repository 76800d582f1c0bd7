"""Build the Blender add-on zips, byte-for-byte reproducibly.

    python build_addon.py [--out dist] [--wheels]

writes two zips holding the same add-on:

- ``facecap-VERSION-extension.zip``: a Blender 4.2+ extension (``blender_manifest.toml`` at the
  zip's root); install with Edit > Preferences > Get Extensions > Install from Disk, or
  ``blender --command extension install-file -r user_default FILE``.
- ``facecap-VERSION-legacy.zip``: a legacy add-on (folder ``facecap/`` with ``bl_info``) for
  Blender 3.4 to 4.1; install with Edit > Preferences > Add-ons > Install.

Both carry the backend's sources and pinned requirements under ``backend/`` (the add-on runs
them in the environment "Set up backend" creates). ``--wheels`` also downloads the backend's
wheels for this platform into ``backend/wheels/`` for offline installs.

Reproducible: files in sorted order, fixed timestamps and permissions, no caches.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
PACKAGE = "facecap"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".partial"}


def addon_version() -> str:
    manifest = (ADDON / "blender_manifest.toml").read_text(encoding="utf-8")
    found = re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.MULTILINE)
    if not found:
        raise SystemExit("blender_addon/blender_manifest.toml has no version")
    return found.group(1)


def tree(folder: Path) -> list[Path]:
    """Files under ``folder`` that belong in a package, sorted."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not EXCLUDED_PARTS & set(p.relative_to(folder).parts)
                  and p.suffix not in EXCLUDED_SUFFIXES)


def package_files(wheels: Path | None = None) -> dict[str, Path]:
    """Path inside the add-on -> file on disk."""
    files = {p.relative_to(ADDON).as_posix(): p for p in tree(ADDON)}
    for p in tree(ROOT / "fitter_backend"):
        if p.suffix == ".py":
            files[f"backend/{p.relative_to(ROOT).as_posix()}"] = p
    files["backend/requirements/backend.txt"] = ROOT / "requirements" / "backend.txt"
    files["backend/README.md"] = ROOT / "README.md"   # the add-on's Help button opens it
    for p in tree(ROOT / "onnx_models" / "models"):          # the shipped landmark networks (Dense)
        files[f"backend/{p.relative_to(ROOT).as_posix()}"] = p
    if wheels is not None:
        for p in tree(wheels):
            files[f"backend/wheels/{p.name}"] = p
    return files


def write_zip(path: Path, files: dict[str, Path], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(prefix + name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever builds it
            archive.writestr(info, files[name].read_bytes(), compresslevel=9)
    partial.replace(path)
    return path


def download_wheels(dest: Path) -> Path:
    """The backend's pinned wheels for this platform and Python (binary only)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
                    "-r", str(ROOT / "requirements" / "backend.txt")], check=True)
    return dest


def build(out: Path, wheels: bool = False) -> list[Path]:
    version = addon_version()
    with tempfile.TemporaryDirectory() as scratch:
        files = package_files(download_wheels(Path(scratch)) if wheels else None)
        suffix = "-wheels" if wheels else ""
        return [write_zip(out / f"{PACKAGE}-{version}-extension{suffix}.zip", files),
                write_zip(out / f"{PACKAGE}-{version}-legacy{suffix}.zip", files, prefix=f"{PACKAGE}/")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    parser.add_argument("--wheels", action="store_true", help="bundle the backend's wheels (offline installs)")
    args = parser.parse_args(argv)
    for path in build(args.out, args.wheels):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
