"""FLAME model files (the user's own) read into the generic :class:`HeadModel`.

Reads FLAME 2020 ``generic_model.pkl``, ``flame2023.pkl``, ``flame2023_no_jaw.pkl``
(Python 2 pickles with chumpy objects) and FLAME 2023 Open ``flame2023_Open.pkl`` (a plain
Python 3 pickle) through :func:`safe_pickle.safe_load`, so no code in the file ever runs.

Conversion: joints global, neck, jaw, eye_L, eye_R with parents from ``kintree_table``;
identity = ``shapedirs[..., :300]`` with prior N(0, I) (FLAME's coefficients are already in
units of standard deviations); expression = ``shapedirs[..., 300:]`` named exp000...;
pose correctives = ``posedirs`` as is (driven by R_k - I of joints 1..4, smplx's layout).
Regions and semantic points are not FLAME's (its masks and landmark embeddings are not
licensed for this project): they are transferred from the open head
(:func:`correspondence.transfer_annotations`).

The converted model is cached as ``<file>.facecap-<hash>.npz`` beside the user's file (in
``data_dir()/heads`` when that folder is read-only), records the source's sha256 and size,
is rebuilt when the source changes, and is re-validated on every load.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fitter_backend import paths
from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.correspondence import transfer_annotations
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.safe_pickle import as_array, safe_load

FLAME_JOINT_NAMES = ("global", "neck", "jaw", "eye_L", "eye_R")
#: FLAME names joint 3 the left eye and joint 4 the right eye.
FLAME_EYE_JOINTS = (3, 4)
#: shapedirs holds identity in its first 300 columns and expression after them.
FLAME_IDENTITY_COLUMNS = 300
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
EXPECTED = ("a FLAME model pickle (generic_model.pkl, flame2023.pkl, flame2023_no_jaw.pkl or "
            "flame2023_Open.pkl) with keys " + ", ".join(REQUIRED_KEYS))
DEFAULT_EYEBALL_RADIUS_M = 0.012
#: Regions of the annotation source that describe parts FLAME does not have.
FLAME_LACKS = ("teeth", "tongue")
#: Bump when the conversion changes: older caches are then ignored and rebuilt.
CONVERTER_VERSION = 1
_CACHE_RECORD = "flame_source"


def load_flame(path: str | Path, num_identity: int = 300, num_expression: int = 100, use_cache: bool = True,
               annotation_source: HeadModel | None = None) -> HeadModel:
    """The FLAME model in ``path`` as a validated HeadModel with the first ``num_identity``
    identity and ``num_expression`` expression components.

    Asking for more components than the file has uses all it has, with a warning.
    ``annotation_source`` is the head whose regions and semantic points are transferred
    (default: the open head). Every problem with the file raises one HeadModelError that
    names it and says what was expected.
    """
    path = Path(path).expanduser()
    for value, what in ((num_identity, "num_identity"), (num_expression, "num_expression")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise HeadModelError(f"{what} must be a non-negative whole number, got {value!r}")
    if path.is_dir():
        raise HeadModelError(f"{path} is a folder; expected {EXPECTED}")
    if not path.is_file():
        raise HeadModelError(f"FLAME model file not found: {path} (expected {EXPECTED})")
    if annotation_source is None:
        from fitter_backend.head_models.open_head import load_open_head
        annotation_source = load_open_head()
    source = {"sha256": paths.sha256_file(path), "size": path.stat().st_size, "converter": CONVERTER_VERSION,
              "annotations": annotation_fingerprint(annotation_source)}
    model = _read_cache(path, source) if use_cache else None
    if model is None:
        model = convert_flame(path, annotation_source, source["sha256"])
        if use_cache:
            _write_cache(model, path, source)
    return _truncate(model, num_identity, num_expression, path)


def convert_flame(path: Path, annotation_source: HeadModel, sha256: str = "") -> HeadModel:
    """Read a FLAME file into a HeadModel with all the components it has (no cache)."""
    arrays = read_flame_arrays(path)
    template = arrays["v_template"]
    shapedirs, posedirs = arrays["shapedirs"], arrays["posedirs"]
    regressor = _normalised_rows(arrays["J_regressor"], "J_regressor", path)
    weights = _normalised_rows(arrays["weights"], "weights", path)
    triangles = arrays["f"].astype(np.int32)
    joints = regressor @ template
    radii = np.array([_eyeball_radius(template, weights[:, j], joints[j]) for j in FLAME_EYE_JOINTS])
    # Align to and place points on the skin, not on the eyeballs behind the lids.
    on_eyeball = weights[:, list(FLAME_EYE_JOINTS)].sum(1) > 0.5
    skin_triangles = ~on_eyeball[triangles].all(1)
    regions, semantic_points = transfer_annotations(annotation_source, template, triangles, skin_triangles)
    # FLAME has no teeth or tongue; its eyeballs are the vertices skinned to the eye joints.
    regions = {name: mask & ~on_eyeball for name, mask in regions.items() if name not in FLAME_LACKS}
    regions["eyeballs"] = on_eyeball
    num_identity = min(shapedirs.shape[2], FLAME_IDENTITY_COLUMNS)
    expression = shapedirs[:, :, FLAME_IDENTITY_COLUMNS:]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    digest = f", sha256 {sha256}" if sha256 else ""
    model = HeadModel(
        name=f"FLAME ({path.name})",
        template=f32(template),
        identity_basis=f32(shapedirs[:, :, :num_identity]),
        expression_basis=f32(expression),
        expression_names=tuple(f"exp{k:03d}" for k in range(expression.shape[2])),
        pose_correctives=f32(posedirs),
        joint_regressor=f32(regressor),
        joint_parents=arrays["parents"],
        joint_names=FLAME_JOINT_NAMES,
        skin_weights=f32(weights),
        triangles=triangles,
        eyeball_joints=np.array(FLAME_EYE_JOINTS, dtype=np.int32),
        eyeball_radii_m=f32(radii),
        regions=regions,
        semantic_points=semantic_points,
        identity_prior_weights=np.ones(1, np.float32),
        identity_prior_means=np.zeros((1, num_identity), np.float32),
        identity_prior_stds=np.ones((1, num_identity), np.float32),
        attribution=(f"FLAME (Li, Bolkart, Black, Li, Romero, SIGGRAPH Asia 2017) from the user's own file "
                     f"{path.name}{digest}, under the license that came with it (FLAME 2023 Open: "
                     f"CC-BY-4.0). Regions and semantic points transferred from '{annotation_source.name}'."),
    )
    return model.validate(path)


def read_flame_arrays(path: Path) -> dict[str, np.ndarray]:
    """The FLAME arrays of ``path`` as float64/int arrays with checked shapes, plus
    ``parents`` (J,) int32 from ``kintree_table``."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"PK"):
        raise HeadModelError(_describe_archive(path))
    data = safe_load(path, expected=EXPECTED)
    if not isinstance(data, dict):
        raise HeadModelError(f"{path} holds a {type(data).__name__}; expected {EXPECTED}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise HeadModelError(f"{path} lacks {missing} (it has {sorted(map(str, data))[:12]}); expected {EXPECTED}")
    def fail(message: str) -> None:
        raise HeadModelError(f"{path} is not a usable FLAME model: {message}")

    try:
        arrays = {key: as_array(data[key], f"'{key}'") for key in REQUIRED_KEYS}
    except HeadModelError as exc:
        fail(str(exc))

    num_vertices = arrays["v_template"].shape[0]
    num_joints = len(FLAME_JOINT_NAMES)
    expected_shapes = {
        "v_template": (None, 3), "shapedirs": (num_vertices, 3, None),
        "posedirs": (num_vertices, 3, 9 * (num_joints - 1)), "J_regressor": (num_joints, num_vertices),
        "weights": (num_vertices, num_joints), "kintree_table": (2, num_joints), "f": (None, 3),
    }
    for key, shape in expected_shapes.items():
        actual = arrays[key].shape
        if len(actual) != len(shape) or any(e is not None and a != e for a, e in zip(actual, shape)):
            wanted = tuple("*" if e is None else e for e in shape)
            fail(f"'{key}' has shape {actual}, expected {wanted} (FLAME: V = 5023 vertices, {num_joints} joints)")
        kind = "iu" if key in ("kintree_table", "f") else "iuf"
        if arrays[key].dtype.kind not in kind:
            fail(f"'{key}' holds {arrays[key].dtype} values, expected numbers")
        if arrays[key].dtype.kind == "f" and not np.all(np.isfinite(arrays[key])):
            fail(f"'{key}' contains NaN or infinite values")
    if arrays["shapedirs"].shape[2] == 0 or num_vertices == 0:
        fail("it has no vertices or no shape components")
    faces = arrays["f"]
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        fail(f"'f' indexes vertices outside 0..{num_vertices - 1}")
    kintree = arrays["kintree_table"].astype(np.int64)
    if not np.array_equal(kintree[1], np.arange(num_joints)):
        fail(f"'kintree_table' lists joints {kintree[1].tolist()}, expected 0..{num_joints - 1} in order")
    parents = np.where((kintree[0] < 0) | (kintree[0] >= num_joints), -1, kintree[0]).astype(np.int32)
    if parents[0] != -1 or any(not 0 <= parents[k] < k for k in range(1, num_joints)):
        fail(f"'kintree_table' parents {kintree[0].tolist()} do not form a tree rooted at joint 0")
    out = {key: arrays[key].astype(np.float64) for key in ("v_template", "shapedirs", "posedirs",
                                                           "J_regressor", "weights")}
    out["f"], out["parents"] = faces.astype(np.int64), parents
    return out


def _describe_archive(path: Path) -> str:
    """Why a zip (or .npz) file is not a FLAME model, naming what it seems to be."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return f"{path} starts like a zip archive but cannot be read; expected {EXPECTED}"
    entries = [name[:-4] for name in names if name.endswith(".npy")]
    if len(entries) < len(names):
        pickles = [name for name in names if name.endswith(".pkl")]
        hint = f"; unpack it and pass one of {pickles[:4]}" if pickles else ""
        return f"{path} is a zip archive holding {names[:6]}{hint}; expected {EXPECTED}"
    hint = ""
    if {"tex_dir", "mean"} <= set(entries) or {"vt", "ft"} <= set(entries):
        hint = " (it looks like a FLAME texture model, not the shape model)"
    elif "meta_json" in entries:
        hint = " (it looks like an already converted facecap head model)"
    return f"{path} is a NumPy .npz archive with entries {entries[:8]}{hint}; expected {EXPECTED}"


def _normalised_rows(matrix: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Rows scaled to sum to 1 (FLAME's do up to rounding); negative or empty rows fail."""
    sums = matrix.sum(1, keepdims=True)
    if np.any(sums <= 1e-6) or np.any(matrix < -1e-6):
        raise HeadModelError(f"{path} is not a usable FLAME model: '{key}' has rows that are empty or "
                             "negative, expected non-negative rows summing to 1")
    return matrix / sums


def _eyeball_radius(template: np.ndarray, eye_weights: np.ndarray, centre: np.ndarray) -> float:
    """Mean distance of the vertices skinned (almost) only to an eye joint to that joint."""
    ball = template[eye_weights > 0.95]
    if len(ball) < 20:
        return DEFAULT_EYEBALL_RADIUS_M
    return float(np.mean(np.linalg.norm(ball - centre, axis=1)))


def _truncate(model: HeadModel, num_identity: int, num_expression: int, path: Path) -> HeadModel:
    counts = []
    for asked, available, what in ((num_identity, model.num_identity, "identity"),
                                   (num_expression, model.num_expression, "expression")):
        if asked > available:
            warnings.warn(f"{path.name} has {available} {what} components; using {available} instead of "
                          f"the {asked} asked for", stacklevel=3)
        counts.append(min(asked, available))
    return model.truncated(*counts)


# -- the cache -------------------------------------------------------------------------------
def annotation_fingerprint(model: HeadModel) -> str:
    """Short digest of what annotation transfer reads from a head model."""
    digest = hashlib.sha256(model.name.encode())
    for array in (model.template, model.triangles, model.semantic_points.triangle,
                  model.semantic_points.barycentric, *(model.regions[k] for k in sorted(model.regions))):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("|".join(model.semantic_points.names).encode())
    return digest.hexdigest()[:16]


def cache_paths(path: Path) -> list[Path]:
    """Where the converted model of ``path`` is cached: beside it, else in the data folder."""
    path = Path(path).expanduser().resolve()
    key = hashlib.sha256(f"{CONVERTER_VERSION}|{path}".encode()).hexdigest()[:12]
    name = f"{path.name}.facecap-{key}.npz"
    return [path.with_name(name), paths.data_dir() / "heads" / name]




def _read_cache(path: Path, source: dict) -> HeadModel | None:
    """The cached model when one matches ``source``; stale or damaged caches are ignored
    (with a warning for damaged ones) and rebuilt by the caller."""
    for cache in cache_paths(path):
        if not cache.is_file():
            continue
        try:
            with np.load(cache, allow_pickle=False) as archive:
                record = json.loads(archive[_CACHE_RECORD].tobytes().decode())
            if record != source:
                continue
            return HeadModel.load_npz(cache)
        except (HeadModelError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring the damaged FLAME cache {cache} and converting {path.name} again ({exc})",
                          stacklevel=3)
    return None


def _write_cache(model: HeadModel, path: Path, source: dict) -> Path | None:
    """Save the model with its source record; None (with a warning) when no folder is writable."""
    record = np.frombuffer(json.dumps(source).encode(), dtype=np.uint8)
    problems = []
    for cache in cache_paths(path):
        building = cache.with_name(f"{cache.name}.{os.getpid()}.building.npz")
        try:
            model.save_npz(building)
            with zipfile.ZipFile(building, "a") as archive:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, record, allow_pickle=False)
                archive.writestr(_CACHE_RECORD + ".npy", buffer.getvalue())
            building.replace(cache)
            return cache
        except OSError as exc:
            try:
                building.unlink(missing_ok=True)
            except OSError:
                pass  # the folder itself is not writable: nothing was left behind
            problems.append(f"{cache.parent}: {exc.strerror or exc}")
    warnings.warn(f"could not cache the converted {path.name} ({'; '.join(problems)}); it will be converted "
                  "again next time", stacklevel=3)
    return None
