"""MediaPipe's face detector and face mesh as ONNX models with facecap metadata.

``ensure_mediapipe_models()`` is the set-up step: it fetches the ``mediapipe==0.10.21``
wheel (a zip to us: never installed or imported), reads BlazeFace short-range, the 468-point
face mesh, the attention mesh (whose lids the default takes) and the iris model from it (plus
the 478-point v2 mesh from the shared fixture bundle when present), converts them with the
project's own converter (:mod:`fitter_backend.model_setup.tflite_to_onnx`, no TensorFlow),
checks that each runs in onnxruntime, and writes ``<data_dir>/models/<name>.onnx`` with its
``.json`` contract (see docs/landmark_models.md). Stamps make repeated calls cost milliseconds.
"""
from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from fitter_backend import paths
from fitter_backend.landmarks.names import ATTENTION_LIDS_LANDMARKS
from fitter_backend.model_setup.errors import ModelSetupError
from fitter_backend.model_setup.verify import check_runs

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
MEDIAPIPE_WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
#: Recorded in each stamp: a new converter version converts again.
CONVERTER_ID = "facecap tflite_to_onnx 3 (tflite==2.18.0, onnx==1.23.2)"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
CONNECTIONS_MEMBER = "mediapipe/python/solutions/face_mesh_connections.py"
V2_BUNDLE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "models" \
    / "face_landmarker_v2_with_blendshapes.task"

#: iBUG-68 points (0-based, project names ibug_00..ibug_67) at MediaPipe mesh vertices,
#: chosen by each point's definition (eye and mouth corners, lid and lip midpoints, nose
#: tip, brow arcs, jaw line) and checked point by point on the annotated fixtures (see
#: docs/landmark_models.md). The jaw points are fixed mesh vertices, whereas iBUG's jaw is
#: the visible silhouette, so they agree only for near-frontal faces.
IBUG68_FROM_MEDIAPIPE = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,                                     # brows
    168, 197, 5, 4, 75, 97, 2, 326, 305,                                               # nose
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                         # eyes
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,                               # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,                                                 # inner lips
)

#: The inner edges of the lips in MediaPipe's mesh (the inner ring of FACEMESH_LIPS), from the
#: subject's right mouth corner (78, ibug_60) to the left one (308, ibug_64).
INNER_LIP_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LIP_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
#: Measured sigma per region as a fraction of the ROI side: RMS error / sqrt(2) of the
#: iBUG-68 counterparts on the 22 annotated fixture faces (``python -m
#: fitter_backend.landmarks.calibrate``; docs/landmark_models.md). Irises take the eyes' value;
#: unlisted points (cheeks, forehead: no iBUG counterpart) take the jaw's measured value.
#: face_oval is that value x FACE_OVAL_SIGMA_FACTOR: its points lie on the silhouette and
#: slide with pose, so no fixed surface point explains them; on rendered clips triangulated
#: against the truth they sit 6-11 mm behind where set-up embeds them, and at the photo-derived
#: sigma they pull the monocular focal and depth down (docs/landmark_models.md, "Sigma and scale").
FACE_OVAL_SIGMA_FACTOR = 3.0
_JAW_SIGMA = {"face_mesh_468": 0.059, "face_mesh_478": 0.049}
SIGMA_ROI_FRACTION = {
    "face_mesh_468": {"face_oval": FACE_OVAL_SIGMA_FACTOR * _JAW_SIGMA["face_mesh_468"], "nose": 0.0125,
                      "eyebrows": 0.026, "eyes": 0.0178, "lips": 0.0137, "irises": 0.0178,
                      "unlisted": _JAW_SIGMA["face_mesh_468"]},
    "face_mesh_478": {"face_oval": FACE_OVAL_SIGMA_FACTOR * _JAW_SIGMA["face_mesh_478"], "nose": 0.0113,
                      "eyebrows": 0.0204, "eyes": 0.0113, "lips": 0.0122, "irises": 0.0113,
                      "unlisted": _JAW_SIGMA["face_mesh_478"]},
}
#: The attention mesh's lids (iBUG 36-47 on the 22 faces: 0.0151, the plain mesh's 0.0178); all
#: else is the plain mesh's.
SIGMA_ROI_FRACTION[ATTENTION_LIDS_LANDMARKS] = {**SIGMA_ROI_FRACTION["face_mesh_468"], "eyes": 0.0151}

