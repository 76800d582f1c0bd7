"""OBJ export and import."""
from __future__ import annotations

import numpy as np
import pytest

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.obj_io import read_obj, write_obj
from tests.toy_heads import ellipsoid_mesh


def test_round_trip_keeps_vertices_to_six_decimals_and_triangles_exactly(tmp_path):
    vertices, triangles = ellipsoid_mesh(2)
    vertices = vertices + 1e-7 * np.random.default_rng(0).normal(size=vertices.shape)
    path = write_obj(tmp_path / "sub" / "head.obj", vertices, triangles)
    read_vertices, read_triangles = read_obj(path)
    assert np.abs(read_vertices - vertices).max() <= 5e-7 + 1e-12
    assert np.array_equal(read_triangles, triangles)
    assert [p.name for p in path.parent.iterdir()] == ["head.obj"]  # no partial file left


def test_normals_are_written_per_vertex_and_referenced_by_faces(tmp_path):
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    normals = np.array([[0.0, 0.0, 1.0]] * 3)
    path = write_obj(tmp_path / "tri.obj", vertices, np.array([[0, 1, 2]]), normals)
    lines = path.read_text().splitlines()
    assert lines.count("vn 0.000000 0.000000 1.000000") == 3
    assert "f 1//1 2//2 3//3" in lines
    read_vertices, read_triangles = read_obj(path)
    assert np.array_equal(read_vertices, vertices) and read_triangles.tolist() == [[0, 1, 2]]


def test_reader_triangulates_polygons_and_resolves_corner_forms(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("# comment\nmtllib x.mtl\no thing\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0 1.0\n"
                    "vt 0 0\nvn 0 0 1\ng part\ns off\nf 1/1/1 2/1/1 3/1/1 4/1/1\nf -4 -2 -1\n")
    vertices, triangles = read_obj(path)
    assert vertices.shape == (4, 3)
    assert triangles.tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 3]]


@pytest.mark.parametrize("body, message", [
    ("v 0 0\n", "line 1: expected 'v X Y Z'"),
    ("v 0 0 a\n", "line 1: expected 'v X Y Z'"),
    ("v 0 0 0\nv 1 0 0\nf 1 2\n", "line 3: expected 'f' with three"),
    ("v 0 0 0\nv 1 0 0\nf 1 2 x\n", "line 3: expected 'f' with three"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "line 4: expected vertex indices between 1 and 3"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "line 4: expected vertex indices"),
    ("# nothing here\n", "holds no 'v' vertex lines"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, body, message):
    path = tmp_path / "bad.obj"
    path.write_text(body)
    with pytest.raises(HeadModelError, match=message) as error:
        read_obj(path)
    assert str(path) in str(error.value)


def test_missing_file_and_bad_arrays_are_reported(tmp_path):
    with pytest.raises(HeadModelError, match="OBJ file not found: .*missing.obj"):
        read_obj(tmp_path / "missing.obj")
    with pytest.raises(HeadModelError, match="triangle indices"):
        write_obj(tmp_path / "x.obj", np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(HeadModelError, match="finite"):
        write_obj(tmp_path / "x.obj", np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
    with pytest.raises(HeadModelError, match="normals have shape"):
        write_obj(tmp_path / "x.obj", np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((2, 3)))
    assert not (tmp_path / "x.obj").exists()
