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
             names=np.array([f"p{k}" for k in range(count)]))
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
