"""SYNTHETIC FLAME-format pickles for tests and benchmarks: no FLAME data in here.

No FLAME file may be shipped or fetched, so tests build files with FLAME's key names,
shapes, dtypes and pickle styles whose *content* is made up:

- the template is the open head shrink-wrapped onto a fixed mesh with FLAME's counts
  (5023 vertices, 9976 triangles: a 3931-vertex head shell open at the neck along a
  60-vertex loop, plus two 546-vertex eyeball spheres, as FLAME splits them); head-like
  enough for alignment, fitting and rendering, but not FLAME's topology;
- identity, expression and pose-corrective bases are random smooth fields (a few mm per
  unit coefficient); skin weights are copied from the nearest source vertex (source
  joints folded onto FLAME's) and joints sit near the source's neck, jaw and eyes.

Two pickle styles, as the real files come:

- ``"chumpy_py2"``: protocol 2 written as Python 2 wrote it (byte strings as STRING
  opcodes, ``numpy.core`` module names), with ``v_template``, ``shapedirs``, ``J``,
  ``weights`` and ``posedirs`` as ``chumpy.ch.Ch`` objects and ``J_regressor`` as an old
  ``scipy.sparse.csc.csc_matrix`` (FLAME 2020 ``generic_model.pkl``, ``flame2023.pkl``);
- ``"plain_py3"``: protocol 5 with plain arrays and a scipy sparse ``J_regressor``
  (FLAME 2023 Open ``flame2023_Open.pkl``).
"""
from __future__ import annotations

import copyreg
import pickle
import struct
import types
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse
from scipy.optimize import nnls
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, cKDTree

from fitter_backend.head_models.head_model import HeadModel

STYLES = ("chumpy_py2", "plain_py3")
#: FLAME's layout: identity in shapedirs[..., :300], expression from column 300 on.
FLAME_IDENTITY_COLUMNS = 300
HEAD_VERTICES = 3931
EYEBALL_VERTICES = 546
NECK_LOOP_VERTICES = 60
#: FLAME's kintree_table marks the root's parent with the largest uint32.
ROOT_PARENT = 2**32 - 1
KINTREE = np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)


