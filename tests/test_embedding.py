"""Landmark embeddings are set-up's work (issue 18.5, issue 15 D5): a fit job only loads them and
fails clearly when one is missing or damaged; set-up computes a missing or damaged one again and
writes it atomically."""
import shutil

import numpy as np
import pytest

from fitter_backend import paths
from fitter_backend.head_models.open_head import load_open_head
from fitter_backend.landmarks import BOOTSTRAP_LANDMARKS, LandmarkModelError, load_landmarker
from fitter_backend.landmarks import embedding


@pytest.fixture(scope="module")
def face_mesh():
    return load_landmarker(BOOTSTRAP_LANDMARKS, progress=lambda message: None)


@pytest.fixture
def own_data(tmp_path, monkeypatch):
    """A data folder of this test's own: the shared one's models and heads, no embeddings."""
    shared = paths.data_dir()
    data = tmp_path / "data"
    data.mkdir()
    for part in ("heads", "models"):
        (data / part).symlink_to(shared / part)
    monkeypatch.setenv("FACECAP_DATA", str(data))
    return data, shared


def test_a_job_never_computes_a_missing_embedding_it_names_the_setup_command(own_data, face_mesh, monkeypatch):
    monkeypatch.setattr(embedding, "compute_embedding", lambda *a: pytest.fail("a job computed an embedding"))
    with pytest.raises(LandmarkModelError, match=r"not been placed on head model 'open_head'.*fitter_backend setup"):
        embedding.load_embedding(load_open_head(), face_mesh)


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip", b"\x93NUMPY"])
def test_a_damaged_cache_fails_a_job_clearly_and_setup_computes_it_again(own_data, face_mesh, damage):
    data, shared = own_data
    model = load_open_head()
    cached = embedding._cache_path(model, face_mesh)
    source = shared / "embeddings" / cached.name
    if not source.is_file():
        pytest.skip(f"set-up has not placed {BOOTSTRAP_LANDMARKS} on the open head in {shared}")
    cached.parent.mkdir()
    shutil.copy(source, cached)
    good = embedding.load_embedding(model, face_mesh)
    cached.write_bytes(damage)
    with pytest.raises(LandmarkModelError, match=r"is damaged .*run `python -m fitter_backend setup`"):
        embedding.load_embedding(model, face_mesh)
    again = embedding.landmark_embedding(model, face_mesh)  # set-up's side
    np.testing.assert_array_equal(again.triangle, good.triangle)
    np.testing.assert_allclose(again.barycentric, good.barycentric, atol=1e-6)
    np.testing.assert_array_equal(embedding.load_embedding(model, face_mesh).triangle, good.triangle)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no partial file left


def test_an_embedding_that_does_not_fit_the_head_is_refused(own_data, face_mesh):
    model = load_open_head()
    cached = embedding._cache_path(model, face_mesh)
    count = face_mesh.model.metadata.num_landmarks
    cached.parent.mkdir()
    np.savez(cached, triangle=np.full(count, len(model.triangles)), barycentric=np.full((count, 3), 1 / 3),
             names=np.array([f"p{k}" for k in range(count)]), spread_m=np.zeros(count))
    with pytest.raises(LandmarkModelError, match="does not fit"):
        embedding.load_embedding(model, face_mesh)


def test_a_reconverted_network_is_placed_anew(tmp_path, face_mesh):
    """The cache is keyed by the networks' files: the iris model's file too for the refined lids."""
    import dataclasses

    from fitter_backend.landmarks.eye_refine import EyeRefinedLandmarker

    model = load_open_head()
    refined = load_landmarker(BOOTSTRAP_LANDMARKS + "_iris", progress=lambda message: None)
    assert isinstance(refined, EyeRefinedLandmarker) and len(refined.model_files()) == 2
    before = embedding._cache_path(model, refined)
    copy = tmp_path / "iris_landmark.onnx"
    copy.write_bytes(refined.iris.onnx_path.read_bytes() + b"\0")  # another conversion's bytes
    refined.iris = dataclasses.replace(refined.iris, onnx_path=copy)
    assert embedding._cache_path(model, refined) != before
    assert embedding._cache_path(model, face_mesh) != before  # and the refined set is its own


