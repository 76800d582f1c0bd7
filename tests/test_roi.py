"""ROI: exact crops, BlazeFace decoding and detection, face choice and tracking."""
import json

import cv2
import numpy as np
import pytest

from fitter_backend.landmarks import Landmarker, LandmarkModel, LandmarkModelError
from fitter_backend.roi import AffineRoi, FaceDetector, SquareRoi
from fitter_backend.roi.detector import FaceCandidate, ssd_anchors, weighted_nms
from fitter_backend.roi.regions import similarity_matrix
from fitter_backend.roi.tracker import choose_face
from fitter_backend.video import open_video
from fitter_backend.video.frames import Frame
from tests.conftest import SHARED

ASTRONAUT = SHARED / "fixtures" / "images" / "astronaut.png"
needs_astronaut = pytest.mark.skipif(not ASTRONAUT.is_file(), reason="shared fixtures absent")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return next(iter(open_video(ASTRONAUT))).image


def smooth_image(height: int = 300, width: int = 400) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    grey = 127 + 60 * np.sin(x / 13.0) + 60 * np.cos(y / 17.0)
    return np.dstack([grey, grey[::-1], 255 - grey]).astype(np.uint8)


def bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Reference sampler in the project convention (pixel centres at +0.5), black outside."""
    height, width = image.shape[:2]

    def pixel(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        inside = ((i >= 0) & (i < height) & (j >= 0) & (j < width))[:, None]
        return np.where(inside, image[np.clip(i, 0, height - 1), np.clip(j, 0, width - 1)], 0.0)

    u, v = points[:, 0] - 0.5, points[:, 1] - 0.5
    j, i = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = (u - j)[:, None], (v - i)[:, None]
    return ((1 - a) * (1 - b) * pixel(i, j) + a * (1 - b) * pixel(i, j + 1)
            + (1 - a) * b * pixel(i + 1, j) + a * b * pixel(i + 1, j + 1))


@pytest.mark.parametrize("roi", [
    SquareRoi((200.3, 150.7), 123.4),               # enlarging a little
    SquareRoi((30.0, 20.0), 150.0),                 # hanging over the corner: black outside
    AffineRoi(similarity_matrix(np.array([[170.0, 130], [200, 126], [186, 160]]),
                                np.array([[0.38, 0.38], [0.62, 0.38], [0.5, 0.65]]))),
])
def test_crop_maps_back_to_image_pixels_exactly(roi):
    image = smooth_image()
    crop, transform = roi.crop(image, 96)
    rng = np.random.default_rng(0)
    points = rng.uniform(-50, 450, (500, 2))
    np.testing.assert_allclose(transform.to_image(transform.to_crop(points)), points, atol=1e-4)
    # the pixel at crop centre (u + 0.5, v + 0.5) holds the image sampled at its mapped point
    uv = rng.integers(0, 96, (400, 2))
    expected = bilinear(image, transform.to_image(uv + 0.5))
    got = crop[uv[:, 1], uv[:, 0]].astype(float)
    assert transform.scale > 0.5  # no pyramid step here: plain bilinear sampling
    assert np.abs(got - expected).max() <= 1.0


def test_square_roi_geometry():
    roi = SquareRoi.around_box(np.array([100.0, 50.0, 160.0, 130.0]), 1.5)
    assert roi.centre_px == (130.0, 90.0) and roi.size_px == pytest.approx(120.0)
    transform = roi.transform(192)
    np.testing.assert_allclose(transform.to_crop(np.array([[70.0, 30.0], [190.0, 150.0]])), [[0, 0], [192, 192]])
    assert transform.scale == pytest.approx(1.6)
    points = np.array([[10.0, 20.0], [30.0, 60.0], [np.nan, np.nan]])
    np.testing.assert_allclose(SquareRoi.around_points(points, 2.0).box(), [-20, 0, 60, 80])


def test_strong_downscale_is_antialiased_and_still_exact():
    height, width = 1600, 2400
    y, x = np.mgrid[0:height, 0:width] + 0.5
    centre = np.array([1210.3, 807.8])
    blob = 250 * np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * 20.0 ** 2))
    image = np.dstack([blob] * 3).astype(np.uint16) * 200  # 16-bit input
    crop, transform = SquareRoi((1300.0, 900.0), 1500.0).crop(image, 192)
    assert crop.dtype == np.uint16 and transform.scale == pytest.approx(0.128)
    weights = crop[..., 0].astype(float)
    v, u = np.mgrid[0:192, 0:192] + 0.5
    found = transform.to_image(np.array([(u * weights).sum(), (v * weights).sum()]) / weights.sum())
    np.testing.assert_allclose(found, centre, atol=0.2)  # 0.2 image px = 0.03 crop px
    # a single-pixel checkerboard averages out instead of aliasing into stripes
    checker = (np.indices((height, width)).sum(0) % 2 * 255).astype(np.uint8)
    crop, _ = SquareRoi((1200.0, 800.0), 1500.0).crop(np.dstack([checker] * 3), 192)
    assert np.abs(crop.astype(float) - 127.5).max() < 3


def test_similarity_matrix_recovers_a_known_similarity():
    angle, scale, shift = 0.3, 0.01, np.array([0.2, -0.1])
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.array([[10.0, 20.0], [50.0, 25.0], [30.0, 70.0]])
    matrix = similarity_matrix(source, source @ linear.T + shift)
    np.testing.assert_allclose(matrix, np.hstack([linear, shift[:, None]]), atol=1e-12)


def test_blazeface_anchor_layout():
    anchors = ssd_anchors(128, [8, 16], [2, 6], 0.5)
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[:2], [[0.5 / 16, 0.5 / 16]] * 2)
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=float)
    keypoints = np.zeros((3, 1, 2))
    keypoints[1] = 2.0
    merged = weighted_nms(boxes, keypoints, np.array([0.9, 0.6, 0.8]), 0.3)
    assert len(merged) == 2
    assert merged[0].score == 0.9
    np.testing.assert_allclose(merged[0].box_px, [0.4, 0, 10.4, 10])  # (0.9 * 0 + 0.6 * 1) / 1.5
    np.testing.assert_allclose(merged[0].keypoints_px, [[0.8, 0.8]])
    np.testing.assert_allclose(merged[1].box_px, boxes[2])


def test_choose_face_prefers_the_followed_then_the_largest_central_face():
    def face(box):
        return FaceCandidate(np.array(box, float), 0.9, np.zeros((6, 2)))
    small_centre, big_corner, big_centre = face([90, 90, 110, 110]), face([0, 0, 60, 60]), face([70, 70, 130, 130])
    assert choose_face([small_centre, big_corner, big_centre], (200, 200)) is big_centre
    assert choose_face([small_centre, big_corner], (200, 200)) is big_corner
    assert choose_face([small_centre, big_centre], (200, 200), previous_box=np.array([0, 0, 55, 55])) is big_centre
    assert choose_face([small_centre, big_corner], (200, 200), previous_box=np.array([88, 88, 112, 112])) \
        is small_centre
    assert choose_face([], (200, 200)) is None


@needs_astronaut
def test_detector_finds_the_astronaut_with_keypoints(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1 and faces[0].score > 0.8
    x0, y0, x1, y1 = faces[0].box_px
    assert 160 < x0 < 195 and 65 < y0 < 100 and 255 < x1 < 290 and 160 < y1 < 195
    right_eye, left_eye, nose = faces[0].keypoints_px[:3]
    assert right_eye[0] < nose[0] < left_eye[0]  # the subject's right eye is on the image left
    assert max(right_eye[1], left_eye[1]) < nose[1]


@needs_astronaut
def test_detector_finds_small_faces_by_windows_and_all_of_several(detector, astronaut):
    canvas = np.zeros((2160, 3840, 3), np.uint8)
    canvas[1000:2024, 2600:3624] = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_AREA)
    faces = detector.detect(canvas)  # a 190-pixel face: too small for the whole-frame pass
    assert len(faces) == 1
    centre = faces[0].centre_px
    assert 2600 + 440 < centre[0] < 2600 + 460 and 1000 + 250 < centre[1] < 1000 + 270
    two = np.zeros((512, 1024, 3), np.uint8)
    two[:, :512] = astronaut
    two[:, 512:] = astronaut[:, ::-1]
    assert len(detector.detect(two)) == 2
    assert detector.detect(np.full((300, 300, 3), 128, np.uint8)) == []


def test_detector_metadata_must_match_the_graph(models, tmp_path):
    metadata = json.loads(models["face_detector"].with_suffix(".json").read_text())
    metadata["input"]["size_px"] = 192
    (tmp_path / "det.json").write_text(json.dumps(metadata))
    with pytest.raises(LandmarkModelError, match="do not match input"):
        FaceDetector.load(models["face_detector"], tmp_path / "det.json")
    metadata["input"]["size_px"] = 128
    metadata["outputs"]["boxes"]["name"] = "boxes"
    (tmp_path / "det.json").write_text(json.dumps(metadata))
    with pytest.raises(LandmarkModelError, match="output 'boxes'"):
        FaceDetector.load(models["face_detector"], tmp_path / "det.json")


@needs_astronaut
def test_tracker_follows_a_moving_face_and_redetects_after_a_jump(models, detector, astronaut):
    landmarker = Landmarker(LandmarkModel.load(models["face_mesh_468"]), detector)
    nose = landmarker.model.metadata.semantic_points["ibug_30"]
    canvas = np.zeros((700, 900, 3), np.uint8)
    placements = [(0, 0), (8, 5), (16, 10), (380, 180)]  # small steps, then a jump
    noses = []
    for index, (dx, dy) in enumerate(placements):
        canvas[:] = 0
        canvas[dy:dy + 512, dx:dx + 512] = astronaut
        result = landmarker.process([Frame(index, canvas.copy(), index / 25, 255)])[0]
        assert result.valid
        noses.append(result.mu_px[nose] - [dx, dy])
        if index in (1, 2):
            assert result.flags == frozenset()  # tracked from the previous frame, no detection
        if index == 3:
            assert "redetected" in result.flags  # the old ROI lost the face
    np.testing.assert_allclose(noses, [noses[0]] * 4, atol=2.5)


@needs_astronaut
def test_two_faces_follow_the_largest_central_one_and_say_so(models, detector, astronaut, tmp_path):
    image = np.zeros((512, 1100, 3), np.uint8)
    image[:, 600:1100] = astronaut[:, 6:506]
    small = cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA)
    image[50:450, 0:400] = small
    cv2.imwrite(str(tmp_path / "two.png"), image[..., ::-1])
    landmarker = Landmarker(LandmarkModel.load(models["face_mesh_468"]), detector)
    track = landmarker.track(open_video(tmp_path / "two.png"))
    assert track.flags["multiple_faces"][0, 0]
    assert any("2 faces detected" in note and "largest, most central" in note for note in track.notes)
    assert track.mu_px[0, 0, :, 0].min() > 600  # the bigger face on the right, not the small one


@needs_astronaut
def test_a_model_trained_on_affine_crops_gets_affine_crops_from_the_detector_keypoints(models, detector,
                                                                                     astronaut, tmp_path):
    metadata = json.loads(models["face_mesh_468"].with_suffix(".json").read_text())
    metadata["roi"]["crop"] = "affine"
    (tmp_path / "affine.json").write_text(json.dumps(metadata))
    model = LandmarkModel.load(models["face_mesh_468"], tmp_path / "affine.json")
    assert model.metadata.roi.crop == "affine"
    first = Landmarker(model, detector, refine_detections=False).process([Frame(0, astronaut, 0.0, 255)])[0]
    keypoints = dict(zip(detector.keypoint_names, detector.detect(astronaut)[0].keypoints_px))
    expected = AffineRoi.from_anchors({"right_eye": keypoints["right_eye"], "left_eye": keypoints["left_eye"],
                                       "mouth": keypoints["mouth_centre"]}, model.metadata.roi.affine_targets)
    assert isinstance(first.roi, AffineRoi)
    np.testing.assert_allclose(first.roi.unit_matrix, expected.unit_matrix, rtol=1e-9)
    # Offline tracking stays affine: the next frame's crop comes from the landmarks' anchors.
    landmarker = Landmarker(model, detector)
    results = [landmarker.process([Frame(k, astronaut, k / 25, 255)])[0] for k in range(2)]
    assert all(isinstance(r.roi, AffineRoi) and r.valid for r in results)
    assert results[1].flags == frozenset()
    metadata["roi"]["crop"] = "circle"
    (tmp_path / "affine.json").write_text(json.dumps(metadata))
    with pytest.raises(LandmarkModelError, match=r"roi\.crop: expected one of \('square', 'affine'\)"):
        LandmarkModel.load(models["face_mesh_468"], tmp_path / "affine.json")
