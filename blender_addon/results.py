"""Reading a job's result folder (written by ``fitter_backend.export``), numpy only.

Everything is checked before anything in the scene changes: ``result.json`` (format,
version, each file's size and sha256), every array's presence, dtype, shape and finiteness.
Arrays are already in Blender's world frame (see docs/protocol.md, "Result files").
"""
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

RESULT_FORMAT = "facecap-result"
RESULT_FORMAT_VERSION = 1
MANIFEST = "result.json"


class ResultError(Exception):
    """A result folder that cannot be imported; the message names the file and the problem."""


@dataclasses.dataclass
class Rig:
    """vertices (V, 3), triangles (F, 3), expression_deltas (E, V, 3), joint_positions (J, 3),
    joint_parents (J,), skin_vertex / skin_joint / skin_weight (K,)."""

    model_name: str
    vertices: np.ndarray
    triangles: np.ndarray
    expression_names: list
    expression_deltas: np.ndarray
    joint_names: list
    joint_positions: np.ndarray
    joint_parents: np.ndarray
    skin_vertex: np.ndarray
    skin_joint: np.ndarray
    skin_weight: np.ndarray


@dataclasses.dataclass
class Animation:
    """N frames, C cameras: expression (N, E), joint_rotations (N, J, 3) local axis-angle,
    translation_m (N, 3), frame_indices (N,) in the source clip, camera_matrix_world (C, 4, 4),
    focal_px (C,), image_size_px (C, 2); landmarks_px (N, C, S, 2) and sigma (N, C, S) or None."""

    expression: np.ndarray
    joint_rotations: np.ndarray
    translation_m: np.ndarray
    frame_indices: np.ndarray
    frame_flags: list
    frame_rms: np.ndarray
    fps: float
    focal_px: np.ndarray
    image_size_px: np.ndarray
    camera_matrix_world: np.ndarray
    landmarks_px: np.ndarray = None
    landmarks_sigma_px: np.ndarray = None

    @property
    def num_frames(self) -> int:
        return int(self.expression.shape[0])


@dataclasses.dataclass
class Result:
    folder: Path
    manifest: dict
    rig: Rig
    animation: Animation


