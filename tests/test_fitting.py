"""The fitter: each energy term's gradient, the structured solve, recovery of known
parameters (monocular with unknown focal, multi-view), real-time mode, and bad inputs."""
import dataclasses

import numpy as np
import pytest

from fitter_backend.bench.metrics import identity_error_mm
from fitter_backend.errors import FitError
from fitter_backend.fitting import point_rig, realtime, sequence, solver, synthetic
from fitter_backend.fitting.cameras import Cameras, project
from fitter_backend.fitting import energy as energy_module
from fitter_backend.fitting.energy import TERMS, ShotEnergy
from fitter_backend.fitting.intersection import TeethHull
from fitter_backend.fitting.normal_equations import NormalEquations, solve
from fitter_backend.fitting.problem import FitSettings, Layout, Observations, Parameters
from fitter_backend.head_models import lbs
from tests.toy_heads import toy_head

ALL_OFF = dict(identity_weight=0.0, expression_weight=0.0, opposing_weight=0.0, joint_weight=0.0, temporal_weight=0.0,
               eye_temporal_weight=0.0, depth_temporal_weight=0.0, expression_temporal_weight=0.0,
               eye_coupling_weight=0.0, intersect_weight_per_m=0.0, look_coupling_weight=0.0, size_weight=0.0)


def toy_problem(num_cameras=2, num_frames=5, seed=0):
    model = toy_head(seed=seed, num_identity=4, num_expression=5)
    landmarks = synthetic.area_sampled_points(model, 40, seed=seed)
    shot = synthetic.make_shot(model, landmarks, num_frames=num_frames, num_cameras=num_cameras, seed=seed,
                               yaw_deg=30, extrinsics_known=False, distance_m=0.5)
    rng = np.random.default_rng(seed)
    truth = shot.truth
    # Start away from the truth, with large expressions so eyelids and lips intersect.
    params = Parameters(truth.identity + rng.normal(size=truth.identity.shape) * 0.3,
                        rng.normal(size=truth.expression.shape) * 3.0,
                        truth.rotations + rng.normal(size=truth.rotations.shape) * 0.05,
                        truth.translation_m + rng.normal(size=truth.translation_m.shape) * 0.01,
                        shot.cameras.copy())
    params.cameras.rotation[1:] = truth.cameras.rotation[1:] + 0.02
    params.cameras.translation_m[1:] = truth.cameras.translation_m[1:] + 0.01
    return model, landmarks, shot, params


def numeric_gradient(energy, params, layout, term, eps=1e-6):
    """Central differences of one term's energy over every per-frame and shared unknown."""
    def value(delta_frames, delta_shared):
        return energy.evaluate(layout.apply(params, delta_frames, delta_shared), layout, False).terms[term]

    n, p, q = params.num_frames, layout.frame_size, layout.shared_size
    g_frames, g_shared = np.zeros((n, p)), np.zeros(q)
    for i in range(n):
        for k in range(p):
            d = np.zeros((n, p))
            d[i, k] = eps
            g_frames[i, k] = (value(d, np.zeros(q)) - value(-d, np.zeros(q))) / (2 * eps)
    for k in range(q):
        d = np.zeros(q)
        d[k] = eps
        g_shared[k] = (value(np.zeros((n, p)), d) - value(np.zeros((n, p)), -d)) / (2 * eps)
    return g_frames, g_shared


def with_lips_in_a_hull(energy, params):
    """The toy's teeth hull replaced by a 10 mm box, rotating with the jaw and carried by the
    hull's anchor vertex, around where the first lip vertex is in frame 0 at ``params``, so
    the lip part of the term fires."""
    geometry = energy.geometry
    anchor = geometry.hulls[0].anchor_vertex
    jaw = energy.model.joint_index("jaw")
    state = point_rig.evaluate(energy.rig, params.identity, params.expression, params.rotations,
                               params.translation_m)
    lip = state.points[0, energy.lip_points][0] - state.points[0, energy.anchor_points[0]]
    centre = state.rotations_world[0, jaw].T @ lip + np.array([0.002, 0.001, 0.0015])  # one nearest face
    normals = np.concatenate([np.eye(3), -np.eye(3)])
    box = TeethHull(jaw, anchor, normals, -normals @ centre - 0.005)
    energy.geometry = dataclasses.replace(geometry, hulls=(box,))
    return energy


