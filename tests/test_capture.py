"""Lids the landmark stage can see (the iris-refined face mesh) and the capture evaluation."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURES
from fitter_backend.evaluation.capture_measures import (
    IBUG_NAMES,
    event_recall_precision,
    eye_corner_distance_mm,
    eyes_apart_deg,
    gap_and_width,
    gaze_jitter_deg,
    opening_ratios,
    outside_unit_range,
    runs,
    slope,
)

WOJTEK = FIXTURES / "video" / "metrical_tracker_wojtek.mp4"


def eye_points(upper_y: float, lower_y: float) -> np.ndarray:
    """(68, 2) image points: only the right eye is placed (corners at y = 100)."""
    points = np.zeros((68, 2))
    points[36], points[39] = (100, 100), (130, 100)
    points[37], points[38] = (110, upper_y), (120, upper_y)
    points[41], points[40] = (110, lower_y), (120, lower_y)
    return points


def test_gaps_are_signed_so_crossed_lids_read_below_zero():
    open_gap, _ = gap_and_width(eye_points(95, 105), {"corners": (36, 39), "upper": (37, 38), "lower": (41, 40)})
    crossed = opening_ratios(eye_points(104, 96))["eye_right"]
    assert open_gap == pytest.approx(10.0) and crossed == pytest.approx(-8 / 30)
    head_frame = np.zeros((68, 3))
    head_frame[[37, 38], 1], head_frame[[41, 40], 1] = 0.002, 0.003   # upper lid below the lower one
    head_frame[39, 0] = 0.03
    assert gap_and_width(head_frame, {"corners": (36, 39), "upper": (37, 38), "lower": (41, 40)})[0] == \
        pytest.approx(-0.001)


def test_blink_events_recall_and_precision():
    truth = np.zeros(30, bool)
    truth[[3, 4, 5, 15, 16, 25]] = True
    fitted = np.zeros(30, bool)
    fitted[[6, 20, 21]] = True           # meets the first blink one frame late; 20-21 is a false alarm
    assert runs(truth) == [(3, 6), (15, 17), (25, 26)]
    recall, precision, true_events, fitted_events = event_recall_precision(truth, fitted)
    assert (recall, precision, true_events, fitted_events) == (pytest.approx(1 / 3), 0.5, 3, 2)
    assert np.isnan(event_recall_precision(truth, np.zeros(30, bool))[1])


def test_slope_is_the_amplitude_one_series_follows_the_other_at():
    truth = np.array([0.0, 0.1, 0.4, 0.2, np.nan, 0.3])
    assert slope(0.6 * truth + 0.05, truth) == pytest.approx(0.6)      # opens 60 % as far, offset or not
    assert np.isnan(slope(truth, np.full(6, 0.2)))                       # a constant truth has no slope


def test_lips_apart_follows_a_gap_sealed_over_an_open_jaw():
    from fitter_backend.evaluation.capture_measures import FittedShot, correlation

    # Speech: the jaw drops twice; on the second drop the lips seal over it (a "b"): mouthClose.
    jaw_open = np.array([0.0, 0.3, 0.3, 0.0, 0.3, 0.3, 0.0])
    mouth_close = np.array([0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.0])
    gap = np.array([0.0, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0])
    shot = FittedShot(identity=None, expression=np.stack([mouth_close, jaw_open], axis=1), rotations=None,
                      translation_m=None, cameras=None, expression_names=("mouthClose", "jawOpen"), flags=[],
                      mu_px=None, semantic_points={}, frame_indices=np.arange(7), report={})
    np.testing.assert_allclose(shot.lips_apart(), jaw_open - mouth_close)
    assert correlation(shot.lips_apart(), gap) == pytest.approx(1.0)
    assert correlation(shot.weight("jawOpen"), gap) < 0.8


def test_weights_outside_unit_range_allow_a_small_tolerance():
    assert outside_unit_range(np.array([0.0, 1.0, -0.005, 1.005, -0.2, 1.3])) == pytest.approx(2 / 6)


def test_gaze_shake_and_the_angle_between_the_eyes():
    """The left eye sweeps smoothly (no shake); the right one looks 5 degrees further across
    and shakes by +-1 degree from frame to frame (second differences of 4 degrees)."""
    from types import SimpleNamespace

    model = SimpleNamespace(eyeball_joints=np.array([1, 2]))
    yaw = np.radians(np.linspace(-10, 10, 21))
    shake = np.radians(np.where(np.arange(21) % 2, 1.0, -1.0))
    rotations = np.zeros((21, 3, 3))
    rotations[:, 1, 1], rotations[:, 2, 1] = yaw, yaw + np.radians(5.0) + shake
    jitter = gaze_jitter_deg(model, rotations)
    assert jitter[0] < 0.05 and jitter[1] == pytest.approx(4.0, rel=0.01)  # a sweep bends the gaze only by its curvature
    assert np.allclose(eyes_apart_deg(model, rotations), 5.0 + np.degrees(shake), atol=1e-4)


def test_eye_corner_distance_is_the_neutral_heads_outer_corners_apart_in_mm():
    from fitter_backend.head_models.open_head import load_open_head

    model = load_open_head()
    corners = model.semantic_points.subset(("ibug_36", "ibug_45"))
    rest = np.einsum("nk,nkc->nc", corners.barycentric, model.template[model.triangles[corners.triangle]])
    mean_mm = eye_corner_distance_mm(model, np.zeros(model.num_identity))
    assert mean_mm == pytest.approx(1000 * np.linalg.norm(rest[0] - rest[1]), rel=1e-4) and 60 < mean_mm < 110
    actor = np.random.default_rng(3).standard_normal(model.num_identity)
    assert abs(eye_corner_distance_mm(model, actor) / mean_mm - 1) > 1e-3   # follows the identity


def blink_scene():
    """The open head facing the camera 0.5 m away, eyes open (frame 0) and shut (frame 1):
    model, vertices (2, V, 3) and cameras, as the sample clip renders them."""
    from fitter_backend.fitting.cameras import Cameras, focal_from_hfov
    from fitter_backend.head_models.lbs import posed_vertices
    from fitter_backend.head_models.loading import load_head_model

    model = load_head_model("open")
    expression = np.zeros((2, model.num_expression))
    expression[1, [model.expression_names.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight")]] = 1.0
    translation = np.array([[0.0, -model.template[:, 1].mean(), -0.5]] * 2)
    vertices = posed_vertices(model, None, expression, None, translation)
    return model, vertices, Cameras.monocular(320, 320, focal_from_hfov(320, 40.0))


@pytest.fixture(scope="module")
def blink_frames():
    """An open-eyed and a closed-eyed frame of the open head, rendered like the sample clip."""
    from fitter_backend.sample_clip import render_views
    from fitter_backend.video import open_video

    model, vertices, cameras = blink_scene()
    with tempfile.TemporaryDirectory() as folder:
        (clip,) = render_views(model, vertices, cameras, [Path(folder) / "blink.mp4"])
        return list(open_video(clip))


def test_rendered_eyes_have_a_dark_iris_and_pupil_on_white(blink_frames):
    # Blank white eyeballs made the landmark models misread the rendered lids.
    from fitter_backend.fitting.cameras import project

    model, vertices, cameras = blink_scene()
    image = blink_frames[0].image.astype(float).mean(axis=2)
    for side in (model.template[:, 0] < 0, model.template[:, 0] >= 0):
        eyeball = model.template[model.regions["eyeballs"] & side]
        centre = (eyeball.min(axis=0) + eyeball.max(axis=0)) / 2
        front = np.array([centre[0], centre[1], eyeball[:, 2].max()])  # straight ahead at rest
        moved = front + (vertices[0] - model.template).mean(axis=0)    # frame 0 is the rest head, moved
        col, row = np.floor(project(moved[None, None], cameras, 0, derivatives=False).pixels[0, 0]).astype(int)
        pupil = image[row - 1:row + 2, col - 1:col + 2].mean()
        sclera = image[row - 3:row + 4, col - 14:col + 15].max()  # beside the iris, between the lids
        assert pupil < 0.25 * sclera, (pupil, sclera)


def test_each_rendered_pixel_averages_its_samples_as_a_sensor_does():
    # Point-sampled pixels aliased the seam of a shut eye into specks of white eyeball.
    import dataclasses

    import cv2

    from fitter_backend.sample_clip import SUPERSAMPLE, _albedo, eyeball_directions, render_frame

    model, vertices, cameras = blink_scene()
    paint = (_albedo(model), eyeball_directions(model))
    image = render_frame(model, vertices[1], cameras, 0, *paint)
    assert SUPERSAMPLE >= 2 and image.shape == (320, 320, 3)
    fine_cameras = dataclasses.replace(cameras, image_size_px=cameras.image_size_px * SUPERSAMPLE,
                                       focal_px=cameras.focal_px * SUPERSAMPLE)
    fine = render_frame(model, vertices[1], fine_cameras, 0, *paint, supersample=1)
    averaged = fine.reshape(320, SUPERSAMPLE, 320, SUPERSAMPLE, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(image, averaged, atol=1e-5)
    point_sampled = render_frame(model, vertices[1], cameras, 0, *paint, supersample=1)
    outline = np.abs(point_sampled - image).max(axis=2) > 0.05   # mixed pixels: edges, the lid seam
    assert 0.002 < outline.mean() < 0.2


def eye_ratios(landmarker, frame) -> np.ndarray:
    landmarker.reset()
    result = landmarker.process([frame])[0]
    assert result.valid
    ibug = result.mu_px[[landmarker.semantic_points[n] for n in IBUG_NAMES]].astype(np.float64)
    ratios = opening_ratios(ibug)
    return np.array([ratios["eye_right"], ratios["eye_left"]])


def test_iris_refined_lids_close_where_the_face_mesh_stays_open(models, blink_frames):
    from fitter_backend.landmarks import load_landmarker

    mesh = load_landmarker("face_mesh_468", progress=lambda m: None)
    refined = load_landmarker("face_mesh_468_iris", progress=lambda m: None)
    mesh_closed_over_open = eye_ratios(mesh, blink_frames[1]) / eye_ratios(mesh, blink_frames[0])
    refined_closed_over_open = eye_ratios(refined, blink_frames[1]) / eye_ratios(refined, blink_frames[0])
    assert np.all(mesh_closed_over_open > 0.7)          # the face mesh barely closes its lids
    assert np.all(refined_closed_over_open < 0.4)
    assert refined.landmark_set == mesh.landmark_set + "_iris" and refined.model.metadata.name == "face_mesh_468_iris"
    lid = 159  # upper lid of the subject's right eye: measured sigma of the refined lids
    assert refined.model.metadata.sigma_roi_fraction[lid] < mesh.model.metadata.sigma_roi_fraction[lid]


def test_iris_centres_are_on_the_pupils_and_missing_under_a_shut_lid(models, blink_frames):
    from fitter_backend.fitting.cameras import project
    from fitter_backend.head_models.eyes import pupil_surface_points
    from fitter_backend.head_models.lbs import surface_points
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.eye_refine import IRIS_CENTRES

    refined = load_landmarker("face_mesh_468_iris", progress=lambda m: None)
    centres = [refined.semantic_points[name] for name in IRIS_CENTRES.values()]
    assert refined.num_landmarks == 470 and centres == [468, 469] and refined.metadata.regions["irises"] == (468, 469)
    model, vertices, cameras = blink_scene()
    pupils = project(surface_points(vertices[:1], model.triangles, pupil_surface_points(model)), cameras, 0,
                     derivatives=False).pixels[0]                  # left, right
    opened, shut = (eye_result(refined, frame) for frame in blink_frames)
    found = opened.mu_px[centres][::-1]                            # right, left -> left, right
    assert np.all(np.linalg.norm(found - pupils, axis=1) < 3.0)   # on the painted pupils (eyes 30 px wide)
    assert np.all(np.isfinite(opened.sigma_px[centres]))
    assert np.isnan(shut.mu_px[centres]).all() and np.isinf(shut.sigma_px[centres]).all()
    assert np.isfinite(shut.mu_px[:468]).all()                     # the shut lids themselves are seen


def level_lids(lower_px: float, upper_px: float) -> np.ndarray:
    """(16, 2) one eye's lid contour, corners 30 px apart on y = 0: the lower lid ``lower_px``
    below the corners' line, the upper ``upper_px`` above it (image y points down)."""
    lids = np.zeros((16, 2))
    lids[:9, 0], lids[9:, 0] = np.linspace(0, 30, 9), np.linspace(3.75, 26.25, 7)
    lids[1:8, 1], lids[9:, 1] = lower_px, -upper_px
    return lids


