"""Set-up of the MediaPipe models: conversion results, idempotence, failure messages."""
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from fitter_backend.landmarks import LandmarkModel
from fitter_backend.model_setup import ModelSetupError, ensure_mediapipe_models, models_dir
from fitter_backend.model_setup.mediapipe_models import CONVERTER_ID, _is_converted, fetch_mediapipe_wheel, mediapipe_regions
from fitter_backend.paths import sha256_file
from fitter_backend.roi import FaceDetector


def test_models_are_built_with_their_contracts(models):
    assert {"face_detector", "face_mesh_468"} <= set(models)
    FaceDetector.load(models["face_detector"])
    for name in ("face_mesh_468", "face_mesh_478"):
        if name in models:
            model = LandmarkModel.load(models[name])
            assert model.num_landmarks == int(name[-3:])
            assert model.metadata.sigma_roi_fraction.min() > 0
            assert set(model.metadata.regions) >= {"face_oval", "eyes", "lips", "nose", "eyebrows"}
            assert len(model.metadata.semantic_points) == 68
            # The inner-lip contours run between the iBUG mouth corners' counterparts.
            semantic = model.metadata.semantic_points
            for contour in ("inner_lip_upper", "inner_lip_lower"):
                indices = model.metadata.contours[contour]
                assert (indices[0], indices[-1]) == (semantic["ibug_60"], semantic["ibug_64"])
            assert semantic["ibug_62"] in model.metadata.contours["inner_lip_upper"]
            assert semantic["ibug_66"] in model.metadata.contours["inner_lip_lower"]
    for name, path in models.items():
        stamp = json.loads(path.with_name(f"{name}.stamp.json").read_text())
        assert stamp["onnx_sha256"] == sha256_file(path)
        assert stamp["converter"] == CONVERTER_ID and len(stamp["source_sha256"]) == 64


def test_a_second_call_is_fast_and_changes_nothing(models):
    before = {path: path.stat().st_mtime_ns for path in models_dir().iterdir()}
    messages = []
    started = time.perf_counter()
    assert ensure_mediapipe_models(progress=messages.append) == models
    assert time.perf_counter() - started < 2.0
    assert messages == []
    assert {path: path.stat().st_mtime_ns for path in models_dir().iterdir()} == before


def test_lost_metadata_is_rewritten_and_damaged_models_are_noticed(models, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(models_dir(), data / "models",
                    ignore=lambda folder, names: [n for n in names
                                                  if not n.startswith(("face_", "iris_", "mediapipe_"))])
    monkeypatch.setenv("FACECAP_DATA", str(data))
    (data / "models" / "face_mesh_468.json").unlink()
    messages = []
    rebuilt = ensure_mediapipe_models(progress=messages.append)
    assert messages == []  # no download, no conversion: only the sidecar is written again
    assert rebuilt["face_mesh_468"].with_suffix(".json").read_text() == \
        models["face_mesh_468"].with_suffix(".json").read_text()
    assert _is_converted("face_mesh_468", None)
    damaged = bytearray(rebuilt["face_mesh_468"].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    rebuilt["face_mesh_468"].write_bytes(bytes(damaged))
    assert not _is_converted("face_mesh_468", None)


def test_a_damaged_tflite_file_is_one_clear_message(models):
    from fitter_backend.model_setup.tflite_to_onnx import convert

    wheel = fetch_mediapipe_wheel(progress=lambda message: None)
    with zipfile.ZipFile(wheel) as bundle:
        payload = bundle.read("mediapipe/modules/face_landmark/face_landmark.tflite")
    for damaged in (payload[:len(payload) // 3], b"not a model"):
        with pytest.raises(ModelSetupError, match=r"face_landmark\.tflite is not a readable TFLite model"):
            convert(damaged, Path("face_landmark.tflite"))


def test_registry_failure_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FACECAP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as if the package registry could not be reached
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ModelSetupError, match=r"could not download mediapipe==0\.10\.21 from the package registry"):
        fetch_mediapipe_wheel(progress=lambda message: None)


def test_regions_are_parsed_never_executed(tmp_path):
    groups = ["FACE_OVAL", "NOSE", "LEFT_EYEBROW", "RIGHT_EYEBROW", "LEFT_EYE", "RIGHT_EYE", "LIPS",
              "LEFT_IRIS", "RIGHT_IRIS"]
    source = "\n".join(f"FACEMESH_{g} = frozenset([({i}, {i + 1}), ({i + 1}, {i + 2})])" for i, g in
                       enumerate(groups))
    regions = mediapipe_regions(source + "\nFACEMESH_CONTOURS = frozenset().union(*[FACEMESH_LIPS])\n")
    assert regions["nose"] == [1, 2, 3] and regions["eyebrows"] == [2, 3, 4, 5]
    marker = tmp_path / "ran"
    hostile = source.replace("[(6, 7)", f"[(__import__('pathlib').Path({str(marker)!r}).touch(), 7)")
    with pytest.raises(ModelSetupError, match="FACEMESH_LIPS is not a plain list"):
        mediapipe_regions(hostile)
    assert not marker.exists()
    with pytest.raises(ModelSetupError, match="lacks"):
        mediapipe_regions(source.replace("FACEMESH_NOSE", "FACEMESH_SNOUT"))


def test_face_oval_sigma_is_widened_for_sliding_contour_points(models):
    # The face-oval points slide along the silhouette with pose; at the photo-derived sigma they
    # pulled the monocular focal and depth down (docs/landmark_models.md, "Sigma and scale").
    from fitter_backend.model_setup.mediapipe_models import FACE_OVAL_SIGMA_FACTOR
    model = LandmarkModel.load(models["face_mesh_468"])
    sigma = model.metadata.sigma_roi_fraction
    oval = sigma[list(model.metadata.regions["face_oval"])]
    listed = {i for indices in model.metadata.regions.values() for i in indices}
    unlisted = sigma[[i for i in range(model.num_landmarks) if i not in listed]]
    assert FACE_OVAL_SIGMA_FACTOR > 1
    assert unlisted.size and oval.size
    assert oval.min() == pytest.approx(FACE_OVAL_SIGMA_FACTOR * unlisted.max())
    others = [i for name, indices in model.metadata.regions.items() if name != "face_oval" for i in indices]
    assert oval.min() > sigma[others].max()