def dense_system(equations, n: int, p: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """The block normal equations as one dense symmetric (n p + q)^2 matrix and its gradient."""
    dense = np.zeros((n * p + q, n * p + q))
    for i in range(n):
        dense[i * p:(i + 1) * p, i * p:(i + 1) * p] = equations.frame_frame[i]
        dense[n * p:, i * p:(i + 1) * p] = equations.frame_shared[i].T
        if i < n - 1:
            dense[(i + 1) * p:(i + 2) * p, i * p:(i + 1) * p] = equations.frame_next[i]
    dense[n * p:, n * p:] = equations.shared_shared
    dense = np.tril(dense) + np.tril(dense, -1).T
    return dense, np.concatenate([equations.frame_gradient.ravel(), equations.shared_gradient])


@pytest.mark.parametrize("term, weights", [
    ("landmarks", {}),
    ("identity", {"identity_weight": 1.5}),
    ("identity", {"size_weight": 2.0}),
    ("identity", {"pupil_distance_mm": 63.0}),
    ("expression", {"expression_weight": 0.7}),
    ("joints", {"joint_weight": 2.0}),
    ("joints", {"eye_coupling_weight": 4.0}),
    ("temporal", {"temporal_weight": 0.2}),
    ("temporal", {"temporal_weight": 0.2, "eye_temporal_weight": 20.0}),
    ("temporal", {"temporal_weight": 0.2, "depth_temporal_weight": 1000.0}),
    ("intersect", {"intersect_weight_per_m": 3000.0}),
])
def test_each_term_gradient_matches_finite_differences(term, weights):
    model, landmarks, shot, params = toy_problem()
    layout = Layout.for_problem(model, params.cameras)
    assert layout.shared_size == model.num_identity + 2 + 6  # two unknown focals, one unknown camera pose
    base = ShotEnergy(model, landmarks, shot.observations, FitSettings(**ALL_OFF))
    with_term = ShotEnergy(model, landmarks, shot.observations, FitSettings(**dict(ALL_OFF, **weights)))
    if term == "intersect":
        with_term = with_lips_in_a_hull(with_term, params)
    evaluation = with_term.evaluate(params, layout, True)
    assert evaluation.terms[term] > 1e-3, f"{term} is inactive at the test point"
    if term == "intersect":  # both parts fire: eyelids in eyeballs and lips in the teeth hull
        eyelids_only = ShotEnergy(model, landmarks, shot.observations, with_term.settings)
        eyelids_only.geometry = dataclasses.replace(with_term.geometry, hulls=())
        eyelid_energy = eyelids_only.evaluate(params, layout, False).terms[term]
        assert 1e-3 < eyelid_energy < evaluation.terms[term] - 1e-3
    analytic_frames = evaluation.equations.frame_gradient
    analytic_shared = evaluation.equations.shared_gradient
    if term != "landmarks":  # isolate the term: gradients add up over terms
        reference = base.evaluate(params, layout, True).equations
        analytic_frames = analytic_frames - reference.frame_gradient
        analytic_shared = analytic_shared - reference.shared_gradient
    numeric_frames, numeric_shared = numeric_gradient(with_term, params, layout, term)
    scale = max(np.abs(numeric_frames).max(), np.abs(numeric_shared).max())
    assert np.abs(analytic_frames - numeric_frames).max() / scale < 1e-4
    assert np.abs(analytic_shared - numeric_shared).max() / scale < 1e-4


def test_steady_expression_rows_hold_the_slow_units_and_their_gradient_is_exact():
    """E_temporal on the steady ARKit units: rows w (psi_i - psi_{i-1}) on every unit but the
    lids', the eyes' and the jaw's opening and closing; none on a head without ARKit units."""
    model, landmarks, shot, params = toy_problem()
    assert len(model.steady_expressions) == 0                              # expr0.. are not ARKit units
    model = dataclasses.replace(model, expression_names=("jawOpen", "mouthSmileLeft", "eyeBlinkLeft",
                                                         "browInnerUp", "mouthClose"))
    assert model.steady_expressions.tolist() == [1, 3]
    layout = Layout.for_problem(model, params.cameras)
    params.expression = np.random.default_rng(3).uniform(0.1, 0.9, params.expression.shape)  # inside the bounds
    on = dict(ALL_OFF, temporal_weight=1e-9, expression_temporal_weight=3.0)
    energy = ShotEnergy(model, landmarks, shot.observations, FitSettings(**on))
    steady = params.expression[:, [1, 3]]
    assert energy.evaluate(params, layout, False).terms["temporal"] == pytest.approx(
        0.5 * 9.0 * np.sum(np.diff(steady, axis=0) ** 2), rel=1e-6)
    rows = NormalEquations(params.num_frames, layout.frame_size, layout.shared_size)
    energy._steady_expressions(params, layout, rows, energy_module._Tally())
    numeric_frames, _ = numeric_gradient(energy, params, layout, "temporal")
    assert np.abs(rows.frame_gradient - numeric_frames).max() < 1e-4 * np.abs(numeric_frames).max()
    assert np.all(numeric_frames[:, layout.expression_slice.start + np.array([0, 2, 4])] == 0)   # fast units free


def test_the_size_row_holds_the_heads_size_where_no_camera_pair_sees_scale():
    """E_size: w 100 (size(beta) - size(mean)) / size(mean), the neutral head's linearised size
    change in percent; none once a second camera has a known place (a baseline fixes scale)."""
    from fitter_backend.head_models.head_size import eye_distance_line, neutral_size_m, size_line

    model, landmarks, shot, params = toy_problem()
    line = size_line(model)
    step = np.random.default_rng(4).normal(size=model.num_identity) * 1e-4
    assert neutral_size_m(model, line.reference) == pytest.approx(line.size_m)
    assert neutral_size_m(model, line.reference + step) - line.size_m == pytest.approx(line.gradient_m @ step, rel=1e-3)
    settings = FitSettings(**dict(ALL_OFF, size_weight=2.0))
    energy = ShotEnergy(model, landmarks, shot.observations, settings)
    layout = Layout.for_problem(model, params.cameras)
    assert not params.cameras.see_scale                  # the toy shot's second camera is placed by the fit
    change_pct = 100 * line.gradient_m @ (params.identity - line.reference) / line.size_m
    assert abs(change_pct) > 0.1
    assert energy.evaluate(params, layout, False).terms["identity"] == pytest.approx(0.5 * (2.0 * change_pct) ** 2)
    params.cameras.extrinsics_known[1] = True
    assert params.cameras.see_scale
    assert energy.evaluate(params, Layout.for_problem(model, params.cameras), False).terms["identity"] == 0.0
    # A measured pupil distance holds on any cameras: the eyeball centres' distance against it.
    eyes = eye_distance_line(model)
    measured = ShotEnergy(model, landmarks, shot.observations, FitSettings(**dict(ALL_OFF, pupil_distance_mm=63.0)))
    apart_m = eyes.size_m + eyes.gradient_m @ (params.identity - eyes.reference)
    assert measured.evaluate(params, layout, False).terms["identity"] == pytest.approx(
        0.5 * (10.0 * 100 * (apart_m - 0.063) / 0.063) ** 2)
    for bad in (30.0, float("nan"), "63"):
        with pytest.raises(FitError, match="pupil distance must be 40 to 90 mm"):
            FitSettings(pupil_distance_mm=bad)


def test_units_scaled_by_the_identity_chain_into_expression_and_identity_gradients():
    """Units whose blend weight is psi (offset + gain . beta) (the blink units of a real head):
    the landmark term's analytic gradient by central differences, and the energy's points where
    lbs.posed_vertices puts them."""
    model, landmarks, shot, params = toy_problem()
    rng = np.random.default_rng(8)
    offset, gain = np.ones(model.num_expression), np.zeros((model.num_expression, model.num_identity))
    offset[[1, 3]], gain[[1, 3]] = (0.8, 1.3), rng.normal(size=(2, model.num_identity)) * 0.4
    model.__dict__["blend_scale_terms"] = (offset, gain)  # the cached property, as a head with blink units has it
    layout = Layout.for_problem(model, params.cameras)
    energy = ShotEnergy(model, landmarks, shot.observations, FitSettings(**ALL_OFF))
    assert energy.scaled_units.tolist() == [1, 3]
    equations = energy.evaluate(params, layout, True).equations
    numeric_frames, numeric_shared = numeric_gradient(energy, params, layout, "landmarks")
    scale = max(np.abs(numeric_frames).max(), np.abs(numeric_shared).max())
    assert np.abs(equations.frame_gradient - numeric_frames).max() / scale < 1e-4
    assert np.abs(equations.shared_gradient - numeric_shared).max() / scale < 1e-4
    chunk = energy._chunk(params, layout, np.arange(params.num_frames), False, False, False)
    posed = lbs.posed_vertices(model, params.identity, params.expression, params.rotations, params.translation_m)
    assert np.allclose(chunk.points[:, energy.landmark_points], lbs.surface_points(posed, model.triangles, landmarks),
                       atol=1e-6)


def test_landmarks_that_hold_still_over_closing_lids_blend_to_their_closed_place_with_exact_gradients():
    """A landmark with a closed-eye place (SurfacePoints.eyes_closed) is its open place at
    eyeBlink 0, its closed place at 1, and the landmark term's gradient stays exact, with the
    blink units scaled by the identity as a real head's are."""
    model, landmarks, shot, params = toy_problem()
    model = dataclasses.replace(model, expression_names=("eyeBlinkLeft", "eyeBlinkRight") + model.expression_names[2:])
    rng = np.random.default_rng(5)
    offset, gain = np.ones(model.num_expression), np.zeros((model.num_expression, model.num_identity))
    offset[:2], gain[:2] = (0.8, 1.3), rng.normal(size=(2, model.num_identity)) * 0.4
    model.__dict__["blend_scale_terms"] = (offset, gain)  # blinks scaled by the identity, as on a real head
    moved = np.array([3, 8, 21])
    triangle, barycentric = landmarks.triangle.copy(), landmarks.barycentric.copy()
    triangle[moved] = rng.integers(0, len(model.triangles), len(moved))
    landmarks = dataclasses.replace(landmarks, eyes_closed=dataclasses.replace(landmarks, triangle=triangle))
    energy = ShotEnergy(model, landmarks, shot.observations, FitSettings(**ALL_OFF))
    assert energy.sliding.landmark.tolist() == moved.tolist() and set(energy.sliding.unit) <= {0, 1}
    layout = Layout.for_problem(model, params.cameras)
    frames = np.arange(params.num_frames)
    for weight, placed in ((0.0, landmarks), (1.0, landmarks.eyes_closed)):
        at = params.copy()
        at.expression[:, :2] = weight
        chunk = energy._chunk(at, layout, frames, False, False, False)
        posed = lbs.posed_vertices(model, at.identity, at.expression, at.rotations, at.translation_m)
        assert np.allclose(chunk.points[:, energy.landmark_points], lbs.surface_points(posed, model.triangles, placed),
                           atol=1e-6)
    params.expression[:, :2] = rng.uniform(0.2, 0.8, size=(params.num_frames, 2))  # inside the blend's range
    equations = energy.evaluate(params, layout, True).equations
    numeric_frames, numeric_shared = numeric_gradient(energy, params, layout, "landmarks")
    scale = max(np.abs(numeric_frames).max(), np.abs(numeric_shared).max())
    assert np.abs(equations.frame_gradient - numeric_frames).max() / scale < 1e-4
    assert np.abs(equations.shared_gradient - numeric_shared).max() / scale < 1e-4


def test_eye_rows_gradient_and_hessian_with_a_real_time_anchor():
    """The eye terms on one frame of a real-time solve (E_temporal anchored at the previous
    frame's eye rotations): gradient by central differences, Gauss-Newton matrix as J^T J of
    the rows, which are linear in the eye rotations."""
    model, landmarks, shot, params = toy_problem()
    layout = Layout.for_problem(model, params.cameras)
    settings = FitSettings(**dict(ALL_OFF, temporal_weight=1e-12, eye_temporal_weight=20.0, eye_coupling_weight=4.0))
    frame = np.array([2])
    anchor = params.rotations[1, model.eyeball_joints]
    energy = ShotEnergy(model, landmarks, shot.observations, settings).restricted(frame, eye_anchor=anchor)
    single = Parameters(params.identity, params.expression[frame], params.rotations[frame],
                        params.translation_m[frame], params.cameras)
    evaluation = energy.evaluate(single, layout, True)
    assert evaluation.terms["temporal"] > 1e-3 and evaluation.terms["joints"] > 1e-3
    reference = ShotEnergy(model, landmarks, shot.observations,
                           FitSettings(**dict(ALL_OFF, temporal_weight=1e-12))).restricted(frame)
    reference_equations = reference.evaluate(single, layout, True).equations
    gradient = evaluation.equations.frame_gradient - reference_equations.frame_gradient
    numeric = sum(numeric_gradient(energy, single, layout, term)[0] for term in ("temporal", "joints"))
    assert np.abs(gradient - numeric).max() / np.abs(numeric).max() < 1e-4
    eyes = layout.rotation_slice.start + 3 * np.asarray(model.eyeball_joints)[:, None] + np.arange(3)
    w_t, w_c = 20.0, 4.0
    expected = np.zeros((6, 6))
    expected[np.arange(6), np.arange(6)] = w_t ** 2 + w_c ** 2
    expected[np.arange(3), np.arange(3, 6)] = expected[np.arange(3, 6), np.arange(3)] = -w_c ** 2
    hessian = (evaluation.equations.frame_frame - reference_equations.frame_frame)[0][np.ix_(eyes.ravel(), eyes.ravel())]
    assert np.allclose(hessian, expected, rtol=1e-5)


def test_stacked_rows_accumulate_like_separate_frame_and_shared_rows():
    """add_stacked_rows (one Gram matrix per frame of [frame | shared] columns) adds the same
    J^T J blocks and gradients as add_frame_rows with the columns apart, and with q' = 0 leaves z alone."""
    rng = np.random.default_rng(4)
    n, p, q, rows = 3, 4, 3, 7
    frames = np.array([0, 2, 3])
    residual = rng.normal(size=(n, rows))
    jacobian = rng.normal(size=(n, rows, p + q)).astype(np.float32)
    stacked, separate = NormalEquations(4, p, q), NormalEquations(4, p, q)
    stacked.add_stacked_rows(frames, residual, jacobian)
    separate.add_frame_rows(frames, residual, jacobian[..., :p], jacobian[..., p:])
    for name in ("frame_frame", "frame_shared", "shared_shared", "frame_gradient", "shared_gradient"):
        assert np.allclose(getattr(stacked, name), getattr(separate, name), rtol=1e-5, atol=1e-5), name
    frame_only = NormalEquations(4, p, q)
    frame_only.add_stacked_rows(frames, residual, jacobian[..., :p])
    assert np.allclose(frame_only.frame_frame, separate.frame_frame, rtol=1e-5, atol=1e-5)
    assert not frame_only.shared_shared.any() and not frame_only.frame_shared.any()


def test_frame_changes_accumulate_like_pair_rows():
    """add_frame_changes (E_temporal on unknowns themselves, entry by entry) adds what
    add_pair_rows adds for the same rows with dense Jacobians."""
    rng = np.random.default_rng(5)
    n, p, weight = 5, 6, 3.0
    columns = np.array([1, 4])
    residual = rng.normal(size=(n - 1, 2))
    d_this = np.zeros((n - 1, 2, p))
    d_this[:, np.arange(2), columns] = weight
    entries, dense = NormalEquations(n, p, 2), NormalEquations(n, p, 2)
    entries.add_frame_changes(columns, residual, weight)
    dense.add_pair_rows(np.arange(1, n), residual, d_this, -d_this, None)
    for name in ("frame_frame", "frame_next", "frame_gradient"):
        assert np.allclose(getattr(entries, name), getattr(dense, name)), name
    assert entries.has_temporal and not entries.frame_shared.any() and not entries.shared_shared.any()


def test_structured_solve_equals_dense_solve():
    rng = np.random.default_rng(3)
    n, p, q = 6, 4, 3
    equations = NormalEquations(n, p, q)
    # Random single-frame, pair (temporal) and shared rows.
    frames = np.arange(n)
    equations.add_frame_rows(frames, rng.normal(size=(n, 9)), rng.normal(size=(n, 9, p)), rng.normal(size=(n, 9, q)))
    pair = np.arange(1, n)
    equations.add_pair_rows(pair, rng.normal(size=(n - 1, 5)), rng.normal(size=(n - 1, 5, p)),
                            rng.normal(size=(n - 1, 5, p)), rng.normal(size=(n - 1, 5, q)))
    equations.add_shared_rows(rng.normal(size=q), np.eye(q))
    dense, gradient = dense_system(equations, n, p, q)
    damping = 0.01
    damped = dense + damping * np.diag(np.diag(dense))
    expected = -np.linalg.solve(damped, gradient)
    delta_frames, delta_shared = solve(equations, np.arange(p), np.arange(q), damping)
    assert np.allclose(np.concatenate([delta_frames.ravel(), delta_shared]), expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def open_head():
    from fitter_backend.head_models.open_head import load_open_head
    return load_open_head()


def test_short_monocular_shot_keeps_its_focal_and_head_size(open_head):
    # A shot too short for identity keyframes, with sigmas like the default landmarks' (face
    # points tight, whole-head points loose): identity and focal must be solved without
    # E_temporal, which pays for true motion and buys less of it with a closer camera
    # (focal -11 % here when they were solved together).
    landmarks = synthetic.area_sampled_points(open_head, 400, seed=4)
    face = open_head.regions["face"][open_head.triangles[landmarks.triangle]].all(axis=1)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=24, seed=5, yaw_deg=20, noise_px=1.0,
                               outlier_fraction=0.0)
    sigma = np.broadcast_to(np.where(face, 5.0, 45.0), shot.observations.sigma_px.shape).copy()
    result = sequence.fit_sequence(open_head, landmarks, Observations(shot.observations.mu_px, sigma), shot.cameras)
    assert abs(result.params.cameras.focal_px[0] / shot.truth.cameras.focal_px[0] - 1) < 0.07
    corners = open_head.semantic_points.subset(["ibug_36", "ibug_45"])
    eye_distance = [np.linalg.norm(np.diff(lbs.surface_points(lbs.posed_vertices(open_head, identity),
                                                              open_head.triangles, corners)[0], axis=0))
                    for identity in (result.params.identity, shot.truth.identity)]
    assert abs(eye_distance[0] / eye_distance[1] - 1) < 0.05


def test_monocular_fit_recovers_identity_focal_and_motion(open_head):
    landmarks = synthetic.area_sampled_points(open_head, 300, seed=4)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=24, seed=5, yaw_deg=50, noise_px=1.0,
                               outlier_fraction=0.05)
    result = sequence.fit_sequence(open_head, landmarks, shot.observations, shot.cameras)
    assert shot.cameras.focal_known.tolist() == [False]
    focal_error = abs(result.params.cameras.focal_px[0] / shot.truth.cameras.focal_px[0] - 1)
    assert focal_error < 0.03
    assert identity_error_mm(open_head, result.params.identity, shot.truth.identity) < 2.5
    assert np.nanmedian(result.frame_rms) < 1.3  # at the noise level
    assert result.report["energy_final"] < result.report["energy_initial"]
    assert np.allclose(result.params.rotations[:, 0], shot.truth.rotations[:, 0], atol=np.radians(3))
    assert all(flags == [] for flags in result.flags)