def test_inner_lip_points_are_placed_on_the_lip_they_belong_to_and_meet_when_it_closes():
    """Points spread along the closed mouth's corner line land on whichever lip is nearest (as a
    closed render places them); placement puts each contour's points on its own lip's edge, so
    the lower ones drop with the jaw and the two midpoints meet at rest."""
    from fitter_backend.head_models.correspondence import MeshSurface, embed_points
    from fitter_backend.head_models.lbs import posed_vertices, surface_points

    model = load_open_head()
    rest = posed_vertices(model)[0]
    corners = surface_points(rest[None], model.triangles, model.semantic_points.subset(["ibug_60", "ibug_64"]))[0]
    along = np.linspace(0, 1, 9)[:, None]
    line = corners[0] + along * (corners[1] - corners[0])      # corner, 7 between, corner
    surface = MeshSurface(rest, model.triangles, model.skin[model.triangles].all(axis=1))
    start = embed_points(np.concatenate([line, line]), tuple(f"p{k}" for k in range(18)), surface)
    contours = {"inner_lip_upper": tuple(range(9)), "inner_lip_lower": tuple(range(9, 18))}
    placed = embedding.place_inner_lips(model, start, contours)
    assert embedding.place_inner_lips(model, start, {}) is start

    parted = embedding.parted_lips_vertices(model)
    drop_mm = 1000 * (surface_points(parted[None], model.triangles, placed)[0]
                      - surface_points(rest[None], model.triangles, placed)[0])[:, 1]
    upper, lower = drop_mm[1:8], drop_mm[10:17]
    assert (lower < upper - 2).all(), (upper, lower)          # every lower point goes with the jaw
    assert lower[3] < -8 and upper[3] > -1                    # the midpoints: the lower lip drops, the upper stays
    at_rest = surface_points(rest[None], model.triangles, placed)[0]
    assert abs(at_rest[4, 1] - at_rest[13, 1]) < 0.5e-3       # the midpoints meet on the closed mouth
    np.testing.assert_array_equal(placed.triangle[[0, 8, 9, 17]], start.triangle[[0, 8, 9, 17]])  # corners stay


