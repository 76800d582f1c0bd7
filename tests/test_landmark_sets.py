"""The dense landmark sets: the shipped files are what the generator makes, valid, on the
open head, covering the regions the issue lists, with the 68 iBUG points exact."""
import json

import numpy as np
import pytest

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.lbs import surface_points
from fitter_backend.head_models.open_head import load_open_head
from onnx_models.landmark_sets import (DENSE_SET, IBUG68, REALTIME_SET, REGIONS, LandmarkSet, build_dense_set,
                                       build_subset, load_landmark_set, set_path)


@pytest.fixture(scope="module")
def head():
    return load_open_head()


@pytest.fixture(scope="module")
def dense(head):
    return load_landmark_set(DENSE_SET, head)


def test_shipped_sets_are_what_the_generator_writes(head, dense):
    built = build_dense_set(head, 700)
    assert built.points.names == dense.points.names
    np.testing.assert_array_equal(built.points.triangle, dense.points.triangle)
    np.testing.assert_allclose(built.points.barycentric, dense.points.barycentric, atol=2e-6)
    subset = build_subset(built, 320)
    shipped = load_landmark_set(REALTIME_SET, head)
    assert subset.points.names == shipped.points.names
    np.testing.assert_array_equal(subset.parent_indices, shipped.parent_indices)


def test_dense_set_covers_the_whole_head(head, dense):
    assert len(dense) == 700
    counts = {name: len(dense.regions.get(name, [])) for name in REGIONS}
    assert all(count >= 20 for count in counts.values()), counts
    names = dense.points.names
    assert sum(n.startswith("iris_") for n in names) == 16 and {"pupil_L", "pupil_R"} <= set(names)
    assert sum(n.startswith("lid_") for n in names) == 24 and sum(n.startswith("lip_inner") for n in names) == 16
    # Iris and pupil points lie on the eyeballs, every other point on the skin.
    eyeball_tri = head.regions["eyeballs"][head.triangles].all(axis=1)
    on_eye = eyeball_tri[dense.points.triangle]
    assert set(np.flatnonzero(on_eye)) == {i for i, n in enumerate(names) if n.startswith(("iris_", "pupil_"))}
    # Eyes and lips are denser than the back of the head: compare nearest-neighbour spacing.
    rest = dense.rest_m
    gaps = np.sort(np.linalg.norm(rest[:, None] - rest[None], axis=2), axis=1)[:, 1]
    assert np.median(gaps[dense.regions["lips"]]) < 0.5 * np.median(gaps[dense.regions["back_of_head"]])
    assert np.median(gaps[dense.regions["eyes"]]) < 0.5 * np.median(gaps[dense.regions["back_of_head"]])


def test_ibug_points_are_the_head_models_own(head, dense):
    ibug = head.semantic_points.subset(list(IBUG68))
    rows = [dense.semantic[name] for name in IBUG68]
    expected = surface_points(head.template[None].astype(float), head.triangles, ibug)[0]
    np.testing.assert_allclose(dense.rest_m[rows], expected, atol=1e-6)
    np.testing.assert_allclose(surface_points(head.template[None].astype(float), head.triangles, dense.points)[0],
                               dense.rest_m, atol=1e-6)


def test_realtime_subset_is_part_of_the_dense_set(head, dense):
    realtime = load_landmark_set(REALTIME_SET, head)
    assert len(realtime) == 320 and realtime.parent == DENSE_SET
    assert [dense.points.names[i] for i in realtime.parent_indices] == list(realtime.points.names)
    assert all(name in realtime.semantic for name in IBUG68)
    assert len(realtime.regions["eyes"]) >= 30 and len(realtime.regions["lips"]) >= 30


def test_bad_files_and_other_heads_are_refused(head, dense, tmp_path):
    data = json.loads(set_path(DENSE_SET).read_text())
    data["regions"]["eyes"] = data["regions"]["eyes"][:-1]           # a landmark without a region
    with pytest.raises(HeadModelError, match="partition"):
        LandmarkSet.from_json(data, "broken.json")
    with pytest.raises(HeadModelError, match="does not exist"):
        load_landmark_set(tmp_path / "missing.json")
    moved = type(head)(**{**head.__dict__, "template": head.template + np.float32(0.01)})
    with pytest.raises(HeadModelError, match="neutral shape differs"):
        dense.check_head(moved)
    fewer = type(head)(**{**head.__dict__, "triangles": head.triangles[:-1]})
    with pytest.raises(HeadModelError, match="topology"):
        dense.check_head(fewer)