ROTATION = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])


def test_lid_opening_is_the_gap_across_the_corners_line_over_the_width():
    from fitter_backend.landmarks.eye_refine import lid_opening

    lids = level_lids(4.0, 5.0)
    assert lid_opening(lids) == pytest.approx(0.3) and lid_opening(lids @ ROTATION.T + 7) == pytest.approx(0.3)


def test_stretched_lids_read_shut_under_the_shut_reading_and_keep_open_eyes():
    """Below the open reference the opening g becomes ref (g - shut) / (ref - shut); each upper-lid
    point moves only across the corners' line, toward its partner on the lower lid."""
    from fitter_backend.landmarks.eye_refine import lid_opening, stretch_lids

    np.testing.assert_array_equal(stretch_lids(level_lids(4.0, 5.0), 0.1, 0.3), level_lids(4.0, 5.0))  # 0.3: open
    half = level_lids(2.0, 4.0) @ ROTATION.T + 7                   # 0.2 of the width, turned and moved
    stretched = stretch_lids(half, 0.1, 0.3)
    assert lid_opening(stretched) == pytest.approx(0.3 * 0.1 / 0.2)
    level = (stretched - 7) @ ROTATION                             # back to the corners' frame
    np.testing.assert_allclose(level[:, 0], level_lids(2.0, 4.0)[:, 0], atol=1e-9)   # along the line: kept
    np.testing.assert_allclose(level[[0, 8]], [[0, 0], [30, 0]], atol=1e-9)            # corners kept
    np.testing.assert_allclose(level[1:8, 1], 2.0)                                    # lower lid kept
    np.testing.assert_allclose(level[1:8, 1] - level[9:, 1], 0.75 * 6.0)             # each pair's gap x 0.75
    slit = stretch_lids(level_lids(1.0, 1.4), 0.1, 0.3)            # 0.08: under the shut reading
    assert lid_opening(slit) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(slit[9:, 1], 1.0, atol=1e-12)                          # upper lid on the lower


