"""The fitter's precombined point rig agrees with the reference forward model and its derivatives."""
import numpy as np
import pytest

from fitter_backend.fitting import point_rig
from fitter_backend.head_models import lbs
from tests.toy_heads import toy_head


@pytest.mark.parametrize("correctives", [True, False])
def test_point_rig_matches_reference_forward_and_jacobians(correctives):
    model = toy_head(seed=5, correctives=correctives)
    rng = np.random.default_rng(6)
    n = 4
    identity = rng.normal(size=model.num_identity)
    expression = rng.normal(size=(n, model.num_expression))
    rotations = rng.normal(size=(n, model.num_joints, 3)) * 0.3
    translation = rng.normal(size=(n, 3))
    points = model.semantic_points
    vertex_ids = np.array([0, 7, 19])
    joint_ids = np.array([3, 4])
    rig = point_rig.build_point_rig(model, points, vertex_ids, joint_ids)
    state = point_rig.evaluate(rig, identity, expression, rotations, translation)
    jac = point_rig.jacobians(rig, state, expression, rotations)
    # The rig's Jacobians are coordinate-major (N, 3, S, ...); compare point-major.
    jac_identity, jac_expression = jac.identity.transpose(0, 2, 1, 3), jac.expression.transpose(0, 2, 1, 3)
    jac_rotation = jac.rotation.transpose(0, 2, 1, 3, 4)

    reference = lbs.surface_point_jacobians(model, points, identity, expression, rotations, translation)
    posed = lbs.posed_vertices(model, identity, expression, rotations, translation)
    rig_all = lbs.Rig.from_model(model)
    pose = lbs.Pose.for_model(model, identity, expression, rotations, translation)
    _, d_id_v, d_ex_v, d_rot_v = lbs.vertex_jacobians(rig_all, pose)

    s = len(points)
    assert np.allclose(state.points[:, :s], reference.points, atol=1e-12)
    # Shape derivatives are float32 (memory-bound products feeding Gauss-Newton).
    close32 = lambda a, b: np.abs(a - b).max() <= 1e-6 * np.abs(b).max()  # noqa: E731
    assert close32(jac_identity[:, :s], reference.d_identity)
    assert close32(jac_expression[:, :s], reference.d_expression)
    assert np.allclose(jac_rotation[:, :s], reference.d_rotation, atol=1e-12)
    assert np.allclose(state.points[:, s:s + 3], posed[:, vertex_ids], atol=1e-12)
    assert close32(jac_identity[:, s:s + 3], d_id_v[:, vertex_ids])
    assert close32(jac_expression[:, s:s + 3], d_ex_v[:, vertex_ids])
    assert np.allclose(jac_rotation[:, s:s + 3], d_rot_v[:, vertex_ids], atol=1e-12)
    # Joint centres: the world origins of the eye joints (plus translation) and their derivatives.
    state_ref = lbs.forward(rig_all, pose)
    assert np.allclose(state.points[:, s + 3:], state_ref.origins_world[:, joint_ids] + translation[:, None], atol=1e-12)
    eps = 1e-6
    for k in range(model.num_joints):
        for a in range(3):
            step = np.zeros_like(rotations)
            step[:, k, a] = eps
            plus = point_rig.evaluate(rig, identity, expression, rotations + step, translation).points
            minus = point_rig.evaluate(rig, identity, expression, rotations - step, translation).points
            assert np.allclose(jac_rotation[:, s + 3:, :, k, a], ((plus - minus) / (2 * eps))[:, s + 3:], atol=1e-7)


def test_compiled_projection_matches_the_camera_model():
    """The energy's compiled projection gives cameras.project's pixels and derivatives (also for
    a point behind the camera, where the depth is clamped)."""
    from fitter_backend.fitting.cameras import Cameras, project
    from fitter_backend.fitting import energy

    rng = np.random.default_rng(3)
    cameras = Cameras.create([(640, 480), (800, 600)], [700.0, None], rotations=[None, [0.1, -0.3, 0.05]],
                             translations_m=[None, [0.02, 0.01, -0.1]])
    points = rng.normal(size=(3, 20, 3)) * 0.1 + np.array([0.0, 0.0, -0.6])
    points[0, 0] = [0.0, 0.0, 0.5]
    for camera in range(2):
        reference = project(points, cameras, camera)
        compiled = energy.project(points, cameras, camera)
        for name in ("pixels", "camera_points", "d_world", "d_log_focal", "d_extrinsics"):
            assert np.allclose(getattr(compiled, name), getattr(reference, name), rtol=1e-12, atol=1e-9), name
        assert np.allclose(energy.project(points, cameras, camera, derivatives=False).pixels, reference.pixels)
