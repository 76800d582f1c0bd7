"""Real-time mode's causal smoother (fitter_backend.fitting.causal_filter) and its place in
fit_realtime: what each frame is keyed with, and what the next frame starts from."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fitter_backend.fitting import realtime, synthetic
from fitter_backend.fitting.causal_filter import (FrameSmoother, OneEuroFilter, OneEuroGains, head_joints,
                                                  smoothing_factor)
from fitter_backend.fitting.problem import FitSettings, Observations

RATE_HZ = 25.0


@pytest.fixture(scope="module")
def open_head():
    from fitter_backend.head_models.open_head import load_open_head
    return load_open_head()


def run(gains: OneEuroGains, values, rotations: bool = False) -> np.ndarray:
    smooth = OneEuroFilter(gains, RATE_HZ, rotations=rotations)
    return np.array([smooth(np.atleast_2d(v)) for v in values])


def test_at_rest_a_channel_is_an_exponential_low_pass_and_speed_opens_it():
    weight = smoothing_factor(2.0, RATE_HZ)
    assert weight == pytest.approx(1 / (1 + RATE_HZ / (2 * np.pi * 2.0)))
    step = np.r_[0.0, np.ones(10)]
    plain = run(OneEuroGains(2.0, 0.0), step)[:, 0, 0]
    assert np.allclose(plain[1:], 1 - (1 - weight) ** np.arange(1, 11))     # the textbook response
    quick = run(OneEuroGains(2.0, 10.0, speed_cutoff_hz=5.0), step)[:, 0, 0]
    assert quick[2] > 0.75 > plain[2]                                       # a blink gets through ...
    rng = np.random.default_rng(0)
    noise = 0.5 + 0.01 * rng.standard_normal(200)
    still = run(OneEuroGains(1.0, 10.0, speed_cutoff_hz=5.0), noise)[:, 0, 0]
    assert np.std(np.diff(still[50:])) < 0.5 * np.std(np.diff(noise[50:]))  # ... noise at rest does not


def test_weights_stay_inside_the_range_they_were_given():
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.0, 1.0, size=(300, 52))
    smoothed = run(OneEuroGains(1.0, 10.0, 5.0), weights[:, :, None])
    assert smoothed.min() >= 0.0 and smoothed.max() <= 1.0
    assert np.ptp(smoothed[100:], axis=0).mean() < np.ptp(weights[100:], axis=0).mean()


def test_lead_makes_up_the_delay_on_a_steady_motion():
    ramp = 0.02 * np.arange(100)
    behind = {lead: ramp[-1] - run(OneEuroGains(2.0, 0.0, lead=lead), ramp)[-1, 0, 0] for lead in (0.0, 0.5, 1.0)}
    weight = smoothing_factor(2.0, RATE_HZ)
    assert behind[0.0] == pytest.approx(0.02 * (1 - weight) / weight, rel=1e-3)
    assert behind[0.5] == pytest.approx(behind[0.0] / 2, rel=1e-2) and abs(behind[1.0]) < 1e-3 * behind[0.0]


def test_rotations_step_the_short_way_along_their_relative_rotation():
    gains = OneEuroGains(2.0, 0.0)
    weight = smoothing_factor(2.0, RATE_HZ)
    start, goal = np.radians([[0.0, 0.0, 170.0]]), np.radians([[0.0, 0.0, -170.0]])
    first, second = run(gains, [start, goal], rotations=True)
    expected = Rotation.from_rotvec(start[0]) * Rotation.from_rotvec(np.radians([0, 0, 20.0 * weight]))
    assert np.allclose(Rotation.from_rotvec(second[0]).as_quat(), expected.as_quat()) or np.allclose(
        Rotation.from_rotvec(second[0]).as_quat(), -expected.as_quat())
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    settled = run(gains, [a] + [b] * 80, rotations=True)[-1]
    assert np.allclose(Rotation.from_rotvec(settled).as_matrix(), Rotation.from_rotvec(b).as_matrix(), atol=1e-6)


def test_the_head_the_face_joints_and_depth_are_filtered_apart(open_head):
    head = head_joints(open_head.joint_parents, open_head.eyeball_joints)
    assert [open_head.joint_names[j] for j in head] == ["root", "neck", "head"]
    smoother = FrameSmoother(FitSettings().realtime_smoothing, RATE_HZ, open_head.joint_parents,
                             open_head.eyeball_joints)
    assert sorted(open_head.joint_names[j] for j in smoother.face) == ["eye_L", "eye_R", "jaw"]
    expression, rotations = np.zeros(open_head.num_expression), np.zeros((open_head.num_joints, 3))
    smoother(expression, rotations, np.array([0.0, 0.0, -0.6]))
    moved = smoother(expression, rotations, np.array([0.01, 0.0, -0.55]))[2]
    # Depth (along camera 0's view) is held longest; the head's direction from the camera follows.
    assert abs(moved[2] + 0.6) < 0.2 * 0.05 and moved[0] / moved[2] == pytest.approx(0.01 / -0.55, rel=0.5)


def test_realtime_keys_the_smoothed_solutions_and_starts_each_frame_from_the_last_solution(open_head, monkeypatch):
    landmarks = synthetic.area_sampled_points(open_head, 200, seed=4)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=12, seed=5, yaw_deg=10, noise_px=3.0)
    starts, solved = [], []
    solve = realtime.levenberg_marquardt

    def recording(energy, single, *args):
        starts.append((single.expression[0].copy(), single.rotations[0].copy(), single.translation_m[0].copy()))
        fitted = solve(energy, single, *args)
        solved.append((fitted.expression[0].copy(), fitted.rotations[0].copy(), fitted.translation_m[0].copy()))
        return fitted

    monkeypatch.setattr(realtime, "levenberg_marquardt", recording)
    settings = FitSettings()
    result = realtime.fit_realtime(open_head, landmarks, shot.observations, shot.cameras, settings,
                                   calibration_frames=6, frame_rate_hz=RATE_HZ)
    smoother = FrameSmoother(settings.realtime_smoothing, RATE_HZ, open_head.joint_parents, open_head.eyeball_joints)
    gaze = np.unique(open_head.conjugate_expressions)
    for i, frame in enumerate(solved):
        expression, rotations, translation_m = smoother(*frame)
        assert np.allclose(result.params.expression[i], expression)
        assert np.allclose(result.params.rotations[i], rotations)
        assert np.allclose(result.params.translation_m[i], translation_m)
        if i:   # the solve goes on from the last solution, not from what was keyed
            assert np.allclose(np.delete(starts[i][0], gaze), np.delete(solved[i - 1][0], gaze))
            assert np.array_equal(starts[i][1], solved[i - 1][1])
    assert not np.allclose(result.params.rotations, np.array([f[1] for f in solved]))
    unsmoothed = realtime.fit_realtime(open_head, landmarks, shot.observations, shot.cameras,
                                       dataclasses.replace(settings, realtime_smoothing=None), calibration_frames=6)
    assert np.allclose(unsmoothed.params.rotations, np.array([f[1] for f in solved[:12]]))


def test_several_cameras_are_not_smoothed(open_head):
    """With several cameras each frame's solve already sees depth and pose; the smoother would
    only lag, so real-time mode keys their solutions as they are."""
    landmarks = synthetic.area_sampled_points(open_head, 120, seed=6)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=8, num_cameras=2, seed=7, yaw_deg=10)
    settings = FitSettings()
    keyed = realtime.fit_realtime(open_head, landmarks, shot.observations, shot.cameras, settings, calibration_frames=4)
    plain = realtime.fit_realtime(open_head, landmarks, shot.observations, shot.cameras,
                                  dataclasses.replace(settings, realtime_smoothing=None), calibration_frames=4)
    assert np.array_equal(keyed.params.rotations, plain.params.rotations)
    assert np.array_equal(keyed.params.translation_m, plain.params.translation_m)


def test_nothing_is_smoothed_across_frames_without_a_face(open_head, monkeypatch):
    """After frames with no landmarks (flagged) the first frame with a face is keyed as solved,
    not pulled toward where the head was before the gap."""
    landmarks = synthetic.area_sampled_points(open_head, 150, seed=8)
    shot = synthetic.make_shot(open_head, landmarks, num_frames=14, seed=9, yaw_deg=20, noise_px=2.0)
    mu = shot.observations.mu_px.copy()
    mu[7:9] = np.nan                                             # the face is lost for two frames
    observations = Observations(mu, shot.observations.sigma_px)
    solved = []
    solve = realtime.levenberg_marquardt

    def recording(energy, single, *args):
        fitted = solve(energy, single, *args)
        solved.append(fitted.rotations[0].copy())
        return fitted

    monkeypatch.setattr(realtime, "levenberg_marquardt", recording)
    result = realtime.fit_realtime(open_head, landmarks, observations, shot.cameras, calibration_frames=5)
    assert result.flags[7] and result.flags[8] and not result.flags[9]
    assert np.array_equal(result.params.rotations[9], solved[9])          # back: keyed as solved
    assert not np.allclose(result.params.rotations[10], solved[10])       # and smoothed from there on