def eye_result(landmarker, frame):
    landmarker.reset()
    result = landmarker.process([frame])[0]
    assert result.valid and result.mu_px.shape == (landmarker.num_landmarks, 2)
    return result


@pytest.mark.skipif(not WOJTEK.is_file(), reason="shared fixtures absent")
def test_iris_points_land_on_the_face_meshs_eye_contour(models):
    """The index table is right: on open eyes each refined lid point lies near the mesh's own."""
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.eye_refine import MESH_INDICES, REFINED_POINTS
    from fitter_backend.video import open_video

    (frame,) = list(open_video(WOJTEK, frame_range=(100, 101)))
    mesh = load_landmarker("face_mesh_468", progress=lambda m: None).process([frame])[0].mu_px
    refined = load_landmarker("face_mesh_468_iris", progress=lambda m: None).process([frame])[0].mu_px
    for indices in MESH_INDICES.values():
        lids = list(indices[:REFINED_POINTS])
        eye_width = np.linalg.norm(mesh[indices[0]] - mesh[indices[8]])
        assert np.mean(np.linalg.norm(refined[lids] - mesh[lids], axis=1)) < 0.1 * eye_width
    untouched = np.setdiff1d(np.arange(len(mesh)), [i for v in MESH_INDICES.values() for i in v[:REFINED_POINTS]])
    np.testing.assert_array_equal(refined[untouched], mesh[untouched])


