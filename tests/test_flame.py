"""FLAME loading on synthetic FLAME-format files, its cache, its errors, and the annotation
transfer it relies on. No FLAME data exists here: the files come from
:mod:`fitter_backend.head_models.synthetic_flame`."""
from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fitter_backend.errors import HeadModelError, UnsafePickleError
from fitter_backend.head_models.correspondence import (closest_points_on_triangles, surface_point_positions,
                                                       transfer_annotations)
from fitter_backend.head_models.flame import FLAME_JOINT_NAMES, cache_paths, load_flame
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.lbs import rodrigues
from fitter_backend.head_models.synthetic_flame import synthetic_flame_arrays, write_flame_pickle

EXPECTED = "expected a FLAME model pickle"


@pytest.fixture(scope="session")
def open_head() -> HeadModel:
    from fitter_backend.head_models.open_head import load_open_head
    return load_open_head()


@pytest.fixture(scope="session")
def flame_files(tmp_path_factory, open_head) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("flame")
    return {
        "chumpy_py2": write_flame_pickle(folder / "generic_model.pkl", "chumpy_py2", seed=0, source=open_head),
        "plain_py3": write_flame_pickle(folder / "flame2023_Open.pkl", "plain_py3", seed=0, source=open_head),
        "fewer": write_flame_pickle(folder / "flame2023_Open_small.pkl", "plain_py3", seed=1, num_expression=50,
                                    source=open_head),
    }


@pytest.fixture(scope="session")
def flame(flame_files) -> HeadModel:
    """The plain_py3 file converted once; its cache beside it serves the later loads."""
    return load_flame(flame_files["plain_py3"])


@pytest.fixture(scope="session")
def flame_arrays(open_head) -> dict:
    return synthetic_flame_arrays(open_head, seed=0)


def array_fields(model: HeadModel) -> dict[str, np.ndarray]:
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if isinstance(getattr(model, f.name), np.ndarray)}
    fields.update({f"region {k}": v for k, v in model.regions.items()})
    fields["semantic triangle"] = model.semantic_points.triangle
    fields["semantic barycentric"] = model.semantic_points.barycentric
    return fields