def test_points_on_the_pupils_turn_the_eyes_after_the_gaze(open_head):
    from fitter_backend.evaluation.capture_measures import gaze_error_deg
    from fitter_backend.head_models.eyes import pupil_surface_points

    landmarks = synthetic.area_sampled_points(open_head, 200, seed=14).join(pupil_surface_points(open_head))
    shot = synthetic.make_shot(open_head, landmarks, num_frames=12, seed=15, yaw_deg=20, noise_px=0.2,
                               outlier_fraction=0.0)
    result = sequence.fit_sequence(open_head, landmarks, shot.observations, shot.cameras)
    ahead = gaze_error_deg(open_head, np.zeros_like(shot.truth.rotations), shot.truth.rotations)
    assert np.median(ahead) > 4.0                       # the actor looks around
    assert np.median(gaze_error_deg(open_head, result.params.rotations, shot.truth.rotations)) < 2.0


def test_an_eye_whose_pupil_is_hidden_keeps_looking_with_the_other(open_head):
    """A pupil unseen for five frames (a half-shut lid): conjugate gaze and the eyes' E_temporal
    keep that eye with the other one; with the joint prior alone it turned to straight ahead."""
    from fitter_backend.evaluation.capture_measures import gaze_error_deg
    from fitter_backend.head_models.eyes import pupil_surface_points

    landmarks = synthetic.area_sampled_points(open_head, 200, seed=14).join(pupil_surface_points(open_head))
    shot = synthetic.make_shot(open_head, landmarks, num_frames=12, seed=15, yaw_deg=20, noise_px=0.2,
                               outlier_fraction=0.0)
    mu = shot.observations.mu_px.copy()
    hidden = slice(4, 9)
    mu[hidden, :, -2] = np.nan  # pupil_L
    observations = Observations(mu, shot.observations.sigma_px)
    left = list(open_head.eyeball_joints).index(open_head.joint_index("eye_L"))
    errors = {}
    for name, settings in (("default", FitSettings()),
                           ("joint prior alone", FitSettings(eye_temporal_weight=0.0, eye_coupling_weight=0.0))):
        result = sequence.fit_sequence(open_head, landmarks, observations, shot.cameras, settings=settings)
        errors[name] = np.median(gaze_error_deg(open_head, result.params.rotations, shot.truth.rotations)[hidden, left])
    ahead = np.median(gaze_error_deg(open_head, np.zeros_like(shot.truth.rotations), shot.truth.rotations)[hidden, left])
    assert ahead > 4.0
    assert errors["default"] < 2.0 < errors["joint prior alone"]