@pytest.mark.skipif(not WOJTEK.is_file(), reason="shared fixtures absent")
def test_attention_lids_close_a_shut_eye_further_and_are_averaged_with_the_iris_models(models):
    """wojtek 110, 230, 231 (eyes shut): the default's lids, the mean of the attention mesh's and
    the iris model's, read the eyes more closed than the iris model's alone; each lid point is
    that mean."""
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.eye_refine import MESH_INDICES, REFINED_POINTS, lid_opening, refine_eyes
    from fitter_backend.video import open_video

    iris_only = load_landmarker("face_mesh_468_iris", progress=lambda m: None)
    default = load_landmarker("face_mesh_468_attention_lids_iris", progress=lambda m: None)
    openings = {iris_only: [], default: []}
    for frame in (110, 230, 231):
        (shut,) = list(open_video(WOJTEK, frame_range=(frame, frame + 1)))
        for landmarker, found in openings.items():
            mu = eye_result(landmarker, shut).mu_px
            found.extend(lid_opening(mu[list(indices[:REFINED_POINTS])]) for indices in MESH_INDICES.values())
    assert np.mean(openings[default]) < 0.75 * np.mean(openings[iris_only])   # measured 0.05 against 0.08
    mesh = load_landmarker("face_mesh_468_attention_lids", progress=lambda m: None).process([shut])[0].mu_px
    mesh = mesh.astype(np.float64)
    half, iris_lids = (refine_eyes([shut], [mesh], default.iris, mesh_weight=w)[0] for w in (0.5, 0.0))
    for indices in MESH_INDICES.values():
        lids = list(indices[:REFINED_POINTS])
        np.testing.assert_allclose(half[lids], 0.5 * (mesh[lids] + iris_lids[lids]), atol=1e-9)
        assert not np.allclose(mesh[lids], iris_lids[lids], atol=0.5)          # two different lid models
    others = np.setdiff1d(np.arange(len(mesh)), [i for v in MESH_INDICES.values() for i in v[:REFINED_POINTS]])
    np.testing.assert_array_equal(half[others], mesh[others])