#: The real-time affine ROI puts these anchors where they fall, on average, in MediaPipe's
#: own square crops (x, y as fractions of the side; measured on the fixtures, symmetrised).
AFFINE_TARGETS = {"right_eye": [0.38, 0.38], "left_eye": [0.62, 0.38], "mouth": [0.5, 0.65]}

DETECTOR_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion",
                      "left_ear_tragion")


def models_dir() -> Path:
    return paths.data_dir() / "models"




def _wanted_models() -> dict[str, dict]:
    """name -> where its TFLite comes from."""
    wanted = {
        "face_detector": {"archive": "wheel", "member": "mediapipe/modules/face_detection/face_detection_short_range.tflite"},
        "face_mesh_468": {"archive": "wheel", "member": "mediapipe/modules/face_landmark/face_landmark.tflite"},
        "iris_landmark": {"archive": "wheel", "member": "mediapipe/modules/iris_landmark/iris_landmark.tflite"},
        # One ONNX model from two networks: the 468-point mesh with the attention mesh's lids
        # (fitter_backend.model_setup.attention_mesh).
        ATTENTION_LIDS_LANDMARKS: {
            "archive": "wheel", "member": "mediapipe/modules/face_landmark/face_landmark.tflite",
            "lids_member": "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite"},
    }
    if V2_BUNDLE.is_file():
        wanted["face_mesh_478"] = {"archive": str(V2_BUNDLE), "member": "face_landmarks_detector.tflite"}
    return wanted


def _stamp_path(name: str) -> Path:
    return models_dir() / f"{name}.stamp.json"


def _read_stamp(name: str) -> dict:
    try:
        return json.loads(_stamp_path(name).read_text())
    except (OSError, ValueError):
        return {}


def _is_converted(name: str, bundle_sha256: str | None) -> bool:
    """The ONNX file of ``name`` is intact and was converted by the current pins from the
    current source (``bundle_sha256``: checksum of a source archive other than the pinned wheel)."""
    stamp = _read_stamp(name)
    onnx_path = models_dir() / f"{name}.onnx"
    return (stamp.get("converter") == CONVERTER_ID and onnx_path.is_file()
            and stamp.get("onnx_sha256") == paths.sha256_file(onnx_path) and stamp.get("bundle_sha256") == bundle_sha256)


def fetch_mediapipe_wheel(progress=print) -> Path:
    """The mediapipe wheel in downloads_dir(), downloaded with pip when missing or corrupt."""
    folder = paths.downloads_dir()
    for candidate in sorted(folder.glob("mediapipe-0.10.21-*.whl")):
        if paths.sha256_file(candidate) == MEDIAPIPE_WHEEL_SHA256:
            return candidate
        candidate.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {MEDIAPIPE_REQUIREMENT} (36 MB, read as a zip, not installed)")
    platforms = [arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--only-binary=:all:", "--python-version", "3.11", *platforms, MEDIAPIPE_REQUIREMENT, "-d", str(folder)],
        capture_output=True, text=True)
    wheels = [w for w in folder.glob("mediapipe-0.10.21-*.whl") if paths.sha256_file(w) == MEDIAPIPE_WHEEL_SHA256]
    if result.returncode != 0 or not wheels:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        raise ModelSetupError(
            f"could not download {MEDIAPIPE_REQUIREMENT} from the package registry into {folder} "
            f"(needed once to build the face models): {' | '.join(lines[-3:]) or 'checksum mismatch'}")
    return wheels[0]