def test_multiview_fit_recovers_camera_poses(open_head):
    landmarks = synthetic.area_sampled_points(open_head, 200, seed=6)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=8, num_cameras=3, seed=7, yaw_deg=20,
                               noise_px=1.0, outlier_fraction=0.0, extrinsics_known=False, focal_known=True)
    assert shot.cameras.extrinsics_known.tolist() == [True, False, False]
    result = sequence.fit_sequence(open_head, landmarks, shot.observations, shot.cameras)
    fitted, truth = result.params.cameras, shot.truth.cameras
    for c in (1, 2):
        angle = np.linalg.norm(lbs.rodrigues(fitted.rotation[c]) @ lbs.rodrigues(truth.rotation[c]).T
                               - np.eye(3))
        assert angle < np.radians(1.5)
        assert np.linalg.norm(fitted.translation_m[c] - truth.translation_m[c]) < 0.01
    assert identity_error_mm(open_head, result.params.identity, shot.truth.identity) < 1.5


def test_frames_without_landmarks_are_flagged_and_interpolated(open_head):
    landmarks = synthetic.area_sampled_points(open_head, 200, seed=8)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=12, seed=9, yaw_deg=20, outlier_fraction=0.0)
    mu = shot.observations.mu_px.copy()
    mu[5:7] = np.nan  # no face found in frames 5 and 6
    result = sequence.fit_sequence(open_head, landmarks, Observations(mu, shot.observations.sigma_px), shot.cameras)
    assert result.flags[5] == result.flags[6] == [sequence.NO_LANDMARKS, sequence.INTERPOLATED]
    assert np.isnan(result.frame_rms[5])
    assert result.report["frames_without_landmarks"] == 2
    # The temporal term carries the head through the gap: it projects where the truth does.
    def pixels(params):
        posed = lbs.posed_vertices(open_head, params.identity, params.expression, params.rotations,
                                   params.translation_m)
        points = lbs.surface_points(posed, open_head.triangles, landmarks)
        return project(points, shot.truth.cameras, 0, derivatives=False).pixels

    gap_error_px = np.linalg.norm(pixels(result.params)[5:7] - pixels(shot.truth)[5:7], axis=-1)
    assert np.median(gap_error_px) < 6.0


