"""Wavefront OBJ export and import of triangle meshes (positions, optional normals).

Written files hold ``v`` rows, optional ``vn`` rows (one per vertex) and 1-based ``f``
rows; reading accepts the common subset of the format (``v/vt/vn`` corners, negative
indices, polygons, which are split into triangle fans) and ignores everything else.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from fitter_backend.errors import HeadModelError


def write_obj(path: str | Path, vertices: np.ndarray, triangles: np.ndarray,
              normals: np.ndarray | None = None) -> Path:
    """Write (V, 3) vertices, (F, 3) triangles and optional (V, 3) normals; atomic rename."""
    path = Path(path)
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
        raise HeadModelError(f"cannot write {path}: vertices must be finite with shape (V, 3), got {vertices.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise HeadModelError(f"cannot write {path}: triangles must have shape (F, 3), got {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise HeadModelError(f"cannot write {path}: triangle indices must lie in [0, {len(vertices)})")
    text = io.StringIO()
    text.write("# written by facecap\n")
    np.savetxt(text, vertices, fmt="v %.6f %.6f %.6f")
    faces = triangles.astype(np.int64) + 1
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != vertices.shape:
            raise HeadModelError(f"cannot write {path}: normals have shape {normals.shape}, expected {vertices.shape}")
        np.savetxt(text, normals, fmt="vn %.6f %.6f %.6f")
        np.savetxt(text, np.repeat(faces, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")
    else:
        np.savetxt(text, faces, fmt="f %d %d %d")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text.getvalue(), encoding="ascii")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an OBJ's positions and faces: (V, 3) float64 vertices, (F, 3) int64 triangles."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise HeadModelError(f"OBJ file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadModelError(f"cannot read OBJ file {path}: {exc}") from None
    vertices: list[list[float]] = []
    triangles: list[list[int]] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] not in ("v", "f"):
            continue  # comments, vt, vn, groups, materials, smoothing

        def fail(expected: str) -> HeadModelError:
            return HeadModelError(f"{path}, line {number}: expected {expected}, got {line.strip()!r}")

        if fields[0] == "v":
            try:
                position = [float(x) for x in fields[1:4]]
            except ValueError:
                raise fail("'v X Y Z' with numbers") from None
            if len(position) != 3:
                raise fail("'v X Y Z' with numbers")
            vertices.append(position)
            continue
        try:
            corners = [int(corner.split("/")[0]) for corner in fields[1:]]
        except ValueError:
            raise fail("'f' with three or more vertex indices") from None
        if len(corners) < 3:
            raise fail("'f' with three or more vertex indices")
        # 1-based; negative indices count back from the latest vertex; 0 lands out of range.
        corners = [c - 1 if c > 0 else len(vertices) + c for c in corners]
        if any(not 0 <= c < len(vertices) for c in corners):
            raise fail(f"vertex indices between 1 and {len(vertices)} (vertices defined so far)")
        triangles.extend([corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1))
    if not vertices:
        raise HeadModelError(f"{path} holds no 'v' vertex lines: is it an OBJ file?")
    return np.array(vertices, dtype=np.float64), np.array(triangles, dtype=np.int64).reshape(-1, 3)
