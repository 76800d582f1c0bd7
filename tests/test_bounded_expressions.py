"""ARKit weights stay in [0, 1] inside the solver (a projected LM step with an active set),
opposing units are kept from cancelling, and the jaw bone of a head with ARKit jaw units is
held so jawOpen alone opens the mouth; FLAME-style PCA channels stay unbounded."""
import dataclasses

import numpy as np
import pytest

from fitter_backend.fitting import sequence, synthetic
from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.normal_equations import NormalEquations, solve
from fitter_backend.fitting.problem import FitSettings, Layout
from tests.test_fitting import ALL_OFF, dense_system, numeric_gradient, toy_problem

ARKIT_TOY_NAMES = ("eyeBlinkLeft", "eyeWideLeft", "jawOpen", "mouthClose", "expr4")
# Both eyes' look down, and the left eye's look in with the right eye's look out: two conjugate pairs.
LOOK_TOY_NAMES = ("eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookOutRight", "eyeBlinkLeft")


def test_only_arkit_channels_are_bounded(open_head):
    assert open_head.expression_bounded.all()
    pairs = {tuple(open_head.expression_names[i] for i in pair) for pair in open_head.opposing_expressions}
    # gaze is unseen under a closed lid: a blink is not shared with the eyeLook units
    assert {("eyeBlinkLeft", "eyeLookDownLeft"), ("eyeBlinkRight", "eyeLookOutRight"),
            ("eyeBlinkLeft", "eyeWideLeft"), ("jawOpen", "mouthClose")} <= pairs
    conjugate = {tuple(open_head.expression_names[i] for i in pair) for pair in open_head.conjugate_expressions}
    # one gaze: the left eye looks in as the right one looks out
    assert ("eyeLookInLeft", "eyeLookOutRight") in conjugate and len(conjugate) == 4
    model, *_ = toy_problem()
    assert not model.expression_bounded.any()  # PCA-style channels are unbounded
    assert len(model.opposing_expressions) == 0
    named = dataclasses.replace(model, expression_names=ARKIT_TOY_NAMES)
    assert named.expression_bounded.tolist() == [True, True, True, True, False]
    assert sorted(map(tuple, named.opposing_expressions.tolist())) == [(0, 1), (2, 3)]


def test_opposing_units_gradient_matches_finite_differences():
    model, landmarks, shot, params = toy_problem()
    model = dataclasses.replace(model, expression_names=ARKIT_TOY_NAMES)
    params.expression = np.random.default_rng(1).uniform(0.2, 0.8, params.expression.shape)  # off the bounds
    layout = Layout.for_problem(model, params.cameras)
    base = ShotEnergy(model, landmarks, shot.observations, FitSettings(**ALL_OFF))
    with_term = ShotEnergy(model, landmarks, shot.observations, FitSettings(**dict(ALL_OFF, opposing_weight=4.0)))
    evaluation = with_term.evaluate(params, layout, True)
    assert evaluation.terms["expression"] > 1e-3
    analytic = evaluation.equations.frame_gradient - base.evaluate(params, layout, True).equations.frame_gradient
    numeric, _ = numeric_gradient(with_term, params, layout, "expression")
    assert np.abs(analytic - numeric).max() / np.abs(numeric).max() < 1e-4


def test_both_eyes_eyelook_units_are_kept_alike_with_an_exact_gradient():
    """The eyeLook units one gaze moves together (both eyes down; the left eye in with the
    right one out) pay for their difference, on their own columns only."""
    model, landmarks, shot, params = toy_problem()
    model = dataclasses.replace(model, expression_names=LOOK_TOY_NAMES)
    assert sorted(map(tuple, model.conjugate_expressions.tolist())) == [(0, 1), (2, 3)]
    params.expression = np.random.default_rng(1).uniform(0.2, 0.8, params.expression.shape)
    layout = Layout.for_problem(model, params.cameras)
    base = ShotEnergy(model, landmarks, shot.observations, FitSettings(**ALL_OFF))
    with_term = ShotEnergy(model, landmarks, shot.observations, FitSettings(**dict(ALL_OFF, look_coupling_weight=9.0)))
    evaluation = with_term.evaluate(params, layout, True)
    expected = 0.5 * 9.0 * np.sum((params.expression[:, [0, 2]] - params.expression[:, [1, 3]]) ** 2)
    assert np.isclose(evaluation.terms["expression"], expected)
    analytic = evaluation.equations.frame_gradient - base.evaluate(params, layout, True).equations.frame_gradient
    numeric, _ = numeric_gradient(with_term, params, layout, "expression")
    assert np.abs(analytic - numeric).max() / np.abs(numeric).max() < 1e-4
    assert np.all(analytic[:, 4:] == 0.0)  # the fifth unit (a blink) is not coupled


