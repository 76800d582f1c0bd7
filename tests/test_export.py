"""The result files the Blender add-on imports: Blender's frame, the armature's way of posing
reproduces the forward model, cameras project like the fitter's, result.json last."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from fitter_backend.export import result_files
from fitter_backend.export.result_files import AXIS_TO_BLENDER, animation_arrays, rig_arrays, write_result
from fitter_backend.fitting import synthetic
from fitter_backend.fitting.cameras import project
from fitter_backend.fitting.sequence import FitResult
from fitter_backend.head_models import lbs
from tests.toy_heads import toy_head


def fit_arrays(params, flags=None):
    """What fit.npz holds for these parameters."""
    n = params.num_frames
    return {"identity": params.identity, "expression": params.expression, "joint_rotations": params.rotations,
            "translation_m": params.translation_m, "focal_px": params.cameras.focal_px,
            "camera_rotation": params.cameras.rotation, "camera_translation_m": params.cameras.translation_m,
            "image_size_px": params.cameras.image_size_px, "frame_rms": np.ones(n),
            "frame_flags": np.array(flags or [""] * n)}


def armature_pose(rig: dict, animation: dict) -> np.ndarray:
    """(N, V, 3) vertices the way Blender's armature deforms them: shape keys on the rest
    mesh, then each bone rotates about its rest head after its parent, the root also translates."""
    rest = rig["vertices"][None] + np.einsum("ne,evc->nvc", animation["expression"], rig["expression_deltas"])
    joints, parents = rig["joint_positions"].astype(np.float64), rig["joint_parents"]
    n, j = animation["joint_rotations"].shape[:2]
    transforms = np.zeros((n, j, 4, 4))
    for k in range(j):
        local = np.tile(np.eye(4), (n, 1, 1))
        local[:, :3, :3] = lbs.rodrigues(animation["joint_rotations"][:, k].astype(np.float64))
        local[:, :3, 3] = joints[k] - local[:, :3, :3] @ joints[k]
        if parents[k] < 0:
            local[:, :3, 3] += animation["translation_m"]
            transforms[:, k] = local
        else:
            transforms[:, k] = transforms[:, parents[k]] @ local
    weights = np.zeros((len(rig["vertices"]), j))
    weights[rig["skin_vertex"], rig["skin_joint"]] = rig["skin_weight"]
    blended = np.einsum("vj,njab->nvab", weights, transforms)
    return np.einsum("nvab,nvb->nva", blended[..., :3, :3], rest) + blended[..., :3, 3]


def test_the_axis_change_is_a_rotation_taking_up_to_z_and_the_face_to_minus_y():
    assert np.isclose(np.linalg.det(AXIS_TO_BLENDER), 1.0)
    assert np.allclose(AXIS_TO_BLENDER @ AXIS_TO_BLENDER.T, np.eye(3))
    assert np.allclose(AXIS_TO_BLENDER @ [0, 1, 0], [0, 0, 1])    # up
    assert np.allclose(AXIS_TO_BLENDER @ [0, 0, 1], [0, -1, 0])   # the face looks down Blender's -Y
    assert np.allclose(AXIS_TO_BLENDER @ [1, 0, 0], [1, 0, 0])    # the subject's left stays +X


def test_the_armature_reproduces_the_forward_model_in_blenders_frame():
    model = toy_head(seed=4, correctives=False)
    # Blender's bones do not move with expressions: keep the joints' vertices still under them.
    moving_joints = model.joint_regressor.any(axis=0)
    basis = model.expression_basis.copy()
    basis[moving_joints] = 0
    model = dataclasses.replace(model, expression_basis=basis)
    rng = np.random.default_rng(0)
    n = 5
    identity = rng.normal(size=model.num_identity)
    expression = rng.normal(size=(n, model.num_expression))
    rotations = 0.3 * rng.normal(size=(n, model.num_joints, 3))
    translation = rng.normal(scale=0.1, size=(n, 3))
    shot = synthetic.make_shot(model, synthetic.area_sampled_points(model, 20), num_frames=n)
    params = dataclasses.replace(shot.truth, identity=identity, expression=expression, rotations=rotations,
                                 translation_m=translation)
    rig = rig_arrays(model, identity)
    animation = animation_arrays(fit_arrays(params), np.arange(n), 25.0)
    expected = lbs.posed_vertices(model, identity, expression, rotations, translation) @ AXIS_TO_BLENDER.T
    assert np.abs(armature_pose(rig, animation) - expected).max() < 1e-5  # float32 storage
    assert np.abs(expected - expected[0]).max() > 0.05  # frames really differ


def test_cameras_project_like_the_fitter():
    model = toy_head(seed=1)
    shot = synthetic.make_shot(model, synthetic.area_sampled_points(model, 30), num_frames=3, num_cameras=3)
    animation = animation_arrays(fit_arrays(shot.truth), np.arange(3), 25.0)
    points = lbs.posed_vertices(model, shot.truth.identity, shot.truth.expression, shot.truth.rotations,
                                shot.truth.translation_m)
    blender_points = points @ AXIS_TO_BLENDER.T
    for c in range(3):
        world_to_camera = np.linalg.inv(animation["camera_matrix_world"][c])
        local = blender_points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
        width, height = animation["image_size_px"][c]
        focal = animation["focal_px"][c]
        # A Blender camera looks down its local -Z with +Y up; pixels run right and down.
        pixels = np.stack([width / 2 + focal * local[..., 0] / -local[..., 2],
                           height / 2 - focal * local[..., 1] / -local[..., 2]], axis=-1)
        assert np.abs(pixels - project(points, shot.truth.cameras, c, derivatives=False).pixels).max() < 1e-6


def test_write_result_lists_every_file_with_its_hash_and_writes_the_manifest_last(tmp_path, monkeypatch):
    model = toy_head(seed=2)
    shot = synthetic.make_shot(model, synthetic.area_sampled_points(model, 30), num_frames=4)
    result = FitResult(shot.truth, np.ones(4), [[], ["high_residual"], [], []], {"frames": 4})
    manifest_path = write_result(tmp_path / "ok", model, result, np.arange(10, 14), 30.0, {"job": "j1"},
                                 shot.observations.mu_px, shot.observations.sigma_px)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == "facecap-result" and manifest["format_version"] == 1 and manifest["job"] == "j1"
    assert sorted(manifest["files"]) == ["animation.npz", "fit.json", "fit.npz", "rig.npz"]
    for name, entry in manifest["files"].items():
        data = (tmp_path / "ok" / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted([*manifest["files"], "result.json"])
    with np.load(tmp_path / "ok" / "animation.npz", allow_pickle=False) as animation:
        assert animation["frame_indices"].tolist() == [10, 11, 12, 13]
        assert animation["frame_flags"].tolist() == ["", "high_residual", "", ""]
        assert animation["landmarks_px"].shape == (4, 1, 30, 2) and float(animation["fps"]) == 30.0
    with np.load(tmp_path / "ok" / "rig.npz", allow_pickle=False) as rig:
        assert rig["expression_names"].tolist() == list(model.expression_names)
        assert np.allclose(rig["expression_deltas"][2], model.expression_basis[:, :, 2] @ AXIS_TO_BLENDER.T)

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(result_files, "animation_arrays", broken)
    with pytest.raises(OSError, match="disk full"):
        write_result(tmp_path / "broken", model, result, np.arange(4), 25.0, {})
    assert not (tmp_path / "broken" / "result.json").exists()  # an interrupted write is never importable