def test_the_heads_depth_is_held_steady_and_its_image_is_not_moved(open_head):
    """E_temporal in pixels barely sees the head's distance; its own temporal rows take out the
    depth's frame-to-frame shake (1.2 -> 0.3 mm/frame^2 here) without moving the fit off the
    landmarks or off the true depth."""
    landmarks = synthetic.area_sampled_points(open_head, 200, seed=4)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=30, seed=5, yaw_deg=10, noise_px=3.0)
    figures = {}
    for weight in (0.0, FitSettings().depth_temporal_weight):
        result = sequence.fit_sequence(open_head, landmarks, shot.observations, shot.cameras,
                                       FitSettings(depth_temporal_weight=weight))
        depth_error_mm = 1000 * (result.params.translation_m[:, 2] - shot.truth.translation_m[:, 2])
        figures[weight] = (np.abs(np.diff(depth_error_mm, 2)).mean(), np.std(depth_error_mm),
                           np.nanmedian(result.frame_rms))
    (shake_off, error_off, rms_off), (shake_on, error_on, rms_on) = figures.values()
    assert shake_on < 0.5 * shake_off
    assert error_on < 1.05 * error_off and rms_on < 1.01 * rms_off


def test_realtime_mode_is_causal_and_accurate(open_head):
    landmarks = synthetic.area_sampled_points(open_head, 200, seed=10)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=16, seed=11, yaw_deg=20, outlier_fraction=0.0)
    full = realtime.fit_realtime(open_head, landmarks, shot.observations, shot.cameras, calibration_frames=8)
    assert np.nanmedian(full.frame_rms) < 1.5
    head = Observations(shot.observations.mu_px[:10], shot.observations.sigma_px[:10])
    prefix = realtime.fit_realtime(open_head, landmarks, head, shot.cameras, calibration_frames=8)
    # Frames before 10 do not depend on frames after them.
    assert np.allclose(prefix.params.expression, full.params.expression[:10])
    assert np.allclose(prefix.params.rotations, full.params.rotations[:10])