def test_per_unit_expression_priors_scale_their_rows_and_keep_the_gradient_exact():
    from fitter_backend.fitting.energy import expression_unit_scales

    weights = (("eyeBlink", 0.25), ("jawOpen", 4.0))
    assert expression_unit_scales(ARKIT_TOY_NAMES, weights).tolist() == [0.25, 1.0, 4.0, 1.0, 1.0]
    model, landmarks, shot, params = toy_problem()
    model = dataclasses.replace(model, expression_names=ARKIT_TOY_NAMES)
    params.expression = np.random.default_rng(2).uniform(0.2, 0.8, params.expression.shape)
    layout = Layout.for_problem(model, params.cameras)
    base = ShotEnergy(model, landmarks, shot.observations, FitSettings(**ALL_OFF))
    uniform = ShotEnergy(model, landmarks, shot.observations,
                         FitSettings(**dict(ALL_OFF, expression_weight=2.0, expression_unit_weights=())))
    scaled = ShotEnergy(model, landmarks, shot.observations,
                        FitSettings(**dict(ALL_OFF, expression_weight=2.0, expression_unit_weights=weights)))
    # E_expression = 0.5 sum w_e psi_e^2: each unit's share is its multiplier times the uniform one
    shares = 0.5 * 2.0 * params.expression ** 2
    assert scaled.evaluate(params, layout, False).terms["expression"] == pytest.approx(
        np.sum(shares * expression_unit_scales(ARKIT_TOY_NAMES, weights)))
    assert uniform.evaluate(params, layout, False).terms["expression"] == pytest.approx(np.sum(shares))
    analytic = scaled.evaluate(params, layout, True).equations.frame_gradient - \
        base.evaluate(params, layout, True).equations.frame_gradient
    numeric, _ = numeric_gradient(scaled, params, layout, "expression")
    assert np.abs(analytic - numeric).max() / np.abs(numeric).max() < 1e-4
    with pytest.raises(Exception, match="expression_unit_weights"):
        FitSettings(expression_unit_weights=(("eyeBlink", -1.0),))


def test_rows_on_two_columns_accumulate_as_their_dense_jacobian_would():
    rng = np.random.default_rng(7)
    n, p, q = 3, 6, 2
    columns_a, columns_b = np.array([0, 0, 2, 4]), np.array([1, 3, 3, 5])  # column 0 and 3 in two rows
    residual, d_a, d_b = rng.normal(size=(3, n, 4))
    sparse, dense = NormalEquations(n, p, q), NormalEquations(n, p, q)
    sparse.add_frame_column_pairs(columns_a, columns_b, residual, d_a, d_b)
    jacobian = np.zeros((n, 4, p))
    jacobian[:, np.arange(4), columns_a] = d_a
    jacobian[:, np.arange(4), columns_b] += d_b
    dense.add_frame_rows(np.arange(n), residual, jacobian, None)
    np.testing.assert_allclose(sparse.frame_frame, dense.frame_frame, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sparse.frame_gradient, dense.frame_gradient, rtol=1e-12)


