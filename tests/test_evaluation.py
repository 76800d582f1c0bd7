"""Landmark accuracy evaluation: the NME arithmetic, label translation on a render with known
points, the WFLW mapping, and the ``nme`` command on a fixture face."""
import json

import numpy as np
import pytest

from fitter_backend.errors import FacecapError
from fitter_backend.evaluation.__main__ import main
from fitter_backend.evaluation.annotated import IBUG68_FROM_IMM58, IBUG68_FROM_WFLW98, annotated_sets, read_asf
from fitter_backend.evaluation.label_translation import IBUG68, crop_around, fit_image, label_points_px
from fitter_backend.evaluation.landmark_nme import FaceResult, summarise
from fitter_backend.evaluation.nme import INNER_POINTS, box_size_px, inter_ocular_px, nme, similarity_aligned
from fitter_backend.head_models.lbs import surface_points
from fitter_backend.head_models.open_head import load_open_head
from fitter_backend.landmarks import Landmarker
from fitter_backend.landmarks.embedding import landmark_embedding
from fitter_backend.render import camera
from fitter_backend.render.head_png import framing_camera, posed_mesh, render_head
from fitter_backend.video.frames import Frame
from tests.conftest import FIXTURES

LANDMARK_FIXTURES = FIXTURES / "landmarks"
needs_fixtures = pytest.mark.skipif(not LANDMARK_FIXTURES.is_dir(), reason="shared fixtures absent")


def square_face() -> np.ndarray:
    """68 points on a 40 x 30 px box with the outer eye corners 20 px apart."""
    rng = np.random.default_rng(0)
    points = rng.uniform([10, 20], [50, 50], size=(68, 2))
    points[36], points[45] = [20, 25], [40, 25]
    points[0], points[16] = [10, 20], [50, 50]  # fixes the bounding box: 40 x 30
    return points


def test_nme_of_known_offsets():
    truth = square_face()
    assert inter_ocular_px(truth) == pytest.approx(20.0)
    assert box_size_px(truth) == pytest.approx(np.sqrt(40 * 30))
    shifted = truth + [3.0, 4.0]  # every point 5 px off
    assert nme(shifted, truth, inter_ocular_px(truth)) == pytest.approx(0.25)
    assert nme(shifted, truth, box_size_px(truth)) == pytest.approx(5 / np.sqrt(1200))
    # only the jaw wrong: the 51 inner points see nothing, the 68 see 17/68 of it
    jaw_off = truth.copy()
    jaw_off[:17] += [0.0, 10.0]
    assert nme(jaw_off, truth, 20.0, INNER_POINTS) == 0.0
    assert nme(jaw_off, truth, 20.0) == pytest.approx(17 / 68 * 10 / 20)
    # batched: one face per row, each with its own normaliser
    batch = nme(np.stack([shifted, jaw_off]), np.stack([truth, truth]), np.array([20.0, 10.0]))
    np.testing.assert_allclose(batch, [0.25, 17 / 68 * 10 / 10])