def test_capture_command_on_a_short_rendered_clip(tmp_path, capsys):
    from fitter_backend.evaluation.__main__ import main
    from fitter_backend.landmarks import FACE_LANDMARKS  # placed on the open head by set-up

    out = tmp_path / "capture.json"
    assert main(["capture", "--landmarks", FACE_LANDMARKS, "--clips", "1", "--frames", "25", "--real", "none",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "blink recall" in printed and "ARKit weights outside" in printed
    (clip,) = json.loads(out.read_text())["rendered"][FACE_LANDMARKS]
    assert clip["closed_over_open_true_right"] == pytest.approx(0.0, abs=0.1)   # eyeBlink = 1 closes exactly
    assert 0 <= clip["arkit_outside_pct"] <= 100 and abs(clip["focal_err_pct"]) < 60
    # The fitted iBUG points over the true ones in the image: a few pixels, never zero.
    assert "iBUG points in the image" in printed and 0 < clip["image_err_px"] < 20
    # The clip's jaw opens: the landmarks and the fit see it open, by a measurable fraction.
    assert "mouth opening / true" in printed and 0.2 < clip["landmark_mouth_scale"] < 1.5
    assert 0.2 < clip["mouth_scale"] < 1.5
    # Every scripted unit beside the lids and the jaw is compared with its truth.
    assert "eyeWide corr. with truth" in printed and "mouthFunnel corr. with truth" in printed
    assert "jawOpen - mouthClose corr." in printed and -1 <= clip["lips_apart_corr"] <= 1
    for key in ("eyeSquint_corr_right", "eyeWide_corr_left", "mouthSmile_corr_left", "mouthFunnel_corr",
                "browInnerUp_corr"):
        assert np.isnan(clip[key]) or -1 <= clip[key] <= 1
    assert main(["capture", "--clips", "-1"]) == 2


@pytest.mark.skipif(not WOJTEK.is_file(), reason="shared fixtures absent")
def test_real_clip_rows_and_contact_sheet(tmp_path):
    import cv2

    from fitter_backend.evaluation.capture_real import RealClip, evaluate_real, format_report

    clip = RealClip("wojtek", WOJTEK.name, (106, 114), closed_eyes=(110,), open_mouth=(110,))
    (realtime,) = evaluate_real([clip], "face_mesh_468", tmp_path, realtime=True)
    assert realtime["mode"] == "realtime" and "realtime" in format_report([realtime], [clip])
    (summary,) = evaluate_real([clip], "face_mesh_468", tmp_path)
    assert summary["mode"] == "offline" and [row["frame"] for row in summary["rows"]] == list(range(106, 114))
    assert "eyes closed, mouth open" in format_report([summary], [clip])
    assert "lips_apart_corr" in format_report([summary], [clip])
    assert all(0 <= row["mouthClose"] <= 1 for row in summary["rows"])
    sheet = cv2.imread(str(tmp_path / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] >= 240 and (tmp_path / "wojtek.csv").is_file()


def test_annotations_at_the_heads_own_points_map_back_to_them():
    """The semantic check reads an annotated pixel off the fitted head: a head 'annotated' with
    its own projected points gives their neutral positions back (to a pixel's size)."""
    from fitter_backend.evaluation.semantic_offsets import annotated_on_model
    from fitter_backend.fitting.cameras import Cameras, project
    from fitter_backend.head_models.lbs import posed_vertices, surface_points
    from fitter_backend.head_models.loading import load_head_model

    model = load_head_model("open")
    rotations = np.zeros((model.num_joints, 3))
    rotations[model.joint_index("head")] = (0.1, 0.15, 0.0)  # near-frontal, as the faces it reads
    posed = posed_vertices(model, None, None, rotations[None], np.array([[0.0, -0.15, -0.5]]))
    cameras = Cameras.monocular(640, 640, 1200.0)
    subset = model.semantic_points.subset([f"ibug_{k:02d}" for k in (30, 36, 39, 42, 45, 48, 54)])
    pixels = project(surface_points(posed, model.triangles, subset), cameras, 0, derivatives=False).pixels[0]
    on_model = annotated_on_model(model, posed[0], cameras, pixels, (640, 640))
    truth = surface_points(posed_vertices(model), model.triangles, subset)[0]
    assert np.isfinite(on_model).all()
    np.testing.assert_allclose(on_model, truth, atol=1.0e-3)   # 1 px is ~0.4 mm here


@pytest.mark.skipif(not WOJTEK.is_file(), reason="shared fixtures absent")
def test_the_track_gives_the_fitter_stretched_lids_and_set_up_the_readings(models):
    """wojtek 230-232 (eyes shut): the track (what the fitter takes) reads the eyes shut where the
    lid models' readings (what set-up places points from) stop at a slit, each face mesh's lids
    stretched by their own measured shut reading; the plain face mesh passes its readings on."""
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.eye_refine import (LID_OPEN_REFERENCE, LID_SHUT_READINGS, MESH_INDICES,
                                                     REFINED_POINTS, lid_opening)
    from fitter_backend.landmarks.names import (ATTENTION_LIDS_LANDMARKS, BOOTSTRAP_LANDMARKS, DEFAULT_LANDMARKS,
                                                IRIS_LIDS_LANDMARKS)
    from fitter_backend.video import open_video

    lid_rows = [list(indices[:REFINED_POINTS]) for indices in MESH_INDICES.values()]
    for name, mesh in ((DEFAULT_LANDMARKS, ATTENTION_LIDS_LANDMARKS), (IRIS_LIDS_LANDMARKS, BOOTSTRAP_LANDMARKS)):
        landmarker = load_landmarker(name, progress=lambda m: None)
        shut_reading = LID_SHUT_READINGS[mesh]
        track = landmarker.track(open_video(WOJTEK, frame_range=(230, 233)))
        landmarker.reset()
        readings = [landmarker.process([frame])[0] for frame in open_video(WOJTEK, frame_range=(230, 233))]
        for t, reading in enumerate(readings):
            observed = landmarker.observations([reading])[0]
            for rows in lid_rows:
                read, seen = lid_opening(reading.mu_px[rows]), lid_opening(observed.mu_px[rows])
                assert 0.02 < read < LID_OPEN_REFERENCE          # a slit ...
                assert seen == pytest.approx(max(read - shut_reading, 0) * LID_OPEN_REFERENCE
                                             / (LID_OPEN_REFERENCE - shut_reading), abs=1e-5)  # float32 points
                assert lid_opening(track.mu_px[t, 0][rows]) < 0.5 * read    # ... the fitter sees (nearly) shut
            others = np.setdiff1d(np.arange(landmarker.num_landmarks), np.concatenate(lid_rows))
            np.testing.assert_array_equal(observed.mu_px[others], reading.mu_px[others])
    plain = load_landmarker(BOOTSTRAP_LANDMARKS, progress=lambda m: None)
    assert plain.observations(readings) is readings


@pytest.mark.skipif(not WOJTEK.is_file(), reason="shared fixtures absent")
def test_realtime_keys_a_blink_after_a_lowered_gaze(models, tmp_path):
    """wojtek 95-245 in real-time mode: the eyes look down before they shut at 229-233; with the
    eyeLook units carried from frame to frame the blink stayed theirs (eyeBlink 0.1-0.3 beside
    eyeLookDown 1.0)."""
    from fitter_backend.evaluation.capture_measures import load_fitted_shot
    from fitter_backend.pipeline import FitJob, fit_videos

    shot = load_fitted_shot(fit_videos(FitJob(videos=(WOJTEK,), out=tmp_path / "fit", realtime=True,
                                              frame_range=(95, 245), previews=False)))
    shut = np.isin(shot.frame_indices, (229, 230, 231, 232, 233))
    assert shot.weight("eyeBlinkRight")[shut].min() > 0.6 and shot.weight("eyeBlinkLeft")[shut].min() > 0.6