def write_flame_pickle(path: str | Path, style: str, seed: int = 0, num_identity: int = 300,
                       num_expression: int = 100, source: HeadModel | None = None) -> Path:
    """Write a synthetic FLAME-format model pickle to ``path`` and return the path.

    ``source`` is the head whose shape the template takes (default: the open head).
    The same seed gives the same arrays in both styles. Expression columns follow the
    300 identity columns, so ``num_expression > 0`` needs ``num_identity == 300``.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not 1 <= num_identity <= FLAME_IDENTITY_COLUMNS or num_expression < 0 or (
            num_expression and num_identity != FLAME_IDENTITY_COLUMNS):
        raise ValueError(f"FLAME files hold 1..300 identity columns and expression only after all 300; "
                         f"got {num_identity} identity and {num_expression} expression")
    if source is None:
        from fitter_backend.head_models.open_head import load_open_head
        source = load_open_head()
    model = synthetic_flame_arrays(source, seed, num_identity, num_expression)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        if style == "plain_py3":
            pickle.dump(model, handle, protocol=5)
        else:
            dump_python2(_as_chumpy_py2(model), handle)
    return path


def synthetic_flame_arrays(source: HeadModel, seed: int = 0, num_identity: int = 300,
                           num_expression: int = 100) -> dict:
    """The dict a FLAME pickle holds, with FLAME's keys, shapes and dtypes (synthetic values)."""
    geometry = _synthetic_geometry(source)
    template, head = geometry["vertices"], geometry["head"]
    rng = np.random.default_rng(seed)
    front = _smoothstep((template[:, 2] - geometry["centre"][2]) / 0.04) * head
    identity = _smooth_fields(rng, geometry, num_identity, 0.004, np.ones(len(template)), rigid_eyes=True)
    expression = _smooth_fields(rng, geometry, num_expression, 0.003, front, rigid_eyes=False)
    posedirs = _smooth_fields(rng, geometry, 36, 0.001, head.astype(float), rigid_eyes=False)
    weights = _skin_weights(source, geometry)
    regressor = _joint_regressor(source, geometry)
    return {
        "v_template": template,
        "shapedirs": np.concatenate([identity, expression], axis=2),
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "J": regressor @ template,
        "weights": weights,
        "kintree_table": KINTREE.copy(),
        "f": geometry["triangles"].astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


# -- geometry ------------------------------------------------------------------------------
def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


_last_geometry: list = []  # [(source, geometry)]: tests write several files from one head


def _synthetic_geometry(source: HeadModel) -> dict:
    if not (_last_geometry and _last_geometry[0][0] is source):
        _last_geometry[:] = [(source, _build_geometry(source))]
    return _last_geometry[0][1]


def _build_geometry(source: HeadModel) -> dict:
    vertices = source.template.astype(np.float64)
    joints = source.joint_regressor.astype(np.float64) @ vertices
    eye_centres = joints[source.eyeball_joints]
    radii = source.eyeball_radii_m.astype(np.float64)
    # Rays start inside the skull: behind the eyes, halfway between face and back of head.
    eye_level = np.abs(vertices[:, 1] - eye_centres[:, 1].mean()) < 0.01
    centre = np.array([eye_centres[:, 0].mean(), eye_centres[:, 1].mean() - 0.01,
                       0.5 * (vertices[eye_level, 2].max() + vertices[eye_level, 2].min())])
    # The neck opening: the cone from the centre through the source's neck cut, widened a
    # little so that the rays along its rim still meet the neck.
    neck_cut = vertices[_lowest_boundary_loop(vertices, source.triangles)]
    axis = neck_cut.mean(0) - centre
    axis /= np.linalg.norm(axis)
    to_cut = (neck_cut - centre) / np.linalg.norm(neck_cut - centre, axis=1, keepdims=True)
    cap = np.arccos(np.clip(to_cut @ axis, -1, 1)).max() + np.radians(2)
    directions, shell = _capped_sphere(axis, cap, HEAD_VERTICES, NECK_LOOP_VERTICES)
    radius = _farthest_hits(centre, directions, vertices[source.triangles])
    head_vertices = centre + radius[:, None] * directions

    ball, ball_triangles = _sphere(EYEBALL_VERTICES)
    left = eye_centres[0] + radii[0] * ball
    right = eye_centres[1] + radii[1] * ball
    template = np.concatenate([head_vertices, left, right])
    triangles = np.concatenate([shell, ball_triangles + HEAD_VERTICES,
                                ball_triangles + HEAD_VERTICES + EYEBALL_VERTICES])
    part = np.repeat([0, 1, 2], [HEAD_VERTICES, EYEBALL_VERTICES, EYEBALL_VERTICES])
    return {"vertices": template, "triangles": triangles.astype(np.int64), "head": part == 0,
            "eye_left": part == 1, "eye_right": part == 2, "eye_centres": eye_centres,
            "centre": centre, "neck_loop": np.arange(NECK_LOOP_VERTICES)}


def _lowest_boundary_loop(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Vertex ids of the open boundary with the lowest centroid (a head's neck cut); the
    lowest centimetre of vertices when the mesh is closed."""
    edges, counts = np.unique(np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0,
                              return_counts=True)
    boundary = edges[counts == 1]
    if len(boundary) == 0:
        return np.flatnonzero(vertices[:, 1] < vertices[:, 1].min() + 0.01)
    graph = scipy.sparse.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])),
                                    shape=(len(vertices),) * 2)
    _, labels = connected_components(graph, directed=False)
    loops = [np.unique(boundary[labels[boundary[:, 0]] == label]) for label in np.unique(labels[boundary[:, 0]])]
    return min(loops, key=lambda ids: vertices[ids, 1].mean())


def _fibonacci_directions(count: int, cos_min: float, cos_max: float) -> np.ndarray:
    """``count`` near-uniform unit vectors (local frame, axis = +Z) with cos(angle) in a band."""
    k = np.arange(count) + 0.5
    cos_t = cos_max - (cos_max - cos_min) * k / count
    sin_t = np.sqrt(1 - cos_t**2)
    phi = k * np.pi * (3 - np.sqrt(5))
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def _frame(axis: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose third column is ``axis``."""
    helper = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(axis, e1), axis], axis=1)


def _hull_triangles(points: np.ndarray) -> np.ndarray:
    """Outward-facing triangles of points on a sphere about the origin."""
    triangles = ConvexHull(points).simplices
    a, b, c = (points[triangles[:, i]] for i in range(3))
    inward = np.einsum("nc,nc->n", np.cross(b - a, c - a), a + b + c) < 0
    triangles[inward] = triangles[inward][:, ::-1]
    return triangles


def _sphere(count: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed unit sphere: (count, 3) points, (2 count - 4, 3) triangles."""
    points = _fibonacci_directions(count, -1.0, 1.0)
    return points, _hull_triangles(points)


def _capped_sphere(axis: np.ndarray, cap: float, count: int, loop: int) -> tuple[np.ndarray, np.ndarray]:
    """A unit sphere open around ``axis``: the first ``loop`` directions form the opening's
    rim at angle ``cap``; returns (count, 3) directions and (2 count - 2 - loop, 3) triangles."""
    spacing = np.sqrt(4 * np.pi / count)
    angle = np.arange(loop) * 2 * np.pi / loop
    rim = np.stack([np.sin(cap) * np.cos(angle), np.sin(cap) * np.sin(angle),
                    np.full(loop, np.cos(cap))], axis=1)
    rest = _fibonacci_directions(count - loop, np.cos(cap + 0.5 * spacing), -1.0)[::-1]
    pole = np.array([[0.0, 0.0, 1.0]])
    local = np.concatenate([rim, rest, pole])
    triangles = _hull_triangles(local)
    triangles = triangles[~np.any(triangles == count, axis=1)]  # the pole closes the opening
    return local[:count] @ _frame(axis).T, triangles


def _farthest_hits(origin: np.ndarray, directions: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Distance to the farthest triangle each unit-direction ray from ``origin`` hits
    (Moller-Trumbore on the ray/triangle pairs whose directions can meet); rays that hit
    nothing take the distance of the nearest ray that did."""
    rel = corners - origin                                       # (T, 3 corners, 3)
    unit = rel / np.linalg.norm(rel, axis=2, keepdims=True)
    axis = unit.sum(1)
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    # A cap around ``axis`` through the farthest corner holds every direction that can hit
    # the triangle (while it is smaller than a hemisphere; larger ones take the sphere).
    chord = np.linalg.norm(unit - axis[:, None], axis=2).max(1)
    chord = np.where(chord < 1.2, chord * 1.001 + 1e-9, 2.0)
    rays_of = cKDTree(directions).query_ball_point(axis, chord)
    counts = np.array([len(r) for r in rays_of])
    tri = np.repeat(np.arange(len(corners)), counts)
    ray = np.concatenate([np.asarray(r, dtype=np.int64) for r in rays_of]) if counts.sum() else tri
    a, e1, e2 = rel[tri, 0], rel[tri, 1] - rel[tri, 0], rel[tri, 2] - rel[tri, 0]
    d = directions[ray]
    p = np.cross(d, e2)
    det = _rowdot(p, e1)
    s = -a  # origin relative to corner a
    q = np.cross(s, e1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v, t = _rowdot(p, s) / det, _rowdot(d, q) / det, _rowdot(q, e2) / det
    hit = (np.abs(det) > 1e-15) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    farthest = np.full(len(directions), -np.inf)
    np.maximum.at(farthest, ray[hit], t[hit])
    missed = ~np.isfinite(farthest)
    if missed.any():
        _, nearest = cKDTree(directions[~missed]).query(directions[missed])
        farthest[missed] = farthest[~missed][nearest]
    return farthest


def _rowdot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("nc,nc->n", x, y)


# -- bases, weights, joints ------------------------------------------------------------------
def _smooth_fields(rng: np.random.Generator, geometry: dict, count: int, scale_m: float,
                   falloff: np.ndarray, rigid_eyes: bool) -> np.ndarray:
    """(V, 3, count) random low-frequency displacement fields, ``scale_m`` RMS per unit
    coefficient for the first and decaying like PCA components; eyeballs either follow the
    field at their centre rigidly or stay still."""
    vertices = geometry["vertices"]
    features = 4
    frequency = rng.normal(size=(count, features, 3)) * 20.0  # rad/m: wavelengths of ~15 cm
    phase = rng.uniform(0, 2 * np.pi, (count, features))
    amplitude = rng.normal(size=(count, features, 3))
    decay = scale_m / np.sqrt(1.0 + np.arange(count) / 10.0)

    def field(points: np.ndarray) -> np.ndarray:
        waves = np.sin((points @ frequency.reshape(-1, 3).T).reshape(len(points), count, features) + phase)
        per_component = np.matmul(waves.transpose(1, 0, 2), amplitude)  # (count, V, 3)
        return per_component.transpose(1, 2, 0) * (decay / np.sqrt(features / 2))

    fields = field(vertices) * falloff[:, None, None]
    for name, centre in zip(("eye_left", "eye_right"), geometry["eye_centres"]):
        mask = geometry[name]
        fields[mask] = field(centre[None])[0] if rigid_eyes else 0.0
    return fields


def _skin_weights(source: HeadModel, geometry: dict) -> np.ndarray:
    """(V, 5) weights: each shell vertex copies the nearest source vertex's weights, the
    source joints folded onto FLAME's (root -> global, jaw -> jaw, every other joint ->
    neck); each eyeball is rigid on its eye joint and only the eyeballs are."""
    num_joints = source.num_joints
    flame_joint = np.ones(num_joints, dtype=np.int64)
    flame_joint[0] = 0
    flame_joint[source.joint_index("jaw")] = 2
    fold = np.zeros((num_joints, 5))
    fold[np.arange(num_joints), flame_joint] = 1.0
    vertices = geometry["vertices"]
    _, nearest = cKDTree(source.template).query(vertices)
    weights = source.skin_weights.astype(np.float64)[nearest] @ fold
    for name, joint in (("eye_left", 3), ("eye_right", 4)):
        weights[geometry[name]] = np.eye(5)[joint]
    return weights / weights.sum(1, keepdims=True)


def _joint_regressor(source: HeadModel, geometry: dict) -> np.ndarray:
    """(5, V) rows: the neck loop's mean (global), convex combinations of shell vertices
    that reproduce a point halfway up from the neck loop to the source's jaw joint (neck)
    and the source's jaw joint (jaw), each eyeball's mean (eyes)."""
    vertices = geometry["vertices"]
    head = np.flatnonzero(geometry["head"])
    source_joints = source.joint_regressor.astype(np.float64) @ source.template.astype(np.float64)
    jaw = source_joints[source.joint_index("jaw")]
    regressor = np.zeros((5, len(vertices)))
    for j, ids in ((0, geometry["neck_loop"]), (3, np.flatnonzero(geometry["eye_left"])),
                   (4, np.flatnonzero(geometry["eye_right"]))):
        regressor[j, ids] = 1.0 / len(ids)
    for j, target in ((1, 0.5 * (vertices[geometry["neck_loop"]].mean(0) + jaw)), (2, jaw)):
        band = head[np.abs(vertices[head, 1] - target[1]) < 0.01]  # a slice of the head around it
        regressor[j, band] = _convex_weights(vertices[band], target)
    return regressor


def _convex_weights(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N,) non-negative weights summing to 1 whose combination of ``points`` is closest to
    ``target`` (exact when it lies inside their convex hull)."""
    rows = np.vstack([points.T, np.full(len(points), 10.0)])  # the sum-to-one row weighs most
    weights, _ = nnls(rows, np.append(target, 10.0))
    return weights / weights.sum()


# -- the Python 2 / chumpy pickle style ------------------------------------------------------
class _ChumpyCh:
    """Written as ``chumpy.ch.Ch``: chumpy pickles its ``__dict__`` without the weak
    references, so the state holds the value 'x' and bookkeeping (a set among it)."""

    def __init__(self, x: np.ndarray):
        self.state = {"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False,
                      "_make_sparse": False, "x": x}

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class _OldCscMatrix:
    """Written as ``scipy.sparse.csc.csc_matrix`` with the attribute dict old scipy pickled."""

    def __init__(self, matrix: scipy.sparse.csc_matrix):
        self.state = {"_shape": matrix.shape, "data": matrix.data, "indices": matrix.indices.astype(np.int32),
                      "indptr": matrix.indptr.astype(np.int32), "format": "csc", "maxprint": 50}

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


def dump_python2(obj: object, file: BinaryIO) -> None:
    """Pickle ``obj`` as Python 2's cPickle did at protocol 2 (see :class:`_Python2Pickler`)."""
    _Python2Pickler(file, protocol=2).dump(obj)


_PY2_GLOBALS = {_ChumpyCh: ("chumpy.ch", "Ch"), _OldCscMatrix: ("scipy.sparse.csc", "csc_matrix")}


def _as_chumpy_py2(model: dict) -> dict:
    converted = dict(model)
    for key in ("v_template", "shapedirs", "J", "weights", "posedirs"):
        converted[key] = _ChumpyCh(model[key])
    converted["J_regressor"] = _OldCscMatrix(model["J_regressor"])
    return converted


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: str and bytes become Python 2 byte strings (read
    back with encoding='latin1'), globals use numpy 1's ``numpy.core`` names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


    def save_global(self, obj, name=None) -> None:
        module, qualname = _PY2_GLOBALS.get(obj, (obj.__module__, name or obj.__qualname__))
        module = "__builtin__" if module == "builtins" else module.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[types.FunctionType] = save_global
