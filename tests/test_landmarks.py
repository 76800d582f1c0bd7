"""Landmark models: the contract, ONNX inference, the frame pipeline, accuracy on fixtures."""
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest

from fitter_backend.landmarks import Landmarker, LandmarkModel, LandmarkModelError, LandmarkTrack, NoFaceError
from fitter_backend.landmarks.calibrate import evaluate, load_annotated_faces, summarise
from fitter_backend.video import open_multiview, open_video
from fitter_backend.video.frames import Frame
from tests.conftest import SHARED

FIXTURES = SHARED / "fixtures"
ASTRONAUT = FIXTURES / "images" / "astronaut.png"
GRID = FIXTURES / "video" / "grid_bbaf2n.mpg"
DENSE_MODELS = Path(__file__).resolve().parents[1] / "onnx_models" / "models"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures absent")
CUDA_AVAILABLE = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="session")
def astronaut() -> Frame:
    return next(iter(open_video(ASTRONAUT)))


# -- a tiny dense-style model, written as ONNX protobuf by hand (the runtime has no onnx) --
def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, dims: list) -> bytes:
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))


def _tensor(name: str, array: np.ndarray) -> bytes:
    dims = b"".join(_field(1, d) for d in array.shape)
    return dims + _field(2, 1) + _field(8, name) + _field(9, array.astype("<f4").tobytes())


def _node(op: str, inputs: list[str], outputs: list[str], attributes: bytes = b"") -> bytes:
    return (b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs)
            + _field(4, op) + attributes)


TINY_SIZE, TINY_POINTS = 16, 4
TINY_WEIGHTS = {
    "w_mu": np.linspace(-0.2, 0.3, 3 * 2 * TINY_POINTS).reshape(3, 2 * TINY_POINTS),
    "b_mu": np.array([-0.5, -0.4, 0.5, -0.4, 0.0, 0.2, 0.1, 0.6]),
    "w_ls": np.full((3, TINY_POINTS), 0.05),
    "b_ls": np.log([0.02, 0.03, 0.04, 0.05]),
    "w_p": np.array([[1.0], [0.0], [0.0]]),
    "b_p": np.array([0.5]),
}


def write_tiny_model(folder: Path, presence_bias: float = 0.5) -> Path:
    """NCHW image -> channel means -> Gemm: mu (normalised), log sigma, presence logit."""
    weights = dict(TINY_WEIGHTS, b_p=np.array([presence_bias]))
    axis = _field(5, _field(1, "axis") + _field(20, 2) + _field(3, 1))
    nodes = [_node("GlobalAveragePool", ["image"], ["pooled"]), _node("Flatten", ["pooled"], ["flat"], axis),
             _node("Gemm", ["flat", "w_mu", "b_mu"], ["mu"]), _node("Gemm", ["flat", "w_ls", "b_ls"], ["log_sigma"]),
             _node("Gemm", ["flat", "w_p", "b_p"], ["presence"])]
    graph = (b"".join(_field(1, n) for n in nodes) + _field(2, "tiny")
             + b"".join(_field(5, _tensor(k, v)) for k, v in weights.items())
             + _field(11, _value_info("image", ["batch", 3, TINY_SIZE, TINY_SIZE]))
             + _field(12, _value_info("mu", ["batch", 2 * TINY_POINTS]))
             + _field(12, _value_info("log_sigma", ["batch", TINY_POINTS]))
             + _field(12, _value_info("presence", ["batch", 1])))
    model = _field(1, 8) + _field(2, "facecap-test") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))
    path = folder / "tiny.onnx"
    path.write_bytes(model)
    return path


def tiny_metadata(**changes) -> dict:
    metadata = {
        "format": "facecap-landmark-model", "format_version": 1, "name": "tiny", "landmark_set": "tiny_4",
        "num_landmarks": TINY_POINTS,
        "input": {"name": "image", "layout": "NCHW", "size_px": TINY_SIZE, "mean": [0.5] * 3, "std": [0.25] * 3},
        "outputs": {"mu": {"name": "mu", "values_per_point": 2, "units": "normalised"},
                    "log_sigma": {"name": "log_sigma", "units": "normalised"},
                    "presence": {"name": "presence", "activation": "sigmoid"}},
        "sigma": {"source": "output"},
        "anchors": {"right_eye": [0], "left_eye": [1], "mouth": [2, 3]},
        "roi": {"scale_from_detection": 1.5, "scale_from_landmarks": 1.5,
                "affine_targets": {"right_eye": [0.38, 0.38], "left_eye": [0.62, 0.38], "mouth": [0.5, 0.65]}},
        "embeddings": {"open_head": {"triangle": [0, 5, 9, 2],
                                     "barycentric": [[1, 0, 0], [0.2, 0.3, 0.5], [0, 1, 0], [0, 0, 1]]}},
    }
    for path, value in changes.items():
        node = metadata
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        if value is None:
            node.pop(keys[-1])
        else:
            node[keys[-1]] = value
    return metadata