def _read_member(archive: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(archive) as bundle:
            return bundle.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelSetupError(f"cannot read {member} from {archive}: {error}") from None


def mediapipe_regions(connections_source: str) -> dict[str, list[int]]:
    """Landmark index sets from face_mesh_connections.py, parsed (never executed).

    Returns face_oval, nose, eyebrows, eyes, lips and irises (indices >= 468 exist only in
    the 478-point mesh).
    """
    edges: dict[str, set[int]] = {}
    for node in ast.parse(connections_source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "frozenset"
                and len(node.value.args) == 1 and isinstance(node.value.args[0], ast.List)):
            try:
                pairs = ast.literal_eval(node.value.args[0])
            except ValueError:
                raise ModelSetupError(f"{CONNECTIONS_MEMBER}: {node.targets[0].id} is not a plain list of "
                                      f"index pairs") from None
            edges[node.targets[0].id] = {int(i) for pair in pairs for i in pair}
    groups = {
        "face_oval": ["FACEMESH_FACE_OVAL"],
        "nose": ["FACEMESH_NOSE"],
        "eyebrows": ["FACEMESH_LEFT_EYEBROW", "FACEMESH_RIGHT_EYEBROW"],
        "eyes": ["FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE"],
        "lips": ["FACEMESH_LIPS"],
        "irises": ["FACEMESH_LEFT_IRIS", "FACEMESH_RIGHT_IRIS"],
    }
    missing = [name for names in groups.values() for name in names if name not in edges]
    if missing:
        raise ModelSetupError(f"{CONNECTIONS_MEMBER} in the mediapipe wheel lacks {missing}")
    return {group: sorted(set().union(*(edges[n] for n in names))) for group, names in groups.items()}


def detector_metadata(onnx_name: str, source: dict) -> dict:
    """BlazeFace short-range: MediaPipe's face_detection_short_range graph options."""
    return {
        "format": "facecap-face-detector", "format_version": 1, "name": "blazeface_short_range",
        "input": {"name": "input", "layout": "NHWC", "size_px": 128, "mean": [0.5] * 3, "std": [0.5] * 3},
        "outputs": {"boxes": {"name": "regressors", "values_per_anchor": 4 + 2 * len(DETECTOR_KEYPOINTS)},
                    "scores": {"name": "classificators", "activation": "sigmoid", "clip": 100.0}},
        # SSD anchors, fixed size: 16x16 cells x 2 at stride 8, 8x8 cells x 6 at stride 16.
        "anchors": {"strides": [8, 16], "per_cell": [2, 6], "offset": 0.5},
        "box_scale_px": 128.0,
        "keypoints": list(DETECTOR_KEYPOINTS),
        "min_score": 0.5, "nms_iou": 0.3,
        "provenance": {"onnx": onnx_name, **source},
    }


def mesh_metadata(name: str, num_landmarks: int, io: dict, regions: dict[str, list[int]], source: dict) -> dict:
    """The face mesh contract: mu in input pixels (x, y, z per point), presence logit,
    sigma derived from the ROI side and a measured per-region fraction."""
    regions = {k: [i for i in v if i < num_landmarks] for k, v in regions.items()}
    regions = {k: v for k, v in regions.items() if v}
    return {
        "format": "facecap-landmark-model", "format_version": 1, "name": name,
        "landmark_set": f"mediapipe_{num_landmarks}", "num_landmarks": num_landmarks,
        "input": {"name": io["input"], "layout": "NHWC", "size_px": 192, "mean": [0.0] * 3, "std": [1.0] * 3},
        "outputs": {"mu": {"name": io["mu"], "values_per_point": 3, "units": "input_px", "origin": "pixel_corner"},
                    "presence": {"name": io["presence"], "activation": "sigmoid"}},
        "presence_threshold": 0.5,
        "sigma": {"source": "derived", "unit": "roi_fraction", "default": SIGMA_ROI_FRACTION[name]["unlisted"],
                  "per_region": {k: SIGMA_ROI_FRACTION[name][k] for k in regions}},
        "regions": regions,
        "semantic_points": {f"ibug_{k:02d}": v for k, v in enumerate(IBUG68_FROM_MEDIAPIPE)},
        "contours": {"inner_lip_upper": list(INNER_LIP_UPPER), "inner_lip_lower": list(INNER_LIP_LOWER)},
        # Averaged corner pairs: eye corners and mouth corners.
        "anchors": {"right_eye": [33, 133], "left_eye": [362, 263], "mouth": [61, 291]},
        # MediaPipe crops the face box or the landmarks' box grown by 1.5.
        "roi": {"scale_from_detection": 1.5, "scale_from_landmarks": 1.5, "affine_targets": AFFINE_TARGETS},
        "embeddings": {"*": {"computed_by": "fitter_backend.head_models.correspondence (MediaPipe canonical "
                                            "face registered to the head model)"}},
        "provenance": {"onnx": f"{name}.onnx", "licence": "Apache-2.0", **source},
    }


def iris_metadata(onnx_name: str, source: dict) -> dict:
    """MediaPipe's iris model: a 64 px eye crop in [0, 1] -> 71 eye-contour, lid-halo and brow
    points and 5 iris points, (x, y, z) each in input pixels (fitter_backend.landmarks.eye_refine)."""
    return {
        "format": "facecap-eye-landmarks", "format_version": 1, "name": "iris_landmark",
        "input": {"name": "input_1", "layout": "NHWC", "size_px": 64, "mean": [0.0] * 3, "std": [1.0] * 3},
        "outputs": {"contour": {"name": "output_eyes_contours_and_brows", "points": 71, "values_per_point": 3},
                    "iris": {"name": "output_iris", "points": 5, "values_per_point": 3}},
        "provenance": {"onnx": onnx_name, "licence": "Apache-2.0", **source},
    }


MESH_IO = {
    "face_mesh_468": {"input": "input_1", "mu": "conv2d_21", "presence": "conv2d_31"},
    ATTENTION_LIDS_LANDMARKS: {"input": "input_1", "mu": "refined_landmarks", "presence": "conv2d_31"},
    "face_mesh_478": {"input": "serving_default_input_28:0", "mu": "StatefulPartitionedCall:1",
                      "presence": "StatefulPartitionedCall:0"},
}


def _regions(wheel: Path | None, progress) -> dict[str, list[int]]:
    """MediaPipe's landmark regions, kept in models/ so metadata can be rewritten without the wheel."""
    cache = models_dir() / "mediapipe_regions.json"
    if wheel is None:
        try:
            return json.loads(cache.read_text())
        except (OSError, ValueError):
            wheel = fetch_mediapipe_wheel(progress)
    regions = mediapipe_regions(_read_member(wheel, CONNECTIONS_MEMBER).decode("utf-8"))
    cache.write_text(json.dumps(regions))
    return regions


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.write_text(text)


def ensure_mediapipe_models(progress=print) -> dict[str, Path]:
    """Build (once) and return the ONNX paths: ``face_detector``, ``face_mesh_468``,
    ``face_mesh_468_attention_lids``, ``iris_landmark`` and, when the shared fixture bundle
    exists, ``face_mesh_478``. Each has
    a ``.json`` sidecar (the contract), rewritten whenever this module's constants change."""
    started = time.perf_counter()
    wanted = _wanted_models()
    out = models_dir()
    out.mkdir(parents=True, exist_ok=True)
    bundles = {name: (None if spec["archive"] == "wheel" else paths.sha256_file(Path(spec["archive"])))
               for name, spec in wanted.items()}
    stale = [name for name in wanted if not _is_converted(name, bundles[name])]
    wheel = fetch_mediapipe_wheel(progress) if stale else None
    if stale:
        progress(f"converting {', '.join(stale)} to ONNX")
        from fitter_backend.model_setup import attention_mesh, tflite_to_onnx  # tflite, onnx: only to convert
    for name in stale:
        spec = wanted[name]
        archive = wheel if spec["archive"] == "wheel" else Path(spec["archive"])
        payload = _read_member(archive, spec["member"])
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            onnx_path = Path(scratch) / f"{name}.onnx"
            converted = tflite_to_onnx.convert(payload, archive / spec["member"])
            if "lids_member" in spec:
                lids_payload = _read_member(archive, spec["lids_member"])
                converted = attention_mesh.face_mesh_with_attention_lids(
                    converted, MESH_IO["face_mesh_468"]["mu"], tflite_to_onnx.convert(lids_payload, archive / spec["lids_member"]))
                payload += lids_payload  # the stamp's source checksum covers both networks
            onnx_path.write_bytes(converted.SerializeToString())
            check_runs(onnx_path)
            onnx_path.replace(out / f"{name}.onnx")
        stamp = {"converter": CONVERTER_ID, "bundle_sha256": bundles[name],
                 "onnx_sha256": paths.sha256_file(out / f"{name}.onnx"),
                 "archive": MEDIAPIPE_REQUIREMENT if archive == wheel else archive.name, "member": spec["member"],
                 "source_sha256": hashlib.sha256(payload).hexdigest()}
        _stamp_path(name).write_text(json.dumps(stamp, indent=1))
    regions = _regions(wheel, progress)
    for name in wanted:
        provenance = {k: v for k, v in _read_stamp(name).items() if k in ("archive", "member", "source_sha256")}
        metadata = (detector_metadata(f"{name}.onnx", provenance) if name == "face_detector" else
                    iris_metadata(f"{name}.onnx", provenance) if name == "iris_landmark" else
                    mesh_metadata(name, 478 if name.endswith("478") else 468, MESH_IO[name], regions, provenance))
        _write_if_changed(out / f"{name}.json", json.dumps(metadata, indent=1))
    if stale:
        progress(f"face models ready in {out} ({time.perf_counter() - started:.1f} s)")
    return {name: out / f"{name}.onnx" for name in wanted}