def copy_to(source: Path, folder: Path, with_cache: bool = False) -> Path:
    """Copy a FLAME file into ``folder``, with its converted cache (whose record does not
    depend on the path) when asked, so the copy loads without converting."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copy(source, folder / source.name))
    if with_cache:
        shutil.copy(cache_paths(source)[0], cache_paths(copy)[0])
    return copy


# -- conversion ------------------------------------------------------------------------------
def test_both_pickle_styles_load_to_identical_models(flame_files, flame, open_head):
    python2 = load_flame(flame_files["chumpy_py2"], use_cache=False, annotation_source=open_head)
    ours, theirs = array_fields(python2), array_fields(flame)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key
    assert python2.semantic_points.names == flame.semantic_points.names


def test_flame_arrays_map_onto_the_head_model(flame, flame_arrays, open_head):
    assert flame.validate() is flame
    assert flame.joint_names == FLAME_JOINT_NAMES == ("global", "neck", "jaw", "eye_L", "eye_R")
    assert flame.joint_parents.tolist() == [-1, 0, 1, 1, 1]
    assert flame.eyeball_joints.tolist() == [3, 4]
    assert (flame.num_vertices, len(flame.triangles), flame.num_identity, flame.num_expression) == (
        5023, 9976, 300, 100)
    assert flame.expression_names[0] == "exp000" and flame.expression_names[-1] == "exp099"
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    assert np.array_equal(flame.template, f32(flame_arrays["v_template"]))
    assert np.array_equal(flame.identity_basis, f32(flame_arrays["shapedirs"][..., :300]))
    assert np.array_equal(flame.expression_basis, f32(flame_arrays["shapedirs"][..., 300:]))
    assert np.array_equal(flame.pose_correctives, f32(flame_arrays["posedirs"]))
    assert np.array_equal(flame.joint_regressor, f32(flame_arrays["J_regressor"].toarray()))
    assert np.array_equal(flame.triangles, flame_arrays["f"].astype(np.int32))
    assert np.array_equal(flame.skin_weights, f32(flame_arrays["weights"]))
    # FLAME's coefficients are in standard deviations: the prior is N(0, I).
    assert np.all(flame.identity_prior_stds == 1) and np.all(flame.identity_prior_means == 0)
    # Eyeball radius measured from the vertices skinned to each eye (synthetic: the source's).
    np.testing.assert_allclose(flame.eyeball_radii_m, open_head.eyeball_radii_m, rtol=1e-5)
    joints = flame.joint_regressor @ flame.template
    assert joints[3, 0] > 0 > joints[4, 0], "eye_L sits on the subject's left (+X)"
    assert "flame2023_Open.pkl" in flame.attribution


def test_counts_are_configurable(flame_files, flame):
    small = load_flame(flame_files["plain_py3"], num_identity=40, num_expression=7)
    assert (small.num_identity, small.num_expression, len(small.expression_names)) == (40, 7, 7)
    assert np.array_equal(small.identity_basis, flame.identity_basis[..., :40])
    assert np.array_equal(small.expression_basis, flame.expression_basis[..., :7])
    assert small.identity_prior_means.shape == (1, 40)
    none = load_flame(flame_files["plain_py3"], num_identity=0, num_expression=0)
    assert (none.num_identity, none.num_expression) == (0, 0)


def test_asking_for_more_components_than_the_file_has_uses_all_of_them(flame_files):
    with pytest.warns(UserWarning, match="flame2023_Open_small.pkl has 50 expression components; using 50 "
                                         "instead of the 100 asked for"):
        model = load_flame(flame_files["fewer"], num_expression=100, use_cache=False)
    assert (model.num_identity, model.num_expression) == (300, 50)


@pytest.mark.parametrize("counts", [(-1, 10), (10, -2), (2.5, 10), (True, 3)])
def test_bad_counts_are_refused(flame_files, counts):
    with pytest.raises(HeadModelError, match="non-negative whole number"):
        load_flame(flame_files["plain_py3"], *counts, use_cache=False)


def test_eyeball_radius_falls_back_when_no_vertex_is_skinned_to_an_eye(tmp_path, flame_arrays):
    arrays = dict(flame_arrays)
    weights = arrays["weights"].copy()
    eyes = weights[:, 3:].sum(1) > 0.5
    weights[eyes] = 0.5 * weights[eyes] + 0.5 * np.eye(5)[1]
    arrays["weights"] = weights
    path = tmp_path / "blended_eyes.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=5))
    model = load_flame(path, use_cache=False)
    assert model.eyeball_radii_m.tolist() == pytest.approx([0.012, 0.012])


# -- cache -----------------------------------------------------------------------------------
def test_cache_is_written_beside_the_file_and_reused(tmp_path, flame_files, flame):
    path = copy_to(flame_files["plain_py3"], tmp_path / "user")
    start = time.perf_counter()
    first = load_flame(path)
    convert_s = time.perf_counter() - start
    caches = sorted(path.parent.glob("flame2023_Open.pkl.facecap-*.npz"))
    assert caches == [cache_paths(path)[0]]
    assert not any(p.name.endswith((".partial", ".building.npz")) for p in path.parent.iterdir())
    written = caches[0].stat().st_mtime_ns
    start = time.perf_counter()
    second = load_flame(path)
    cached_s = time.perf_counter() - start
    assert caches[0].stat().st_mtime_ns == written, "a valid cache is read, not rewritten"
    assert cached_s < 0.5 * convert_s, (cached_s, convert_s)
    for key, value in array_fields(first).items():
        assert np.array_equal(value, array_fields(second)[key]) and np.array_equal(value, array_fields(flame)[key])
    # The cache is a plain head-model file that validates on its own.
    assert HeadModel.load_npz(caches[0]).num_identity == 300


def test_cache_is_rebuilt_when_the_source_changes(tmp_path, flame_files, flame, open_head):
    path = copy_to(flame_files["plain_py3"], tmp_path / "user", with_cache=True)
    assert np.array_equal(load_flame(path).identity_basis, flame.identity_basis)
    write_flame_pickle(path, "plain_py3", seed=5, source=open_head)
    changed = synthetic_flame_arrays(open_head, seed=5)["shapedirs"][..., :300].astype(np.float32)
    assert not np.array_equal(changed, flame.identity_basis)
    assert np.array_equal(load_flame(path).identity_basis, changed)
    written = cache_paths(path)[0].stat().st_mtime_ns
    assert np.array_equal(load_flame(path).identity_basis, changed)
    assert cache_paths(path)[0].stat().st_mtime_ns == written


@pytest.mark.parametrize("damage", ["garbage", "truncated", "invalid model"])
def test_damaged_cache_is_reported_and_rebuilt(tmp_path, flame_files, flame, damage):
    path = copy_to(flame_files["plain_py3"], tmp_path / "user", with_cache=True)
    cache = cache_paths(path)[0]
    if damage == "garbage":
        cache.write_bytes(b"\x00" * 1000)
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    else:  # the right source record, but the model fails validation
        with np.load(cache) as archive:
            record = archive["flame_source"]
        np.savez(cache, flame_source=record, template=np.full((5023, 3), np.nan, np.float32))
    with pytest.warns(UserWarning, match=f"ignoring the damaged FLAME cache {cache}"):
        model = load_flame(path)
    assert np.array_equal(model.identity_basis, flame.identity_basis)
    assert HeadModel.load_npz(cache).num_identity == 300, "the cache was written again"


def test_cache_of_another_source_is_replaced_silently(tmp_path, flame_files, flame):
    path = copy_to(flame_files["plain_py3"], tmp_path / "user")
    cache = cache_paths(path)[0]
    np.savez(cache, flame_source=np.frombuffer(b'{"sha256": "0", "size": 1}', np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_flame(path)
    assert np.array_equal(model.identity_basis, flame.identity_basis)
    assert HeadModel.load_npz(cache).num_identity == 300


def test_cache_falls_back_to_the_data_folder(tmp_path, flame_files, open_head, monkeypatch):
    """When nothing can be written beside the user's file, the cache goes to data_dir()/heads."""
    monkeypatch.setenv("FACECAP_DATA", str(tmp_path / "data"))
    path = copy_to(flame_files["plain_py3"], tmp_path / "user")
    beside, fallback = cache_paths(path)
    assert fallback.parent == tmp_path / "data" / "heads"
    if os.geteuid() == 0:  # root writes into read-only folders: occupy the cache's name instead
        beside.mkdir()
    else:
        path.parent.chmod(0o555)
    try:
        load_flame(path, annotation_source=open_head)
        assert fallback.is_file() and not beside.is_file()
        start = fallback.stat().st_mtime_ns
        load_flame(path, annotation_source=open_head)
        assert fallback.stat().st_mtime_ns == start, "the data-folder cache is reused"
    finally:
        path.parent.chmod(0o755)