def load_tiny(folder: Path, presence_bias: float = 0.5, **changes) -> LandmarkModel:
    onnx_path = write_tiny_model(folder, presence_bias)
    onnx_path.with_suffix(".json").write_text(json.dumps(tiny_metadata(**changes)))
    return LandmarkModel.load(onnx_path)


def test_model_with_log_sigma_output_decodes_normalised_coordinates(tmp_path):
    model = load_tiny(tmp_path)
    colours = np.array([[0, 0, 0], [255, 128, 0], [30, 200, 90]], np.uint8)
    crops = np.broadcast_to(colours[:, None, None, :], (3, TINY_SIZE, TINY_SIZE, 3)).copy()
    mu, sigma, presence = model.predict(crops)
    features = (colours / 255.0 - 0.5) / 0.25
    raw_mu = features @ TINY_WEIGHTS["w_mu"] + TINY_WEIGHTS["b_mu"]
    expected_mu = (raw_mu.reshape(3, TINY_POINTS, 2) + 1) * TINY_SIZE / 2  # [-1, 1] -> crop pixels
    np.testing.assert_allclose(mu, expected_mu, atol=1e-4)
    np.testing.assert_allclose(sigma, np.exp(features @ TINY_WEIGHTS["w_ls"] + TINY_WEIGHTS["b_ls"]) * TINY_SIZE / 2,
                               rtol=1e-4)
    np.testing.assert_allclose(presence, 1 / (1 + np.exp(-(features[:, 0] + 0.5))), atol=1e-5)
    assert model.metadata.embeddings["open_head"]["triangle"] == [0, 5, 9, 2]
    with pytest.raises(LandmarkModelError, match=r"expects crops \(B, 16, 16, 3\)"):
        model.predict(np.zeros((1, 20, 20, 3), np.uint8))


@pytest.mark.parametrize("changes, words", [
    ({"num_landmarks": 5, "embeddings": None}, r"output 'mu' has shape .* 8 values per crop, metadata needs 10"),
    ({"input.size_px": 32}, r"input 'image' has shape .*metadata says \(batch, 3, 32, 32\)"),
    ({"input.layout": "NHWC"}, r"metadata says \(batch, 16, 16, 3\)"),
    ({"outputs.mu.name": "landmarks"}, r"no output 'landmarks'"),
    ({"input.name": "pixels"}, r"no input 'pixels'"),
    ({"sigma": {"source": "derived", "unit": "roi_fraction", "default": 0.02, "per_region": {}}},
     "log_sigma output must use source 'output'"),
    ({"input.mean": None}, r"input\.mean: missing required field"),
    ({"outputs.mu.units": "metres"}, r"outputs\.mu\.units: expected one of"),
    ({"anchors.mouth": [9]}, r"anchors\.mouth: expected a non-empty list of landmark indices in \[0, 4\)"),
    ({"embeddings.open_head.barycentric": [[1, 0, 0]] * 3 + [[0.5, 0.6, 0]]}, "rows summing to 1"),
    ({"format_version": 7}, "this backend reads version 1"),
    ({"contours": {"outer_lip": [0, 1, 2]}}, r"contours\.outer_lip: unknown contour 'outer_lip'"),
    ({"contours": {"inner_lip_upper": [0, 1, 4]}}, r"contours\.inner_lip_upper: expected a non-empty list of landmark"),
    ({"contours": {"inner_lip_lower": [0, 3]}}, r"contours\.inner_lip_lower: a contour needs at least 3"),
])
def test_mismatched_or_malformed_metadata_is_one_clear_error(tmp_path, changes, words):
    with pytest.raises(LandmarkModelError, match=words):
        load_tiny(tmp_path, **changes)