def test_view_spread_is_how_far_the_views_put_a_point_apart():
    nan = np.nan
    positions = np.array([  # 4 views x 3 points
        [[0, 0, 0], [0.002, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [-0.002, 0, 0], [nan, nan, nan]],
        [[0, 0, 0], [0.002, 0, 0], [nan, nan, nan]],
        [[0, 0, 0], [-0.002, 0, 0], [nan, nan, nan]],
    ], dtype=float)
    spread = embedding.view_spread(positions)
    assert spread[0] == 0.0                                   # a point every view puts in one place
    assert spread[1] == pytest.approx(0.002)                  # +-2 mm about its median
    assert spread[2] == pytest.approx(np.percentile(spread[:2], 90))  # one view: no evidence it holds still


def test_a_point_no_view_saw_head_on_keeps_its_most_frontal_view():
    nan = np.nan
    positions = np.array([  # 3 views x 3 points; the last point fell off the head in the first view
        [[0, 0, 0], [0.001, 0, 0], [nan, nan, nan]],
        [[0, 0, 0], [0.002, 0, 0], [0.003, 0, 0]],
        [[0, 0, 0], [0.004, 0, 0], [0.005, 0, 0]],
    ], dtype=float)
    facing = np.array([[0.9, 0.2, 0.0], [0.8, 0.3, 0.1], [0.2, 0.1, 0.05]])
    kept = embedding.head_on_positions(positions, facing)
    np.testing.assert_array_equal(np.isfinite(kept[..., 0]), [[True, False, False], [True, True, True],
                                                             [False, False, False]])
    assert kept[1, 1, 0] == 0.002 and kept[1, 2, 0] == 0.003  # grazing points: their most frontal hit


def test_iris_centres_are_placed_on_the_pupils_of_their_own_eyeballs(face_mesh):
    from fitter_backend.head_models.eyes import eyeball_vertices, pupils_at_rest
    from fitter_backend.head_models.lbs import surface_points

    model = load_open_head()
    start = embedding.load_embedding(model, face_mesh)
    placed, moved = embedding.place_on_eyeballs(model, start, {"iris_centre_R": 5, "iris_centre_L": 9, "ibug_30": 1})
    assert sorted(moved.tolist()) == [5, 9]
    at_rest = surface_points(model.template[None], model.triangles, placed)[0]
    pupils = pupils_at_rest(model, model.template)                       # left, right
    assert np.linalg.norm(at_rest[9] - pupils[0]) < 0.5e-3 and np.linalg.norm(at_rest[5] - pupils[1]) < 0.5e-3
    left, right = (np.isin(model.triangles[placed.triangle[k]], ids).all() for k, ids in zip((9, 5), eyeball_vertices(model)))
    assert left and right                                                # on the eyeball, not the lid
    untouched = np.setdiff1d(np.arange(len(start)), moved)
    np.testing.assert_array_equal(placed.triangle[untouched], start.triangle[untouched])


def test_placed_embeddings_record_each_points_spread(face_mesh):
    points = embedding.load_embedding(load_open_head(), face_mesh)
    oval = list(face_mesh.model.metadata.regions["face_oval"])
    lips = list(face_mesh.model.metadata.regions["lips"])
    assert points.spread_m.shape == (len(points),) and np.all(points.spread_m >= 0)
    # The face oval slides along the silhouette as the head turns; the lips hold still.
    assert np.median(points.spread_m[oval]) > 1.3 * np.median(points.spread_m[lips])
    subset = points.subset([points.names[k] for k in oval])
    np.testing.assert_array_equal(subset.spread_m, points.spread_m[oval])


def test_points_mediapipe_holds_still_over_closing_lids_get_a_closed_eye_place(own_data, face_mesh):
    """Set-up's closed-eye renders: MediaPipe's points above the lids (second ring: 27, 28, 257,
    258) stay where they were while the lid skin slides under them, so each gets a closed-eye
    place higher up the lid; the lower lid (145, 374), the face oval and the lips keep theirs.
    The cache keeps both places."""
    from fitter_backend.head_models.lbs import posed_vertices, surface_points

    model = load_open_head()
    points = embedding.landmark_embedding(model, face_mesh)
    closed = points.eyes_closed
    moved = np.flatnonzero((closed.triangle != points.triangle) | np.any(closed.barycentric != points.barycentric, axis=1))
    assert {27, 28, 257, 258} <= set(moved.tolist())
    regions = face_mesh.model.metadata.regions
    assert not set(moved.tolist()) & {145, 374, *regions["face_oval"], *regions["lips"]}
    rest = posed_vertices(model)[0][None]
    rise_mm = 1000 * (surface_points(rest, model.triangles, closed.subset([closed.names[k] for k in moved]))[0]
                      - surface_points(rest, model.triangles, points.subset([points.names[k] for k in moved]))[0])[:, 1]
    assert np.all(rise_mm > 0.5), rise_mm                         # higher on the lid, where the skin came from
    again = embedding.load_embedding(model, face_mesh)             # what a job reads back
    np.testing.assert_array_equal(again.eyes_closed.triangle, closed.triangle)
    np.testing.assert_allclose(again.eyes_closed.barycentric, closed.barycentric)


def test_points_a_view_reports_missing_are_not_placed_from_it_and_raise_no_warning(face_mesh, monkeypatch):
    """A landmark model may report a point missing (NaN: an iris centre under a lid); that view
    places nothing for it, without numpy's invalid-cast warning in set-up's output."""
    import dataclasses
    import warnings

    model = load_open_head()
    process = face_mesh.process

    def iris_hidden(frames):
        results = process(frames)
        mu = results[0].mu_px.copy()
        mu[[5, 9]] = np.nan
        return [dataclasses.replace(results[0], mu_px=mu)]

    monkeypatch.setattr(face_mesh, "process", iris_hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        positions, _, facing = embedding.observe_views(model, face_mesh)
    assert np.isnan(positions[:, [5, 9]]).all() and np.all(facing[:, [5, 9]] == 0)
    assert np.isfinite(positions[0, [4, 6, 8, 10]]).all()          # the others are placed