def test_without_cache_nothing_is_written(tmp_path, flame_files):
    path = copy_to(flame_files["plain_py3"], tmp_path / "user")
    load_flame(path, use_cache=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["flame2023_Open.pkl"]


# -- wrong files -----------------------------------------------------------------------------
def write_texture(path: Path) -> Path:
    """A stand-in for FLAME_texture.npz (random values, the real file's keys)."""
    rng = np.random.default_rng(0)
    np.savez(path, mean=rng.random((64, 64, 3)), tex_dir=rng.random((64, 64, 3, 4)), vt=rng.random((10, 2)),
             ft=np.zeros((4, 3), np.int64))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def with_entry(arrays: dict, key: str, value) -> dict:
    changed = dict(arrays)
    if value is None:
        del changed[key]
    else:
        changed[key] = value
    return changed


WRONG_FILES = {
    "FLAME_texture.npz": (lambda p, a, s: write_texture(p), "FLAME texture"),
    "random.npz": (lambda p, a, s: np.savez(p, weights=np.ones(3)), "npz archive with entries ['weights']"),
    "FLAME2020.zip": (lambda p, a, s: write_zip(p, {"generic_model.pkl": s.read_bytes()[:1000], "Readme.pdf": b"%"}),
                      "unpack it and pass one of ['generic_model.pkl']"),
    "truncated.pkl": (lambda p, a, s: p.write_bytes(s.read_bytes()[:100000]), "truncated"),
    "truncated_py2.pkl": (lambda p, a, s: p.write_bytes(s.read_bytes()[:-20]), "truncated"),
    "empty.pkl": (lambda p, a, s: p.write_bytes(b""), "truncated"),
    "notes.txt.pkl": (lambda p, a, s: p.write_text("FLAME model: see website\n"), "not a pickle"),
    "list.pkl": (lambda p, a, s: p.write_bytes(pickle.dumps([1, 2])), "holds a list"),
    "no_shapedirs.pkl": (lambda p, a, s: p.write_bytes(pickle.dumps(with_entry(a, "shapedirs", None))),
                         "lacks ['shapedirs']"),
    "flat_shapedirs.pkl": (lambda p, a, s: p.write_bytes(pickle.dumps(
        with_entry(a, "shapedirs", a["shapedirs"][:, :, 0]))), "'shapedirs' has shape (5023, 3)"),
    "nan_template.pkl": (lambda p, a, s: p.write_bytes(pickle.dumps(
        with_entry(a, "v_template", np.full((5023, 3), np.nan)))), "'v_template' contains NaN"),
    "bad_faces.pkl": (lambda p, a, s: p.write_bytes(pickle.dumps(with_entry(a, "f", a["f"] + 6000))),
                      "'f' indexes vertices outside"),
    "text_weights.pkl": (lambda p, a, s: p.write_bytes(pickle.dumps(with_entry(a, "weights", "none"))),
                         "'weights' is a str; expected an array"),
}


@pytest.mark.parametrize("name", sorted(WRONG_FILES))
def test_wrong_files_get_one_clear_message(tmp_path, flame_files, flame_arrays, name):
    make, detail = WRONG_FILES[name]
    path = tmp_path / name
    source = flame_files["chumpy_py2" if "py2" in name else "plain_py3"]
    make(path, flame_arrays, source)
    with pytest.raises(HeadModelError) as info:
        load_flame(path)
    message = str(info.value)
    assert str(path) in message and detail in message, message
    assert EXPECTED in message or "is not a usable FLAME model" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "nothing is cached for a wrong file"


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(HeadModelError, match=f"FLAME model file not found: {tmp_path / 'generic_model.pkl'}"):
        load_flame(tmp_path / "generic_model.pkl")
    with pytest.raises(HeadModelError, match=EXPECTED):
        load_flame(tmp_path)


class _Payload:
    """Pickles as os.system(...): what a malicious 'FLAME' file would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_flame_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((5023, 3)), "bs_style": _Payload(f"touch '{marker}'")},
                                  protocol=2))
    with pytest.raises(UnsafePickleError, match="os.system|posix.system") as info:
        load_flame(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


# -- annotation transfer ---------------------------------------------------------------------
def test_closest_points_on_triangles_beat_dense_sampling():
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(3, 500, 3))
    points = 1.5 * rng.normal(size=(500, 3))
    bary = closest_points_on_triangles(points, a, b, c)
    assert np.all(bary >= 0) and np.allclose(bary.sum(1), 1)
    distance = np.linalg.norm(bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c - points, axis=1)
    u, v = np.meshgrid(np.linspace(0, 1, 80), np.linspace(0, 1, 80))
    keep = u + v <= 1
    weights = np.stack([1 - u[keep] - v[keep], u[keep], v[keep]], axis=1)  # (K, 3)
    samples = np.einsum("kt,tnc->nkc", weights, np.stack([a, b, c]))
    sampled = np.linalg.norm(samples - points[:, None], axis=2).min(1)
    assert np.all(distance <= sampled + 1e-12)
    assert np.all(sampled - distance < 0.02)  # the sampling grid's resolution


def test_transfer_to_a_moved_and_scaled_copy_recovers_the_points(open_head):
    rotation, scale, shift = rodrigues(np.array([0.06, 0.15, -0.05])), 1.12, np.array([0.02, -0.015, 0.035])
    moved = scale * open_head.template.astype(np.float64) @ rotation.T + shift
    regions, points = transfer_annotations(open_head, moved, open_head.triangles)
    expected = scale * surface_point_positions(open_head.template, open_head.triangles,
                                               open_head.semantic_points) @ rotation.T + shift
    found = surface_point_positions(moved, open_head.triangles, points)
    assert np.max(np.linalg.norm(found - expected, axis=1)) < 1e-3
    assert points.names == open_head.semantic_points.names
    for name, mask in open_head.regions.items():
        assert np.array_equal(regions[name], mask), name


def test_flame_semantic_points_land_where_the_open_head_has_them(flame, open_head):
    ibug = [f"ibug_{k:02d}" for k in range(68)]
    on_flame = surface_point_positions(flame.template, flame.triangles, flame.semantic_points.subset(ibug))
    on_source = surface_point_positions(open_head.template, open_head.triangles,
                                        open_head.semantic_points.subset(ibug))
    error_mm = 1000 * np.linalg.norm(on_flame - on_source, axis=1)
    # Not exact: the synthetic head is a shrink-wrap that bridges concave spots (mouth, under the chin).
    assert np.median(error_mm) < 2.0 and error_mm.max() < 12.0, error_mm
    # Eye points lie on the lids, never on the eyeball spheres behind them.
    eye_vertices = flame.skin_weights[:, 3:].sum(1) > 0.5
    eye_points = flame.semantic_points.subset(ibug[36:48])
    assert not eye_vertices[flame.triangles[eye_points.triangle]].all(1).any()
    # Regions: the same parts of the head; FLAME's own eyeballs, and no teeth or tongue.
    for name in ("face", "lips", "eyelids", "ears", "neck", "back_of_head"):
        assert flame.regions[name].any() and not (flame.regions[name] & eye_vertices).any(), name
    assert np.array_equal(flame.regions["eyeballs"], eye_vertices) and eye_vertices.sum() == 2 * 546
    assert "teeth" not in flame.regions and "tongue" not in flame.regions
    face = flame.template[flame.regions["face"]].mean(0)
    back = flame.template[flame.regions["back_of_head"]].mean(0)
    neck = flame.template[flame.regions["neck"]].mean(0)
    assert face[2] > back[2] and neck[1] < face[1]
