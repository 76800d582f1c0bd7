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


def read_json(path: Path, error: type = None):
    """The JSON value in ``path``; ``error`` (default ResultError) names the file when it is
    missing, not UTF-8, not JSON, or nested deeper than Python's parser can follow."""
    error = error or ResultError
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        why = "is nested too deeply" if isinstance(exc, RecursionError) else f"is not JSON: {exc}"
        raise error(f"{path} {why}") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None


def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` when it is a plain file of the folder itself (no symlink out of it)."""
    path = folder / name
    if Path(name).name != name or name in (".", ".."):
        raise ResultError(f"{folder / MANIFEST} lists an invalid file name {name!r}")
    if path.is_symlink() or path.resolve().parent != folder.resolve():
        raise ResultError(f"{path} is a link; a result folder holds its files itself")
    if not path.is_file():
        raise ResultError(f"{path} is missing")
    return path


def read_manifest(folder: Path, verify_files: bool = True) -> dict:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ResultError(f"result folder not found: {folder}")
    if not path.is_file():
        raise ResultError(f"{folder} holds no finished result ({MANIFEST} is missing: the job did not complete)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != RESULT_FORMAT:
        raise ResultError(f"{path} is not a facecap result manifest")
    if manifest.get("format_version") != RESULT_FORMAT_VERSION:
        raise ResultError(f"{path} has format version {manifest.get('format_version')!r}; this add-on reads "
                          f"version {RESULT_FORMAT_VERSION} (update the add-on or re-run the job)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not {"rig.npz", "animation.npz"} <= set(files):
        raise ResultError(f"{path} does not list rig.npz and animation.npz")
    if not isinstance(manifest.get("job", ""), str):
        raise ResultError(f"{path}: 'job' must be a string, not {type(manifest['job']).__name__}")
    for name, entry in files.items():
        if not isinstance(entry, dict):
            raise ResultError(f"{path} lists an invalid file entry {name!r}")
        file_path = _inside(folder, name)
        if file_path.stat().st_size != entry.get("bytes"):
            raise ResultError(f"{file_path} has {file_path.stat().st_size} bytes, the manifest says "
                              f"{entry.get('bytes')!r}: the file was changed or truncated")
        if verify_files and _sha256(file_path) != entry.get("sha256"):
            raise ResultError(f"{file_path} does not match its sha256 in {MANIFEST}: the file was changed")
    return manifest


# Bounds on what a result may hold: far above any real take, far below what exhausts memory.
MAX_COUNT = {"V": 1_000_000, "F": 2_000_000, "E": 4096, "J": 1024, "K": 8_000_000, "N": 1_000_000,
             "C": 64, "S": 100_000}
MAX_ABS = 1e6            # metres, radians, pixels, expression weights: no real value comes near
MAX_FRAME_INDEX = 1_048_574   # Blender's last frame (MAXFRAME); float32 keys are exact up to 2^24
MAX_FPS = 1000.0
MAX_NAME_BYTES = 63      # Blender's names hold 63 bytes (MAX_NAME minus the terminator)


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # zip errors, truncation
        raise ResultError(f"cannot read {path}: {exc}") from None


class _Checker:
    """Arrays of one npz, each checked against its declared header before it is loaded."""

    def __init__(self, path: Path, npz) -> None:
        self.path, self.npz = path, npz

    def _header(self, key: str):
        """(shape, dtype) the member declares, read without loading its data."""
        try:
            with self.npz.zip.open(key + ".npy") as member:
                version = np.lib.format.read_magic(member)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(member)
        except Exception as exc:
            raise ResultError(f"cannot read {self.path}: {key}: {exc}") from None
        return shape, dtype

    def get(self, key: str, kind: str, shape: tuple, optional: bool = False, finite: bool = True,
            bound: float = MAX_ABS):
        """The array ``key`` with dtype kind in ``kind`` ('f', 'i', 'U') and shape ``shape``: an
        int is an exact length, a letter of MAX_COUNT a length up to its bound. Float arrays must
        be finite unless ``finite`` is False, and numbers within +-``bound``."""
        if key not in self.npz.files:
            if optional:
                return None
            raise ResultError(f"{self.path} has no array {key!r}")
        declared, dtype = self._header(key)
        fits = len(declared) == len(shape) and all(
            a <= MAX_COUNT[e] if isinstance(e, str) else a == e for a, e in zip(declared, shape))
        if not fits:
            expected = tuple(f"{e}<={MAX_COUNT[e]}" if isinstance(e, str) else e for e in shape)
            raise ResultError(f"{self.path}: {key} has shape {declared}, expected {expected}")
        if dtype.kind not in kind or (dtype.kind == "U" and dtype.itemsize > 4 * 1024):
            raise ResultError(f"{self.path}: {key} has dtype {dtype}, expected kind {kind!r}")
        try:
            value = self.npz[key]
        except Exception as exc:
            raise ResultError(f"cannot read {self.path}: {key}: {exc}") from None
        if value.dtype.kind == "f":
            if finite and not np.all(np.isfinite(value)):
                raise ResultError(f"{self.path}: {key} contains NaN or infinite values")
            if np.any(np.abs(value[np.isfinite(value)]) > bound):
                raise ResultError(f"{self.path}: {key} holds values beyond +-{bound:g} "
                                  f"(largest {np.nanmax(np.abs(value)):g})")
        return value


def _check_names(path: Path, what: str, names: list) -> None:
    """Names become bone, vertex group and shape key names and F-curve data paths."""
    for name in names:
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ResultError(f"{path}: {what} name {name!r} must be 1 to {MAX_NAME_BYTES} bytes long "
                              "(Blender's limit)")
        if any(c in name for c in '"\\') or not name.isprintable():
            raise ResultError(f"{path}: {what} name {name!r} holds a quote, backslash or control character")
    if len(set(names)) != len(names):
        raise ResultError(f"{path}: {what} names must be unique")


def read_rig(path: Path) -> Rig:
    with _open_npz(path) as npz:
        return _read_rig(path, _Checker(path, npz))


def _read_rig(path: Path, c: _Checker) -> Rig:
    vertices = c.get("vertices", "f", ("V", 3), bound=1e3)
    v = len(vertices)
    names = c.get("expression_names", "U", ("E",))
    e = len(names)
    joint_names = c.get("joint_names", "U", ("J",))
    j = len(joint_names)
    rig = Rig(
        model_name=str(c.get("model_name", "U", ())),
        vertices=vertices.astype(np.float32),
        triangles=c.get("triangles", "iu", ("F", 3)).astype(np.int32),
        expression_names=[str(n) for n in names],
        expression_deltas=c.get("expression_deltas", "f", (e, v, 3), bound=1e3).astype(np.float32),
        joint_names=[str(n) for n in joint_names],
        joint_positions=c.get("joint_positions", "f", (j, 3), bound=1e3).astype(np.float64),
        joint_parents=c.get("joint_parents", "iu", (j,)).astype(np.int64),
        skin_vertex=c.get("skin_vertex", "iu", ("K",)).astype(np.int64),
        skin_joint=c.get("skin_joint", "iu", ("K",)).astype(np.int64),
        skin_weight=c.get("skin_weight", "f", ("K",)).astype(np.float32),
    )
    if rig.triangles.size and (rig.triangles.min() < 0 or rig.triangles.max() >= v):
        raise ResultError(f"{path}: triangle indices out of range")
    parents = rig.joint_parents
    if j == 0 or parents[0] != -1 or any(not 0 <= parents[k] < k for k in range(1, j)):
        raise ResultError(f"{path}: joint_parents {parents.tolist()} must start with -1 and list parents first")
    _check_names(path, "joint", rig.joint_names)
    _check_names(path, "expression", rig.expression_names)
    k = len(rig.skin_vertex)
    if not (len(rig.skin_joint) == len(rig.skin_weight) == k):
        raise ResultError(f"{path}: skin_vertex, skin_joint and skin_weight differ in length")
    if k and (rig.skin_vertex.min() < 0 or rig.skin_vertex.max() >= v or rig.skin_joint.min() < 0
              or rig.skin_joint.max() >= j):
        raise ResultError(f"{path}: skin weight indices out of range")
    if k and (rig.skin_weight.min() < 0 or rig.skin_weight.max() > 1 + 1e-4):
        raise ResultError(f"{path}: skin_weight must lie in [0, 1] (found {rig.skin_weight.min():g} to "
                          f"{rig.skin_weight.max():g})")
    return rig


def read_animation(path: Path, rig: Rig) -> Animation:
    with _open_npz(path) as npz:
        return _read_animation(path, _Checker(path, npz), rig)


def _read_animation(path: Path, c: _Checker, rig: Rig) -> Animation:
    e, j = len(rig.expression_names), len(rig.joint_names)
    expression = c.get("expression", "f", ("N", e))
    n = len(expression)
    if n == 0:
        raise ResultError(f"{path} holds no frames")
    focal = c.get("focal_px", "f", ("C",))
    cameras = len(focal)
    # Missing landmarks and frames without any are NaN.
    landmarks = c.get("landmarks_px", "f", (n, cameras, "S", 2), optional=True, finite=False)
    animation = Animation(
        expression=expression.astype(np.float64),
        joint_rotations=c.get("joint_rotations", "f", (n, j, 3)).astype(np.float64),
        translation_m=c.get("translation_m", "f", (n, 3), bound=1e4).astype(np.float64),
        frame_indices=c.get("frame_indices", "iu", (n,)).astype(np.int64),
        frame_flags=[str(f) for f in c.get("frame_flags", "U", (n,))],
        frame_rms=c.get("frame_rms", "f", (n,), finite=False).astype(np.float64),
        fps=float(c.get("fps", "f", ())),
        focal_px=focal.astype(np.float64),
        image_size_px=c.get("image_size_px", "f", (cameras, 2), bound=1e5).astype(np.float64),
        camera_matrix_world=c.get("camera_matrix_world", "f", (cameras, 4, 4), bound=1e4).astype(np.float64),
    )
    if landmarks is not None:
        animation.landmarks_px = landmarks
        animation.landmarks_sigma_px = c.get("landmarks_sigma_px", "f", landmarks.shape[:3], finite=False)
    if np.any(np.diff(animation.frame_indices) <= 0):
        raise ResultError(f"{path}: frame_indices must increase")
    if animation.frame_indices[0] < 0 or animation.frame_indices[-1] > MAX_FRAME_INDEX:
        raise ResultError(f"{path}: frame_indices run from {animation.frame_indices[0]} to "
                          f"{animation.frame_indices[-1]}; Blender's frames end at {MAX_FRAME_INDEX}")
    if not 0 < animation.fps <= MAX_FPS:
        raise ResultError(f"{path}: fps is {animation.fps:g}, expected a rate in (0, {MAX_FPS:g}]")
    if cameras == 0 or np.any(animation.focal_px <= 0) or np.any(animation.image_size_px <= 0):
        raise ResultError(f"{path}: cameras need positive focal lengths and image sizes")
    rotations = animation.camera_matrix_world[:, :3, :3]
    rigid = (np.allclose(np.einsum("cab,cad->cbd", rotations, rotations), np.eye(3), atol=1e-4)
             and np.allclose(animation.camera_matrix_world[:, 3], [0, 0, 0, 1]))
    if not rigid:
        raise ResultError(f"{path}: camera_matrix_world must be rotations and translations (a rigid camera pose)")
    return animation


def read_result(folder, verify_files: bool = True) -> Result:
    """Read and check a finished result folder; ResultError names what is wrong."""
    folder = Path(folder)
    manifest = read_manifest(folder, verify_files)
    rig = read_rig(folder / "rig.npz")
    animation = read_animation(folder / "animation.npz", rig)
    return Result(folder, manifest, rig, animation)