def test_broken_model_files(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    (tmp_path / "junk.json").write_text(json.dumps(tiny_metadata()))
    with pytest.raises(LandmarkModelError, match="junk.onnx is not a usable ONNX model"):
        LandmarkModel.load(tmp_path / "junk.onnx")
    write_tiny_model(tmp_path)
    with pytest.raises(LandmarkModelError, match="tiny.json does not exist"):
        LandmarkModel.load(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(LandmarkModelError, match="not valid JSON"):
        LandmarkModel.load(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_metadata()))
    with pytest.raises(LandmarkModelError, match="absent.onnx does not exist"):
        LandmarkModel.load(tmp_path / "absent.onnx", tmp_path / "tiny.json")


@pytest.mark.skipif(CUDA_AVAILABLE, reason="this onnxruntime has CUDA: covered by the next test")
def test_cuda_request_without_onnxruntime_gpu_is_refused(tmp_path):
    write_tiny_model(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_metadata()))
    with pytest.raises(LandmarkModelError, match="install onnxruntime-gpu"):
        LandmarkModel.load(tmp_path / "tiny.onnx", device="gpu")
    assert LandmarkModel.load(tmp_path / "tiny.onnx", device="auto").device == "cpu"


@pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs onnxruntime-gpu")
def test_cuda_is_really_used_when_asked(models):
    model = LandmarkModel.load(models["face_mesh_468"], device="gpu")
    assert model.device == "gpu" and "CUDAExecutionProvider" in model.session.get_providers()
    cpu = LandmarkModel.load(models["face_mesh_468"])
    crops = np.random.default_rng(0).integers(0, 255, (4, 192, 192, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict(crops)[0], cpu.predict(crops)[0], atol=0.05)


@needs_fixtures
def test_low_presence_is_flagged_not_fitted(tmp_path, detector, astronaut):
    model = load_tiny(tmp_path, presence_bias=-20.0)  # the face is there, the model is not sure
    result = Landmarker(model, detector).process([astronaut])[0]
    assert "low_confidence" in result.flags and not result.valid
    assert np.isfinite(result.mu_px).all()  # kept for inspection
    with pytest.raises(NoFaceError, match="no face found in any of the 1 frames"):
        Landmarker(model, detector).track(open_video(ASTRONAUT))


# -- MediaPipe's mesh on real faces --------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("name", ["face_mesh_468", "face_mesh_478"])
def test_mediapipe_landmarks_land_on_the_astronauts_face(models, detector, astronaut, name):
    if name not in models:
        pytest.skip("the 478-point bundle is not among the shared fixtures")
    landmarker = Landmarker(LandmarkModel.load(models[name]), detector)
    result = landmarker.process([astronaut])[0]
    assert result.valid and result.presence > 0.9 and result.mu_px.shape == (int(name[-3:]), 2)
    semantic = landmarker.model.metadata.semantic_points
    # face box read off the image by eye: brows to chin, ear to ear
    nose_tip = result.mu_px[semantic["ibug_30"]]
    assert 205 < nose_tip[0] < 235 and 115 < nose_tip[1] < 145
    right_eye, left_eye = result.mu_px[semantic["ibug_36"]], result.mu_px[semantic["ibug_45"]]
    assert right_eye[0] < nose_tip[0] < left_eye[0]  # subject's right eye on the image left
    assert 50 < np.linalg.norm(left_eye - right_eye) < 75  # outer eye corners
    points = result.mu_px[list(semantic.values())]
    assert ((points > [165, 70]) & (points < [285, 200])).all()
    assert np.all(result.sigma_px > 0)


@needs_fixtures
def test_batched_prediction_equals_one_by_one(mesh, astronaut):
    crops = np.stack([cv2.resize(astronaut.image[y:y + 200, x:x + 200], (192, 192))
                      for x, y in ((130, 40), (120, 30), (140, 50))])
    mu, sigma, presence = mesh.predict(crops)
    for b in range(3):
        single = mesh.predict(crops[b:b + 1])
        np.testing.assert_allclose(single[0][0], mu[b], atol=1e-3)
        np.testing.assert_allclose(single[2][0], presence[b], atol=1e-5)


@needs_fixtures
def test_sigma_is_in_image_pixels_and_scales_with_the_face(models, detector, astronaut):
    landmarker = Landmarker(LandmarkModel.load(models["face_mesh_468"]), detector)
    small = landmarker.process([astronaut])[0]
    landmarker.reset()
    doubled = cv2.resize(astronaut.image, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    big = landmarker.process([Frame(0, doubled, 0.0, 255)])[0]
    np.testing.assert_allclose(big.sigma_px / small.sigma_px, 2.0, rtol=0.05)
    nose = landmarker.model.metadata.semantic_points["ibug_30"]
    np.testing.assert_allclose(big.mu_px[nose] / 2, small.mu_px[nose], atol=1.5)
    fractions = landmarker.model.metadata.sigma_roi_fraction
    np.testing.assert_allclose(small.sigma_px, fractions * small.roi.size_px, rtol=1e-4)


@needs_fixtures
@pytest.mark.parametrize("name, nme51_limit", [("face_mesh_468", 8.0), ("face_mesh_478", 7.0)])
def test_accuracy_and_sigma_calibration_on_annotated_faces(models, detector, name, nme51_limit):
    if name not in models:
        pytest.skip("the 478-point bundle is not among the shared fixtures")
    faces = load_annotated_faces(FIXTURES / "landmarks")
    landmarker = Landmarker(LandmarkModel.load(models[name]), detector)
    results = evaluate(landmarker, faces)
    assert len(results) >= len(faces) - 3  # a few extreme profiles may be rejected, not guessed
    summary = summarise(results)
    frontal = [r for r in results if not r.name.startswith("aflw2000")]  # 300-W and 300-VW
    assert summarise(frontal)["nme51_percent"] < nme51_limit
    assert summary["nme68_box_percent"] < 6.0
    # sigma must describe the errors: normalised errors have unit RMS per axis
    semantic = landmarker.model.metadata.semantic_points
    fractions = landmarker.model.metadata.sigma_roi_fraction
    sigma = np.array([[fractions[semantic[f"ibug_{k:02d}"]] * r.roi_size_px for k in range(68)] for r in results])
    errors = np.array([r.errors_px for r in results])
    z = np.sqrt(np.mean((errors / sigma) ** 2) / 2)
    assert 0.7 < z < 1.4


def test_no_face_gives_flags_and_one_clear_error(mesh, detector, tmp_path):
    grey = Frame(0, np.full((240, 320, 3), 128, np.uint8), 0.0, 255)
    result = Landmarker(mesh, detector).process([grey])[0]
    assert result.flags == frozenset({"no_face"}) and result.presence == 0.0 and result.roi is None
    assert np.isnan(result.mu_px).all()
    writer = cv2.VideoWriter(str(tmp_path / "wall.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for value in range(0, 100, 10):
        writer.write(np.full((240, 320, 3), value, np.uint8))
    writer.release()
    with pytest.raises(NoFaceError, match=r"no face found in any of the 10 frames of .*wall\.avi"):
        Landmarker(mesh, detector).track(open_video(tmp_path / "wall.avi"))


@pytest.mark.skipif(not GRID.is_file(), reason="shared fixtures absent")
def test_tracking_a_talking_head_is_stable_and_realtime_agrees(mesh, detector, tmp_path):
    source = open_video(GRID, frame_range=(0, 30))
    offline = Landmarker(mesh, detector).track(source)
    assert offline.valid.all() and offline.mu_px.shape == (30, 1, 468, 2)
    assert offline.flags["redetected"].sum() == 0
    assert np.nanstd(offline.roi_size_px) < 0.05 * np.nanmean(offline.roi_size_px)
    nose = offline.semantic_points["ibug_30"]
    steps = np.linalg.norm(np.diff(offline.mu_px[:, 0, nose], axis=0), axis=1)
    assert steps.max() < 3.0  # little head motion in this clip: no jumps
    realtime = Landmarker(mesh, detector, realtime=True).track(source)
    assert realtime.valid.all()
    difference = np.linalg.norm(realtime.mu_px - offline.mu_px, axis=-1)
    assert np.median(difference) < 0.03 * np.nanmean(offline.roi_size_px)
    saved = LandmarkTrack.load_npz(offline.save_npz(tmp_path / "track.npz"))
    np.testing.assert_array_equal(saved.mu_px, offline.mu_px)
    assert saved.semantic_points == offline.semantic_points and saved.view_names == offline.view_names
    assert all(np.array_equal(saved.flags[k], offline.flags[k]) for k in offline.flags)


@pytest.mark.skipif(not GRID.is_file(), reason="shared fixtures absent")
def test_multiview_views_are_tracked_together(mesh, detector, tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "mirror.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (360, 288))
    for frame in open_video(GRID, frame_range=(0, 8)):
        writer.write(np.ascontiguousarray(frame.image[:, ::-1, ::-1]))
    writer.release()
    writer = cv2.VideoWriter(str(tmp_path / "front.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (360, 288))
    for frame in open_video(GRID, frame_range=(0, 8)):
        writer.write(np.ascontiguousarray(frame.image[..., ::-1]))
    writer.release()
    c, s = np.cos(0.5), np.sin(0.5)
    (tmp_path / "rig.json").write_text(json.dumps({"format": "facecap-calibration", "format_version": 1, "cameras": [
        {"name": "front", "video": "front.avi", "image_size_px": [360, 288], "focal_px": 400.0,
         "R": np.eye(3).tolist(), "t_m": [0, 0, 0]},
        {"name": "mirror", "video": "mirror.avi", "image_size_px": [360, 288], "focal_px": None,
         "R": [[c, 0, s], [0, 1, 0], [-s, 0, c]], "t_m": [0.2, 0, 0]}]}))
    track = Landmarker(mesh, detector).track(open_multiview(None, tmp_path / "rig.json"))
    assert track.mu_px.shape == (8, 2, 468, 2) and track.view_names == ("front", "mirror")
    assert track.valid.all()
    nose = track.semantic_points["ibug_30"]
    # the mirrored view sees the nose at the mirrored x
    np.testing.assert_allclose(360 - track.mu_px[:, 1, nose, 0], track.mu_px[:, 0, nose, 0], atol=4.0)


# -- the default: MediaPipe's face points plus the dense network's whole-head points --------
@pytest.fixture(scope="module")
def dense(detector):
    from fitter_backend.landmarks import DENSE_LANDMARKS
    return Landmarker(LandmarkModel.load(DENSE_MODELS / f"{DENSE_LANDMARKS}.onnx"), detector)


@needs_fixtures
def test_whole_head_landmarks_are_the_face_mesh_then_the_dense_head_points(mesh, detector, dense, astronaut):
    from fitter_backend.landmarks.combined import HEAD_REGIONS, SIGMA_SCALE, CombinedLandmarker
    combined = CombinedLandmarker(Landmarker(mesh, detector), dense)
    regions = dense.model.metadata.regions
    expected = sorted({i for name in HEAD_REGIONS for i in regions[name]})
    assert combined.head_points.tolist() == expected and not set(expected) & set(regions["face"])
    result = combined.process([astronaut])[0]
    face = Landmarker(mesh, detector).process([astronaut])[0]
    head = Landmarker(dense.model, detector).process([astronaut])[0]
    assert result.valid and result.mu_px.shape == (468 + len(expected), 2) == (combined.num_landmarks, 2)
    np.testing.assert_array_equal(result.mu_px[:468], face.mu_px)
    np.testing.assert_array_equal(result.mu_px[468:], head.mu_px[expected])
    np.testing.assert_allclose(result.sigma_px[468:], SIGMA_SCALE * head.sigma_px[expected], rtol=1e-6)
    assert result.flags == face.flags and result.presence == face.presence
    assert combined.semantic_points["ibug_30"] == mesh.metadata.semantic_points["ibug_30"]


@needs_fixtures
def test_a_head_model_that_loses_the_head_leaves_its_points_missing_not_guessed(mesh, detector, dense, astronaut):
    import dataclasses
    from fitter_backend.landmarks.combined import CombinedLandmarker
    doubtful = LandmarkModel(dense.model.session, dataclasses.replace(dense.model.metadata, presence_threshold=1.0),
                             dense.model.onnx_path)  # no presence reaches 1: the head model never trusts itself
    result = CombinedLandmarker(Landmarker(mesh, detector), Landmarker(doubtful, detector)).process([astronaut])[0]
    assert result.valid and np.isfinite(result.mu_px[:468]).all()
    assert np.isnan(result.mu_px[468:]).all() and np.isinf(result.sigma_px[468:]).all()


def test_combination_names_are_checked(models):
    from fitter_backend.landmarks import load_landmarker
    with pytest.raises(LandmarkModelError, match="two joined by '\\+'"):
        load_landmarker("face_mesh_468+dense_320_mobilenet_v2+face_mesh_478", progress=lambda m: None)
    with pytest.raises(LandmarkModelError, match="'face_mesh_468' has no region"):
        load_landmarker("dense_320_mobilenet_v2+face_mesh_468", progress=lambda m: None)
    with pytest.raises(LandmarkModelError, match="no landmark model 'nonsense'"):
        load_landmarker("face_mesh_468+nonsense", progress=lambda m: None)
