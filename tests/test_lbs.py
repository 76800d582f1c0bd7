"""The forward model and its analytic derivatives, checked against finite differences."""
import numpy as np
import pytest

from fitter_backend.head_models import lbs
from tests.toy_heads import toy_head


def random_pose(model, rng, num_frames=3, scale=0.3):
    return dict(
        identity=rng.normal(size=model.num_identity),
        expression=rng.normal(size=(num_frames, model.num_expression)),
        joint_rotations=rng.normal(size=(num_frames, model.num_joints, 3)) * scale,
        translation=rng.normal(size=(num_frames, 3)) * 0.1,
    )


def relative_error(analytic, numeric):
    return np.max(np.abs(analytic - numeric)) / max(np.max(np.abs(numeric)), 1e-12)


def test_rodrigues_is_a_rotation_and_matches_its_derivative():
    rng = np.random.default_rng(1)
    rotvec = np.concatenate([rng.normal(size=(20, 3)), rng.normal(size=(4, 3)) * 1e-6, np.zeros((1, 3))])
    rotation = lbs.rodrigues(rotvec)
    assert np.allclose(rotation @ np.swapaxes(rotation, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rotation), 1.0)
    # Rotating the axis itself leaves it fixed; the angle is the vector's norm (below pi).
    assert np.allclose(np.einsum("bij,bj->bi", rotation, rotvec), rotvec)
    angle = np.arccos(np.clip((np.trace(rotation, axis1=1, axis2=2) - 1) / 2, -1, 1))
    norms = np.linalg.norm(rotvec, axis=1)
    assert np.allclose(angle[norms < 3], norms[norms < 3], atol=1e-6)
    derivative = lbs.rodrigues_derivative(rotvec)
    eps = 1e-6
    for a in range(3):
        step = np.zeros(3)
        step[a] = eps
        numeric = (lbs.rodrigues(rotvec + step) - lbs.rodrigues(rotvec - step)) / (2 * eps)
        assert np.max(np.abs(derivative[:, a] - numeric)) < 1e-8


def test_rest_pose_reproduces_the_shaped_mesh():
    model = toy_head()
    rng = np.random.default_rng(2)
    identity = rng.normal(size=model.num_identity)
    expression = rng.normal(size=(1, model.num_expression))
    posed = lbs.posed_vertices(model, identity, expression)
    shaped = model.template + model.identity_basis @ identity + model.expression_basis @ expression[0]
    assert np.allclose(posed[0], shaped, atol=1e-6)


def test_root_rotation_and_translation_move_the_head_rigidly():
    model = toy_head()
    rotations = np.zeros((1, model.num_joints, 3))
    rotations[0, 0] = [0.2, -0.4, 0.1]
    translation = np.array([[0.01, -0.02, 0.5]])
    posed = lbs.posed_vertices(model, joint_rotations=rotations, translation=translation)[0]
    rest = lbs.posed_vertices(model)[0]
    root = lbs.joint_locations(model.joint_regressor.astype(float), rest[None])[0, 0]
    expected = (rest - root) @ lbs.rodrigues(rotations[0, 0]).T + root + translation[0]
    # Only the root moves, so skinning is exactly rigid (correctives depend on non-root joints).
    assert np.allclose(posed, expected, atol=1e-9)


def test_jaw_rotation_moves_only_vertices_it_skins():
    model = toy_head(correctives=False)
    rotations = np.zeros((1, model.num_joints, 3))
    rotations[0, model.joint_index("jaw")] = [0.3, 0, 0]
    moved = np.linalg.norm(lbs.posed_vertices(model, joint_rotations=rotations)[0]
                           - lbs.posed_vertices(model)[0], axis=1)
    jaw_weight = model.skin_weights[:, model.joint_index("jaw")]
    assert np.all(moved[jaw_weight < 1e-6] < 1e-9)
    assert moved[jaw_weight > 0.5].min() > 1e-4


@pytest.mark.parametrize("correctives", [True, False])
def test_surface_point_jacobians_match_finite_differences(correctives):
    model = toy_head(seed=3, correctives=correctives)
    rng = np.random.default_rng(4)
    params = random_pose(model, rng)
    points = model.semantic_points
    jac = lbs.surface_point_jacobians(model, points, **params)

    def evaluate(**override):
        p = dict(params, **override)
        return lbs.surface_points(lbs.posed_vertices(model, **p), model.triangles, points)

    assert np.allclose(jac.points, evaluate(), atol=1e-12)
    eps = 1e-6
    for name, derivative, shape in (("identity", jac.d_identity, (model.num_identity,)),
                                    ("expression", jac.d_expression, params["expression"].shape),
                                    ("joint_rotations", jac.d_rotation, params["joint_rotations"].shape)):
        base = params[name]
        numeric = np.zeros_like(derivative)
        for flat in range(int(np.prod(shape))):
            index = np.unravel_index(flat, shape)
            step = np.zeros(shape)
            step[index] = eps
            diff = (evaluate(**{name: base + step}) - evaluate(**{name: base - step})) / (2 * eps)
            if name == "identity":
                numeric[..., index[0]] = diff
            elif name == "expression":
                numeric[index[0], :, :, index[1]] = diff[index[0]]
            else:
                numeric[index[0], :, :, index[1], index[2]] = diff[index[0]]
        assert relative_error(derivative, numeric) < 1e-4, name
        # Derivatives with respect to one frame's parameters do not leak into other frames.
        if name != "identity":
            assert numeric.shape == derivative.shape


def test_rotation_vector_inverts_rodrigues():
    rng = np.random.default_rng(7)
    rotvec = rng.normal(size=(20, 3))
    rotvec *= (rng.uniform(0.0, 3.0, 20) / np.linalg.norm(rotvec, axis=1))[:, None]
    for r in rotvec:
        assert np.allclose(lbs.rotation_vector(lbs.rodrigues(r)), r, atol=1e-9)
    assert np.all(lbs.rotation_vector(np.eye(3)) == 0)