def is_complete(folder) -> bool:
    """A result folder is complete once its manifest exists (the backend writes it last)."""
    return (Path(folder) / MANIFEST).is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path, verify_files: bool = True) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ResultError(f"result folder not found: {folder}")
    if not path.is_file():
        raise ResultError(f"{folder} holds no finished result ({MANIFEST} is missing: the job did not complete)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RESULT_FORMAT:
        raise ResultError(f"{path} is not a facecap result manifest")
    if manifest.get("format_version") != RESULT_FORMAT_VERSION:
        raise ResultError(f"{path} has format version {manifest.get('format_version')!r}; this add-on reads "
                          f"version {RESULT_FORMAT_VERSION} (update the add-on or re-run the job)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not {"rig.npz", "animation.npz"} <= set(files):
        raise ResultError(f"{path} does not list rig.npz and animation.npz")
    for name, entry in files.items():
        file_path = folder / name
        if Path(name).name != name or not isinstance(entry, dict):
            raise ResultError(f"{path} lists an invalid file entry {name!r}")
        if not file_path.is_file():
            raise ResultError(f"{file_path} is missing")
        if file_path.stat().st_size != entry.get("bytes"):
            raise ResultError(f"{file_path} has {file_path.stat().st_size} bytes, the manifest says "
                              f"{entry.get('bytes')}: the file was changed or truncated")
        if verify_files and _sha256(file_path) != entry.get("sha256"):
            raise ResultError(f"{file_path} does not match its sha256 in {MANIFEST}: the file was changed")
    return manifest


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:  # zip errors, object arrays, truncation
        raise ResultError(f"cannot read {path}: {exc}") from None


class _Checker:
    def __init__(self, path: Path, arrays: dict) -> None:
        self.path, self.arrays = path, arrays

    def get(self, key: str, kind: str, shape: tuple, optional: bool = False, finite: bool = True):
        """The array ``key`` with dtype kind in ``kind`` ('f', 'i', 'U') and shape ``shape``
        (None = any length); float arrays must be finite unless ``finite`` is False."""
        if key not in self.arrays:
            if optional:
                return None
            raise ResultError(f"{self.path} has no array {key!r}")
        value = self.arrays[key]
        if value.dtype.kind not in kind:
            raise ResultError(f"{self.path}: {key} has dtype {value.dtype}, expected kind {kind!r}")
        if value.ndim != len(shape) or any(e is not None and a != e for a, e in zip(value.shape, shape)):
            raise ResultError(f"{self.path}: {key} has shape {value.shape}, expected {shape}")
        if finite and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ResultError(f"{self.path}: {key} contains NaN or infinite values")
        return value


def read_rig(path: Path) -> Rig:
    c = _Checker(path, _load_npz(path))
    vertices = c.get("vertices", "f", (None, 3))
    v = len(vertices)
    names = c.get("expression_names", "U", (None,))
    e = len(names)
    joint_names = c.get("joint_names", "U", (None,))
    j = len(joint_names)
    rig = Rig(
        model_name=str(c.get("model_name", "U", ())),
        vertices=vertices.astype(np.float32),
        triangles=c.get("triangles", "iu", (None, 3)).astype(np.int32),
        expression_names=[str(n) for n in names],
        expression_deltas=c.get("expression_deltas", "f", (e, v, 3)).astype(np.float32),
        joint_names=[str(n) for n in joint_names],
        joint_positions=c.get("joint_positions", "f", (j, 3)).astype(np.float64),
        joint_parents=c.get("joint_parents", "iu", (j,)).astype(np.int64),
        skin_vertex=c.get("skin_vertex", "iu", (None,)).astype(np.int64),
        skin_joint=c.get("skin_joint", "iu", (None,)).astype(np.int64),
        skin_weight=c.get("skin_weight", "f", (None,)).astype(np.float32),
    )
    if rig.triangles.size and (rig.triangles.min() < 0 or rig.triangles.max() >= v):
        raise ResultError(f"{path}: triangle indices out of range")
    parents = rig.joint_parents
    if j == 0 or parents[0] != -1 or any(not 0 <= parents[k] < k for k in range(1, j)):
        raise ResultError(f"{path}: joint_parents {parents.tolist()} must start with -1 and list parents first")
    if len(set(rig.joint_names)) != j or len(set(rig.expression_names)) != e:
        raise ResultError(f"{path}: joint and expression names must be unique")
    k = len(rig.skin_vertex)
    if not (len(rig.skin_joint) == len(rig.skin_weight) == k):
        raise ResultError(f"{path}: skin_vertex, skin_joint and skin_weight differ in length")
    if k and (rig.skin_vertex.min() < 0 or rig.skin_vertex.max() >= v or rig.skin_joint.min() < 0
              or rig.skin_joint.max() >= j):
        raise ResultError(f"{path}: skin weight indices out of range")
    return rig


def read_animation(path: Path, rig: Rig) -> Animation:
    c = _Checker(path, _load_npz(path))
    e, j = len(rig.expression_names), len(rig.joint_names)
    expression = c.get("expression", "f", (None, e))
    n = len(expression)
    if n == 0:
        raise ResultError(f"{path} holds no frames")
    focal = c.get("focal_px", "f", (None,))
    cameras = len(focal)
    # Missing landmarks and frames without any are NaN.
    landmarks = c.get("landmarks_px", "f", (n, cameras, None, 2), optional=True, finite=False)
    animation = Animation(
        expression=expression.astype(np.float64),
        joint_rotations=c.get("joint_rotations", "f", (n, j, 3)).astype(np.float64),
        translation_m=c.get("translation_m", "f", (n, 3)).astype(np.float64),
        frame_indices=c.get("frame_indices", "iu", (n,)).astype(np.int64),
        frame_flags=[str(f) for f in c.get("frame_flags", "U", (n,))],
        frame_rms=c.get("frame_rms", "f", (n,), finite=False).astype(np.float64),
        fps=float(c.get("fps", "f", ())),
        focal_px=focal.astype(np.float64),
        image_size_px=c.get("image_size_px", "f", (cameras, 2)).astype(np.float64),
        camera_matrix_world=c.get("camera_matrix_world", "f", (cameras, 4, 4)).astype(np.float64),
    )
    if landmarks is not None:
        animation.landmarks_px = landmarks
        animation.landmarks_sigma_px = c.get("landmarks_sigma_px", "f", landmarks.shape[:3], finite=False)
    if np.any(np.diff(animation.frame_indices) <= 0):
        raise ResultError(f"{path}: frame_indices must increase")
    if cameras == 0 or np.any(animation.focal_px <= 0) or np.any(animation.image_size_px <= 0):
        raise ResultError(f"{path}: cameras need positive focal lengths and image sizes")
    return animation


def read_result(folder, verify_files: bool = True) -> Result:
    """Read and check a finished result folder; ResultError names what is wrong."""
    folder = Path(folder)
    manifest = read_manifest(folder, verify_files)
    rig = read_rig(folder / "rig.npz")
    animation = read_animation(folder / "animation.npz", rig)
    return Result(folder, manifest, rig, animation)