# -- bad input ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    model = toy_head(seed=2)
    landmarks = synthetic.area_sampled_points(model, 30, seed=2)
    shot = synthetic.make_shot(model, landmarks, num_frames=4, seed=2, yaw_deg=10)
    return model, landmarks, shot


def test_bad_sigma_is_refused_with_its_location(toy):
    model, landmarks, shot = toy
    sigma = shot.observations.sigma_px.copy()
    sigma[2, 0, 7] = 0.0
    with pytest.raises(FitError, match=r"sigma_px.*frame 2, camera 0, landmark 7"):
        sequence.fit_sequence(model, landmarks, Observations(shot.observations.mu_px, sigma), shot.cameras)
    sigma[2, 0, 7] = np.nan
    with pytest.raises(FitError, match="sigma_px"):
        sequence.fit_sequence(model, landmarks, Observations(shot.observations.mu_px, sigma), shot.cameras)


def test_a_bad_frame_rate_is_refused_before_real_time_mode_starts(toy):
    model, landmarks, shot = toy
    for rate in (0.0, -25.0, float("nan")):
        with pytest.raises(FitError, match=r"frame rate must be a positive number.*got"):
            realtime.fit_realtime(model, landmarks, shot.observations, shot.cameras, frame_rate_hz=rate)


def test_inf_in_mu_marks_the_landmark_missing(toy):
    model, landmarks, shot = toy
    mu = shot.observations.mu_px.copy()
    mu[1, 0, :] = np.inf
    result = sequence.fit_sequence(model, landmarks, Observations(mu, shot.observations.sigma_px), shot.cameras,
                                   FitSettings(stage_iterations=(2, 2, 2)))
    assert result.flags[1] == [sequence.NO_LANDMARKS, sequence.INTERPOLATED]
    assert np.all(np.isfinite(result.params.expression))


