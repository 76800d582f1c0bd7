"""Cut the head and neck out of the hm08 base mesh and triangulate it.

Kept parts: the skin of the ``body`` group above a neck edge loop, the eyeball helper
spheres, the upper/lower teeth helpers and the tongue helper (for renders of an open mouth).
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.open_head.makehuman import BaseMesh

#: The neck is cut along the closed quad edge loop through these two neighbouring base-mesh
#: vertices: the 42-vertex ring just above the trapezius, at the larynx base in front.
NECK_LOOP_START = (809, 7518)
#: A skin vertex on top of the skull: the flood fill of kept skin starts there.
CROWN_VERTEX_GROUP = "joint-head-2"

#: Kept parts: name -> OBJ group of the base mesh.
HELPER_PARTS = {
    "eyeball_left": "helper-l-eye",
    "eyeball_right": "helper-r-eye",
    "teeth_upper": "helper-upper-teeth",
    "teeth_lower": "helper-lower-teeth",
    "tongue": "helper-tongue",
}


@dataclasses.dataclass(frozen=True)
class HeadMesh:
    """The kept sub-mesh; V kept vertices, F triangles.

    vertex_ids: (V,) base-mesh index of each kept vertex.
    triangles: (F, 3) indices into the kept vertices.
    parts: name -> (V,) bool; "skin" plus the keys of HELPER_PARTS.
    neck_loop: (L,) kept-vertex indices of the cut, in loop order.
    vertex_uvs: (V, 2) one texture coordinate per vertex (the first corner that uses it).
    """

    vertex_ids: np.ndarray
    triangles: np.ndarray
    parts: dict[str, np.ndarray]
    neck_loop: np.ndarray
    vertex_uvs: np.ndarray


def quad_edge_loop(quads: np.ndarray, start: int, second: int) -> np.ndarray:
    """The edge loop through the edge (start, second) of a quad mesh, walked until it closes.

    At every (valence 4) vertex the loop continues along the edge that shares no quad with
    the edge it arrived on.
    """
    vertex_quads = collections.defaultdict(list)
    for q, quad in enumerate(quads):
        for v in quad:
            vertex_quads[int(v)].append(q)

    def neighbours(v: int, quad_ids) -> set[int]:
        out = set()
        for q in quad_ids:
            quad = list(quads[q])
            i = quad.index(v)
            out.update((int(quad[i - 1]), int(quad[(i + 1) % 4])))
        return out

    loop = [start, second]
    previous, current = start, second
    while len(loop) <= len(quads):
        around = vertex_quads[current]
        beside = [q for q in around if previous in quads[q]]
        candidates = neighbours(current, around) - neighbours(current, beside) - {previous}
        if len(around) != 4 or len(candidates) != 1:
            raise HeadModelError(f"base.obj: the neck edge loop through {NECK_LOOP_START} does not continue "
                                 f"at vertex {current}")
        previous, current = current, candidates.pop()
        if current == start:
            return np.array(loop)
        loop.append(current)
    raise HeadModelError(f"base.obj: the neck edge loop through {NECK_LOOP_START} does not close")


def flood_fill_quads(quads: np.ndarray, seed_vertex: int, barrier: np.ndarray) -> np.ndarray:
    """(F,) bool: quads reachable from ``seed_vertex`` across edges not on the barrier loop."""
    barrier_edges = {frozenset(e) for e in zip(barrier, np.roll(barrier, -1))}
    edge_quads = collections.defaultdict(list)
    for q, quad in enumerate(quads):
        for a, b in zip(quad, np.roll(quad, -1)):
            edge_quads[frozenset((int(a), int(b)))].append(q)
    reached = np.zeros(len(quads), dtype=bool)
    todo = [q for q, quad in enumerate(quads) if seed_vertex in quad]
    reached[todo] = True
    while todo:
        quad = quads[todo.pop()]
        for a, b in zip(quad, np.roll(quad, -1)):
            edge = frozenset((int(a), int(b)))
            if edge in barrier_edges:
                continue
            for other in edge_quads[edge]:
                if not reached[other]:
                    reached[other] = True
                    todo.append(other)
    return reached


def triangulate(quads: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(F, 4) quads -> (2F, 3) triangles, each quad split along its shorter diagonal."""
    p = vertices[quads]
    split_02 = (np.linalg.norm(p[:, 0] - p[:, 2], axis=1) <= np.linalg.norm(p[:, 1] - p[:, 3], axis=1))[:, None]
    first = np.where(split_02, quads[:, [0, 1, 2]], quads[:, [0, 1, 3]])
    second = np.where(split_02, quads[:, [0, 2, 3]], quads[:, [1, 2, 3]])
    return np.concatenate([first, second])


def cut_head(mesh: BaseMesh, groups: dict[str, np.ndarray]) -> HeadMesh:
    """The head-and-neck sub-mesh with its helper parts."""
    body = mesh.quad_groups == "body"
    body_quads = mesh.quads[body]
    neck_loop = quad_edge_loop(body_quads, *NECK_LOOP_START)
    crown = groups[CROWN_VERTEX_GROUP]
    crown_vertex = int(np.unique(body_quads)[np.argmin(np.linalg.norm(
        mesh.vertices[np.unique(body_quads)] - mesh.vertices[crown].mean(0), axis=1))])
    skin = flood_fill_quads(body_quads, crown_vertex, neck_loop)
    kept = {"skin": np.flatnonzero(body)[skin]}
    for part, group in HELPER_PARTS.items():
        kept[part] = np.flatnonzero(mesh.quad_groups == group)
    quad_ids = np.concatenate(list(kept.values()))
    vertex_ids = np.unique(mesh.quads[quad_ids])
    if len(np.intersect1d(mesh.quads[kept["skin"]], neck_loop)) != len(neck_loop):
        raise HeadModelError("base.obj: the neck cut does not bound the kept skin")
    new_index = np.full(len(mesh.vertices), -1)
    new_index[vertex_ids] = np.arange(len(vertex_ids))
    parts = {}
    for part, quads in kept.items():
        mask = np.zeros(len(vertex_ids), dtype=bool)
        mask[new_index[np.unique(mesh.quads[quads])]] = True
        parts[part] = mask
    # One UV per vertex: corners of the same vertex differ only across seams.
    vertex_uvs = np.zeros((len(vertex_ids), 2))
    corner_vertices = new_index[mesh.quads[quad_ids]].ravel()
    corner_uvs = mesh.uvs[mesh.quad_uvs[quad_ids]].reshape(-1, 2)
    vertex_uvs[corner_vertices[::-1]] = corner_uvs[::-1]
    triangles = new_index[triangulate(mesh.quads[quad_ids], mesh.vertices)]
    return HeadMesh(vertex_ids, triangles.astype(np.int32), parts, new_index[neck_loop], vertex_uvs)