def test_similarity_alignment_removes_placement_and_size_but_not_shape():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 100, (3, 68, 2))
    angle, scale, shift = 0.3, 1.25, np.array([7.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * truth @ rotation.T + shift
    aligned, found = similarity_aligned(moved, truth)
    np.testing.assert_allclose(aligned, truth, atol=1e-9)
    np.testing.assert_allclose(found, 1 / scale)
    # A shape change survives alignment: one point off by 10 px keeps most of its error.
    bent = moved.copy()
    bent[:, 30] += 10
    assert (nme(similarity_aligned(bent, truth)[0], truth, 1.0) > 0.1).all()


def test_summary_averages_faces_per_set_and_counts_misses():
    truth = square_face()
    results = [FaceResult("300w", "a", truth, {"fit": truth + [3.0, 4.0], "raw": truth}),
               FaceResult("300w", "b", truth, {"fit": truth, "raw": truth + [0.0, 2.0]}),
               FaceResult("300w", "missed", truth, {})]
    summary = summarise(results)["300w"]
    assert summary["faces"] == 3 and summary["found"] == 2
    assert summary["fit"]["nme68_percent"] == pytest.approx(100 * (0.25 + 0.0) / 2)
    assert summary["raw"]["nme51_percent"] == pytest.approx(100 * (0.0 + 0.1) / 2)
    assert summary["fit"]["per_face_nme68_percent"] == {"a": 25.0, "b": 0.0}


def test_wflw_mapping_follows_both_definitions():
    mapping = np.array(IBUG68_FROM_WFLW98)
    assert len(mapping) == 68 and len(set(mapping)) == 68 and mapping.max() < 96  # pupils 96, 97 unused
    assert mapping[8] == 16                              # chin: the middle of WFLW's 33 contour points
    assert (mapping[36], mapping[39], mapping[42], mapping[45]) == (60, 64, 68, 72)  # eye corners
    assert (mapping[48], mapping[54], mapping[60], mapping[64]) == (76, 82, 88, 92)  # mouth corners


def test_crop_keeps_the_annotated_face_inside_the_image():
    image = np.zeros((100, 200, 3), np.uint8)
    points = np.array([[150.0, 40.0], [190.0, 60.0]])
    crop, origin = crop_around(image, points, margin=0.5)
    np.testing.assert_array_equal(origin, [130, 20])          # 20 px (half the 40 px side) around
    assert crop.shape == (60, 70, 3)                          # right edge clipped at the image's 200


@pytest.fixture(scope="module")
def landmarker() -> Landmarker:
    return Landmarker.from_setup(progress=lambda message: None)


def test_label_translation_recovers_the_points_of_a_rendered_head(landmarker):
    """Render the open head with a known pose and expression: the fitted head's iBUG-68
    points, projected with the fitted camera, land on the render's true points."""
    model = load_open_head()
    size, yaw, pitch, fov = 512, 20.0, 5.0, 20.0
    expression, joints = {"jawOpen": 0.3, "mouthSmileLeft": 0.4}, {"head": [0.05, 0.1, 0.0]}
    joints = {k: v for k, v in joints.items() if k in model.joint_names}
    image = render_head(model, expression=expression, joint_rotations=joints, size=size,
                        yaw_deg=yaw, pitch_deg=pitch, fov_deg=fov)
    rotation, translation, focal_px = framing_camera(model, size, yaw, pitch, fov)
    vertices_cam = posed_mesh(model, expression=expression, joint_rotations=joints) @ rotation.T + translation
    truth = camera.project(surface_points(vertices_cam[None], model.triangles,
                                          model.semantic_points.subset(IBUG68))[0], focal_px, (size, size))
    points = landmark_embedding(model, landmarker)
    fitted = fit_image(model, points, landmarker, Frame(0, np.ascontiguousarray(image[..., ::-1]), 0.0, 255))
    assert fitted.fit is not None
    predicted = label_points_px(model, fitted.fit.params)[0]
    error = nme(predicted, truth, inter_ocular_px(truth))
    assert error < 0.04, f"label translation NME {100 * error:.1f}% on a render"
    # a left/right mix-up of the labels would show: mirrored labels are far off
    mirrored = predicted[[16 - k for k in range(17)] + list(range(17, 68))]
    assert nme(mirrored, truth, inter_ocular_px(truth)) > 3 * error


@needs_fixtures
def test_fixture_sets_are_all_read():
    sets = annotated_sets(LANDMARK_FIXTURES)
    assert {name: len(faces) for name, faces in sets.items()} == {"300w": 2, "wflw": 4, "300vw": 4, "aflw2000": 16,
                                                                 "imm": 240}
    for name, faces in sets.items():
        annotated = sorted(IBUG68_FROM_IMM58) if name == "imm" else list(range(68))
        for face in faces:
            assert face.points_px.shape == (68, 2)
            assert np.isfinite(face.points_px[annotated]).all()
            assert np.isnan(np.delete(face.points_px, annotated, axis=0)).all()
            assert 0 < inter_ocular_px(face.points_px) < box_size_px(face.points_px) * 1.5


@needs_fixtures
def test_imm_points_land_where_their_ibug_names_say():
    """On IMM's frontal neutral stills (``NN-1m``, ``NN-1f``) the mapped points keep iBUG's left-right and
    top-down order: right eye outer, inner, left eye inner, outer from image left to right;
    eyes above the nose's base, above the mouth corners, above the lower lip, above the chin."""
    faces = [face for face in annotated_sets(LANDMARK_FIXTURES)["imm"] if face.name[-2:-1] == "1"]
    assert len(faces) == 40
    for face in faces:
        x, y = face.points_px[:, 0], face.points_px[:, 1]
        assert x[36] < x[39] < x[42] < x[45] and x[48] < x[33] < x[54]
        assert max(y[[36, 39, 42, 45]]) < y[33] < min(y[[48, 54]]) < y[57] < y[8]


def test_read_asf_names_the_file_on_bad_input(tmp_path):
    bad = tmp_path / "bad.asf"
    bad.write_text("# header only\n58\n0 4 0.5\n")
    with pytest.raises(FacecapError, match="bad.asf: not an AAM shape file"):
        read_asf(bad)


def test_nme_skips_points_the_truth_does_not_annotate():
    truth = np.zeros((68, 2))
    truth[:, 0] = np.arange(68)
    predicted = truth + [3.0, 4.0]  # 5 px off everywhere
    assert nme(predicted, truth, 10.0) == pytest.approx(0.5)
    truth[10:] = np.nan
    predicted[10:] += 1000.0  # unannotated points do not count, however far off
    assert nme(predicted, truth, 10.0) == pytest.approx(0.5)
    truth[:10, 1] = np.arange(10) * 2.0
    assert box_size_px(truth) == pytest.approx(np.sqrt(9 * 18))


@needs_fixtures
def test_nme_command_on_one_fixture_face(tmp_path, capsys):
    out = tmp_path / "nme.json"
    assert main(["nme", "--sets", "300w", "--limit", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "300w" in printed and "1/1" in printed
    saved = json.loads(out.read_text())["sets"]
    assert list(saved) == ["300w"] and saved["300w"]["found"] == 1
    # MediaPipe measured 5.6% here; the fitted head reads its points off the same landmarks
    assert 2.0 < saved["300w"]["fit"]["nme68_percent"] < 9.0
    assert 2.0 < saved["300w"]["raw"]["nme68_percent"] < 9.0


@needs_fixtures
def test_nme_command_finds_the_face_in_the_whole_image(tmp_path, capsys):
    out = tmp_path / "nme.json"
    assert main(["nme", "--sets", "imm", "--limit", "1", "--full-image", "--json", str(out)]) == 0
    assert "whole images" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["full_image"] is True and saved["sets"]["imm"]["found"] == 1
    # measured 3.9% for MediaPipe's points and 4.5% fitted over all 240 IMM stills
    assert 1.0 < saved["sets"]["imm"]["fit"]["nme68_percent"] < 9.0


def test_nme_command_rejects_bad_arguments(tmp_path, capsys):
    assert main(["nme", "--sets", "300w,imdb"]) == 2
    assert "unknown set(s) imdb" in capsys.readouterr().err
    assert main(["nme", "--fixtures", str(tmp_path / "absent")]) == 2
    assert "absent does not exist" in capsys.readouterr().err


def test_whole_head_embedding_is_the_face_mesh_embedding_then_the_dense_head_points(landmarker):
    from fitter_backend.landmarks import DENSE_LANDMARKS, load_landmarker
    from fitter_backend.landmarks.combined import CombinedLandmarker
    model = load_open_head()
    dense = load_landmarker(DENSE_LANDMARKS, progress=lambda message: None)
    combined = CombinedLandmarker(landmarker, dense)
    points = landmark_embedding(model, combined)
    face, head = landmark_embedding(model, landmarker), landmark_embedding(model, dense)
    rows = combined.head_points
    assert len(points) == len(face) + len(rows) == combined.num_landmarks
    np.testing.assert_array_equal(points.triangle, np.concatenate([face.triangle, head.triangle[rows]]))
    np.testing.assert_array_equal(points.barycentric[len(face):], head.barycentric[rows])
    assert points.names[:len(face)] == face.names and points.names[len(face)] == head.names[rows[0]]


def test_whole_head_errors_are_zero_for_the_truth_and_grow_with_a_wrong_head():
    from fitter_backend.evaluation.whole_head import scored_regions, region_errors_mm
    model = load_open_head()
    regions = scored_regions(model)
    assert all(mask.any() for mask in regions.values())
    assert not (regions["face"] & regions["ears"]).any() and not (regions["face"] & regions["rest_of_head"]).any()
    truth = np.random.default_rng(0).normal(size=model.num_identity)
    assert all(error < 1e-6 for error in region_errors_mm(model, truth, truth).values())
    near = region_errors_mm(model, truth + 0.3, truth)
    far = region_errors_mm(model, truth + 1.0, truth)
    assert all(0 < near[name] < far[name] for name in regions)


def test_whole_head_evaluation_command_compares_landmark_models(tmp_path, capsys):
    out = tmp_path / "head.json"
    assert main(["head", "--landmarks", "face_mesh_468,face_mesh_468+dense_320_mobilenet_v2", "--clips", "1",
                 "--frames", "6", "--yaw", "20", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "face_mesh_468+dense_320_mobilenet_v2" in printed and "rest_of_head" in printed
    figures = json.loads(out.read_text())
    assert set(figures) == {"face_mesh_468", "face_mesh_468+dense_320_mobilenet_v2"}
    assert all(0 < row["whole_head"] < 30 for rows in figures.values() for row in rows)
    assert main(["head", "--clips", "0"]) == 2