@pytest.mark.parametrize("mutate, message", [
    (lambda mu, s: (mu[:0], s[:0]), "zero frames"),
    (lambda mu, s: (mu[:, :, :5], s[:, :, :5]), "landmark set embedded"),
    (lambda mu, s: (mu[..., 0], s), "mu_px must have shape"),
    (lambda mu, s: (mu, s[:, :, :3]), "sigma_px must have shape"),
    (lambda mu, s: (np.full_like(mu, np.nan), s), "no landmarks were observed"),
])
def test_malformed_observations_are_refused(toy, mutate, message):
    model, landmarks, shot = toy
    mu, sigma = mutate(shot.observations.mu_px, shot.observations.sigma_px)
    with pytest.raises(FitError, match=message):
        sequence.fit_sequence(model, landmarks, Observations(mu, sigma), shot.cameras)


def test_landmark_set_of_another_head_is_refused(toy):
    model, landmarks, shot = toy
    foreign = dataclasses.replace(landmarks, triangle=landmarks.triangle + len(model.triangles))
    with pytest.raises(FitError, match="does not match head model"):
        sequence.fit_sequence(model, foreign, shot.observations, shot.cameras)


def test_camera_without_any_landmarks_needs_calibration(toy):
    model, landmarks, _ = toy
    shot = synthetic.make_shot(model, landmarks, num_frames=3, num_cameras=2, seed=1, extrinsics_known=False)
    mu = shot.observations.mu_px.copy()
    mu[:, 1] = np.nan
    with pytest.raises(FitError, match="camera 1 .* has no landmarks"):
        sequence.fit_sequence(model, landmarks, Observations(mu, shot.observations.sigma_px), shot.cameras)


def test_camera_missing_in_some_frames_is_tolerated(open_head):
    landmarks = synthetic.area_sampled_points(open_head, 150, seed=12)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=6, num_cameras=2, seed=13, yaw_deg=15,
                               outlier_fraction=0.0, focal_known=True)
    mu = shot.observations.mu_px.copy()
    mu[2:4, 1] = np.nan  # the second camera dropped two frames
    result = sequence.fit_sequence(open_head, landmarks, Observations(mu, shot.observations.sigma_px), shot.cameras)
    assert all(flags == [] for flags in result.flags)
    assert np.nanmax(result.frame_rms) < 2.0


def test_one_frame_fits(toy):
    model, landmarks, shot = toy
    one = Observations(shot.observations.mu_px[:1], shot.observations.sigma_px[:1])
    result = sequence.fit_sequence(model, landmarks, one, Cameras.monocular(512, 512, focal_px=700.0))
    assert result.params.num_frames == 1 and np.isfinite(result.report["energy_final"])


