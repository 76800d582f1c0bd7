"""Measure a landmark model against 68-point ground truth: NME, per-region sigma, ROI targets.

The numbers written into the MediaPipe metadata (model_setup.mediapipe_models) come from
``python -m fitter_backend.landmarks.calibrate [FIXTURES_DIR]`` on the annotated fixtures
in ``../shared/fixtures/landmarks`` (300-W, 300-VW, AFLW2000-3D). Only iBUG-68 points with
a MediaPipe counterpart (the model's ``semantic_points``) are compared.

Sigma per region is the isotropic Gaussian's: ``sigma = sqrt(mean |error|^2 / 2)``, as a
fraction of the ROI side, because the model's error scales with the crop, not the image.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from fitter_backend.landmarks.names import ATTENTION_LIDS_LANDMARKS, BOOTSTRAP_LANDMARKS
from fitter_backend.landmarks.pipeline import Landmarker
from fitter_backend.video.frames import Frame, open_video

#: iBUG-68 index ranges by region (0-based).
IBUG_REGIONS = {"jaw": range(0, 17), "eyebrows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
                "lips": range(48, 68)}
#: Outer eye corners, the 300-W inter-ocular normalisation.
IBUG_OUTER_EYE_CORNERS = (36, 45)


@dataclasses.dataclass(frozen=True)
class AnnotatedFace:
    """An image with 68 ground-truth points (image pixels as annotated)."""

    name: str
    image_path: Path
    points_px: np.ndarray  # (68, 2)


def load_annotated_faces(fixtures: Path) -> list[AnnotatedFace]:
    """The 68-point annotated faces under ``fixtures`` (the shared ``landmarks`` folder)."""
    faces = []
    w300 = fixtures / "mmpose_300w" / "test_300w.json"
    if w300.is_file():
        data = json.loads(w300.read_text())
        files = {image["id"]: image["file_name"] for image in data["images"]}
        for annotation in data["annotations"]:
            points = np.array(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
            name = files[annotation["image_id"]]
            faces.append(AnnotatedFace(f"300w/{name}", w300.parent / name, points))
    for pts in sorted((fixtures / "mmpose_300vw").glob("*/*.pts")):
        lines = pts.read_text().split("{")[1].split("}")[0].split()
        faces.append(AnnotatedFace(f"300vw/{pts.parent.name}/{pts.stem}", pts.with_suffix(".jpg"),
                                   np.array(lines, dtype=np.float64).reshape(-1, 2)))
    mats = sorted((fixtures / "aflw2000_3d_prnet").glob("*.mat"))
    if mats:
        from scipy.io import loadmat  # plain MATLAB arrays, no code
        for mat in mats:
            faces.append(AnnotatedFace(f"aflw2000/{mat.stem}", mat.with_suffix(".jpg"),
                                       loadmat(mat)["pt3d_68"][:2].T.astype(np.float64)))
    return faces


@dataclasses.dataclass
class FaceResult:
    name: str
    errors_px: np.ndarray       # (68,) NaN where the model has no counterpart
    inter_ocular_px: float
    box_px: float               # sqrt(width * height) of the ground truth's bounding box
    roi_size_px: float
    anchors_in_roi: dict[str, np.ndarray]  # anchor position as a fraction of the square ROI


def evaluate(landmarker: Landmarker, faces: list[AnnotatedFace]) -> list[FaceResult]:
    """Landmarks on each face (independently, from detection); faces not found are skipped."""
    semantic = landmarker.metadata.semantic_points
    anchors = landmarker.model.metadata.anchors
    results = []
    for face in faces:
        landmarker.reset()
        frame: Frame = next(iter(open_video(face.image_path)))
        found = landmarker.process([frame])[0]
        if not found.valid:
            continue
        errors = np.full(68, np.nan)
        for k in range(68):
            if f"ibug_{k:02d}" in semantic:
                errors[k] = np.linalg.norm(found.mu_px[semantic[f"ibug_{k:02d}"]] - face.points_px[k])
        transform = found.roi.transform(1)
        results.append(FaceResult(
            face.name, errors,
            float(np.linalg.norm(face.points_px[IBUG_OUTER_EYE_CORNERS[0]] - face.points_px[IBUG_OUTER_EYE_CORNERS[1]])),
            float(np.sqrt(np.prod(face.points_px.max(0) - face.points_px.min(0)))),
            float(found.roi.size_px),
            {name: transform.to_crop(found.mu_px[list(idx)].mean(0)) for name, idx in anchors.items()}))
    return results


def summarise(results: list[FaceResult]) -> dict:
    """NME in percent (of the inter-ocular distance, 300-W style, for all 68 points and the 51
    without the jaw; and of the ground-truth box size, AFLW2000 style, which profiles do not
    inflate), per-region sigma as a fraction of the ROI side, per-point mean error, mean
    anchor placement."""
    errors = np.array([r.errors_px for r in results])
    inter_ocular = np.array([r.inter_ocular_px for r in results])
    roi = np.array([r.roi_size_px for r in results])
    relative = errors / roi[:, None]
    nme = errors / inter_ocular[:, None]
    return {
        "faces": len(results),
        "nme68_percent": float(100 * np.nanmean(nme)),
        "nme51_percent": float(100 * np.nanmean(nme[:, 17:])),
        "nme68_box_percent": float(100 * np.nanmean(errors / np.array([r.box_px for r in results])[:, None])),
        "nme51_per_face_percent": {r.name: round(float(100 * np.nanmean(nme[i, 17:])), 2)
                                   for i, r in enumerate(results)},
        "sigma_roi_fraction": {region: float(np.sqrt(np.nanmean(relative[:, list(idx)] ** 2) / 2))
                               for region, idx in IBUG_REGIONS.items()},
        "mean_error_per_point_roi_fraction": [round(float(v), 4) for v in np.nanmean(relative, 0)],
        "anchor_targets": {name: [round(float(v), 3) for v in np.mean([r.anchors_in_roi[name] for r in results], 0)]
                           for name in results[0].anchors_in_roi},
    }


def main(argv: list[str]) -> None:
    fixtures = Path(argv[0]) if argv else Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "landmarks"
    faces = load_annotated_faces(fixtures)
    for name in (BOOTSTRAP_LANDMARKS, ATTENTION_LIDS_LANDMARKS, "face_mesh_478"):
        try:
            landmarker = Landmarker.from_setup(landmarks=name, progress=lambda message: None)
        except Exception as error:  # the 478-point model exists only with the shared bundle
            print(f"{name}: {error}")
            continue
        results = evaluate(landmarker, faces)
        print(name, f"({len(results)} of {len(faces)} faces found)")
        print(json.dumps(summarise(results), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