def test_fixed_columns_take_their_prescribed_step_and_the_rest_solves_given_it():
    rng = np.random.default_rng(4)
    n, p, q = 5, 4, 2
    equations = NormalEquations(n, p, q)
    equations.add_frame_rows(np.arange(n), rng.normal(size=(n, 9)), rng.normal(size=(n, 9, p)),
                             rng.normal(size=(n, 9, q)))
    equations.add_pair_rows(np.arange(1, n), rng.normal(size=(n - 1, 5)), rng.normal(size=(n - 1, 5, p)),
                            rng.normal(size=(n - 1, 5, p)), rng.normal(size=(n - 1, 5, q)))
    equations.add_shared_rows(rng.normal(size=q), np.eye(q))
    fixed = rng.random((n, p)) < 0.3
    prescribed = np.where(fixed, rng.normal(size=(n, p)), 0.0)  # e.g. the steps that reach a bound
    delta_frames, delta_shared = solve(equations, np.arange(p), np.arange(q), 0.0, fixed, prescribed)
    assert np.all(delta_frames[fixed] == prescribed[fixed])
    # Dense reference over the free unknowns only.
    dense, gradient = dense_system(equations, n, p, q)
    free = np.concatenate([~fixed.ravel(), np.ones(q, bool)])
    step_fixed = np.concatenate([prescribed.ravel(), np.zeros(q)])[~free]
    expected = -np.linalg.solve(dense[np.ix_(free, free)], gradient[free] + dense[np.ix_(free, ~free)] @ step_fixed)
    got = np.concatenate([delta_frames.ravel(), delta_shared])[free]
    assert np.allclose(got, expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def blinking_fit(open_head):
    """A monocular synthetic shot whose eyes close fully (eyeBlink = 1, the upper bound) and
    whose other units rest at 0 (the lower bound) most of the time."""
    landmarks = synthetic.area_sampled_points(open_head, 300, seed=4)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=24, seed=5, yaw_deg=20, noise_px=0.5,
                               outlier_fraction=0.0)
    return shot, sequence.fit_sequence(open_head, landmarks, shot.observations, shot.cameras)


def test_fitted_arkit_weights_stay_in_0_1(blinking_fit):
    _, result = blinking_fit
    assert result.params.expression.min() >= 0.0 and result.params.expression.max() <= 1.0


def test_an_expression_at_its_bound_is_recovered(blinking_fit, open_head):
    shot, result = blinking_fit
    names = open_head.expression_names
    blink = names.index("eyeBlinkLeft"), names.index("eyeBlinkRight")
    truth, fitted = shot.truth.expression[:, blink], result.params.expression[:, blink]
    closed = truth == 1.0
    assert closed.any() and (truth == 0.0).any()
    assert fitted[closed].min() > 0.85                       # full blinks reach the upper bound
    assert np.median(fitted[truth == 0.0]) < 0.1             # open eyes stay near the lower bound
    at_rest = shot.truth.expression == 0.0  # the lower bound (an unbounded fit: 13 % within 0.02, signed)
    assert np.mean(np.abs(result.params.expression[at_rest]) < 0.02) > 0.4


def test_the_jaw_bone_is_held_when_jawopen_opens_the_mouth(blinking_fit, open_head):
    _, result = blinking_fit
    assert np.all(result.params.rotations[:, open_head.joint_index("jaw")] == 0.0)


@pytest.fixture(scope="module")
def open_head():
    from fitter_backend.head_models.open_head import load_open_head
    return load_open_head()



def test_realtime_starts_each_frames_eyelook_units_at_zero(open_head, monkeypatch):
    """Every frame after the first is warm-started from the frame before, except the eyeLook
    units, which start at 0: carried over, a lid the gaze lowered stays theirs through a blink
    (their product with eyeBlink is penalised). On wojtek's whole clip that missed the blink at
    229-233 (test_capture: test_realtime_keys_a_blink_after_a_lowered_gaze)."""
    from fitter_backend.fitting import realtime

    landmarks = synthetic.area_sampled_points(open_head, 200, seed=4)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=12, seed=5, yaw_deg=10, outlier_fraction=0.0)
    starts, ends = [], []
    solve = realtime.levenberg_marquardt

    def recording(energy, single, *args):
        starts.append(single.expression[0].copy())
        fitted = solve(energy, single, *args)
        ends.append(fitted.expression[0].copy())
        return fitted

    monkeypatch.setattr(realtime, "levenberg_marquardt", recording)
    realtime.fit_realtime(open_head, landmarks, shot.observations, shot.cameras, calibration_frames=6)
    gaze = np.unique(open_head.conjugate_expressions)
    others = np.setdiff1d(np.arange(open_head.num_expression), gaze)
    assert len(gaze) == 8 and len(starts) == 12
    ends_with_gaze = np.array(ends)[:-1][:, gaze]
    assert np.abs(ends_with_gaze).max() > 1e-3                      # the fit does use them ...
    for start, previous_end in zip(starts[1:], ends[:-1]):
        assert np.all(start[gaze] == 0.0)                           # ... yet each frame starts them at 0
        np.testing.assert_array_equal(start[others], previous_end[others])