def test_the_solve_evaluates_derivatives_only_for_steps_it_takes(toy, monkeypatch):
    """One evaluation with derivatives at the start and one after each accepted step but the
    last: the last one's normal equations would never be solved."""
    model, landmarks, shot = toy
    derivative_calls = []
    evaluate = ShotEnergy.evaluate

    def counting(self, params, layout, derivatives, *args, **kwargs):
        derivative_calls.append(derivatives)
        return evaluate(self, params, layout, derivatives, *args, **kwargs)

    monkeypatch.setattr(ShotEnergy, "evaluate", counting)
    energy = ShotEnergy(model, landmarks, shot.observations, FitSettings())
    layout = Layout.for_problem(model, shot.cameras)
    start = shot.truth.copy()
    start.expression += 0.2
    active = sequence.stage_actives(layout, shot.cameras)[1][1]
    for iterations in (1, 3):
        derivative_calls.clear()
        log = solver.SolveLog()
        fitted = solver.levenberg_marquardt(energy, start, layout, active, iterations, 0.0, log)
        assert log.accepted == iterations and sum(derivative_calls) == iterations   # the start's, then k - 1
        assert log.energies[-1] == evaluate(energy, fitted, layout, False).energy < log.energies[0]


def test_a_stage_ends_after_two_small_decreases_in_a_row_even_when_damped(toy, monkeypatch):
    """A small decrease right after rejected steps (a heavily damped, short step) does not end a
    stage, but a second one in a row does: waiting for the damping to fall back to a near
    Gauss-Newton step crawled on at 1e-6 to 1e-8 a step (wojtek's identity keyframes)."""
    model, landmarks, shot = toy
    evaluate = ShotEnergy.evaluate
    # Relative decreases 0.1; two rejections; 1e-5 (damped); 1.1e-6; then steps it must not take.
    trials = iter([90.0, 91.0, 91.0, 89.9991, 89.999, 89.9989, 89.9988])
    accepted = {"energy": 100.0}

    def scripted(self, params, layout, derivatives, *args, **kwargs):
        out = evaluate(self, params, layout, derivatives, *args, **kwargs)
        if not derivatives:  # a trial; derivatives are evaluated only where a trial was accepted
            accepted["energy"] = next(trials)
        return dataclasses.replace(out, energy=accepted["energy"])

    monkeypatch.setattr(ShotEnergy, "evaluate", scripted)
    energy = ShotEnergy(model, landmarks, shot.observations, FitSettings())
    layout = Layout.for_problem(model, shot.cameras)
    active = sequence.stage_actives(layout, shot.cameras)[1][1]
    log = solver.SolveLog()
    solver.levenberg_marquardt(energy, shot.truth.copy(), layout, active, 20, 1e-4, log)
    assert (log.accepted, log.rejected) == (3, 2)
    assert log.energies == [100.0, 90.0, 89.9991, 89.999]


def test_per_frame_copies_of_an_energy_share_the_identitys_scaled_rig(open_head):
    """Real time restricts the energy to each frame in turn: the rig with the blink units scaled
    to the identity is built once for all of them, not once a frame."""
    landmarks = synthetic.area_sampled_points(open_head, 50, seed=1)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=3, seed=1)
    energy = ShotEnergy(open_head, landmarks, shot.observations, FitSettings())
    assert len(energy.scaled_units)
    first = energy.restricted(np.array([0]))._rig_at(shot.truth.identity)
    assert first is not energy.rig
    assert energy.restricted(np.array([1]))._rig_at(shot.truth.identity) is first is energy._rig_at(shot.truth.identity)


def test_non_finite_start_is_reported_not_returned(toy):
    model, landmarks, shot = toy
    initial = shot.truth.copy()
    initial.translation_m[0, 2] = np.nan
    with pytest.raises(FitError, match="not finite"):
        sequence.fit_sequence(model, landmarks, shot.observations, shot.cameras, initial=initial)


def test_settings_are_validated():
    with pytest.raises(FitError, match="temporal_weight"):
        FitSettings(temporal_weight=-1.0)
    assert set(TERMS) == {"landmarks", "identity", "expression", "joints", "temporal", "intersect"}


def test_converges_from_the_pnp_start_at_seventy_degrees_of_yaw(open_head):
    landmarks = synthetic.area_sampled_points(open_head, 250, seed=14)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=30, seed=15, yaw_deg=70, outlier_fraction=0.05)
    extreme = np.argmax(np.abs(shot.truth.rotations[:, 0, 1]))
    assert abs(np.degrees(shot.truth.rotations[extreme, 0, 1])) > 65
    result = sequence.fit_sequence(open_head, landmarks, shot.observations, shot.cameras)
    fitted = lbs.rodrigues(result.params.rotations[:, 0])
    truth = lbs.rodrigues(shot.truth.rotations[:, 0])
    angle_deg = np.degrees(np.arccos(np.clip((np.trace(fitted @ np.swapaxes(truth, 1, 2), axis1=1, axis2=2) - 1) / 2,
                                             -1, 1)))
    assert angle_deg.max() < 5.0 and np.median(angle_deg) < 2.5  # a wrong basin is off by tens of degrees
    assert np.nanmedian(result.frame_rms) < 1.3
