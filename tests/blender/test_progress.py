"""Time left from measured stage rates, and a bar that keeps moving between reports (issue 16)."""
from facecap import progress

# A job of 40 frames: landmarks are quick per unit of fraction, the fit is slow.
FINISHED = [(0.0, 0.0, "landmarks: frame 0/40"), (2.0, 0.1, "landmarks: frame 33/40"),
            (2.4, 0.12, "fit: rigid"), (10.0, 0.5, "fit: identity"), (16.0, 0.77, "fit: frames"),
            (17.0, 0.79, "previews"), (20.0, 1.0, "previews"), (20.0, 1.0, "done")]


def test_time_left_adds_the_later_stages_at_their_measured_rates():
    rates = progress.StageRates()
    rates.learn(FINISHED, frames=40)
    # The same kind of job, twice as long, at the end of its landmarks (36% would be 8 s with one rate).
    running = [(0.0, 0.0, "landmarks: frame 0/80"), (4.8, 0.12, "landmarks: frame 80/80")]
    shown, left = rates.estimate(running, frames=80, now_s=4.8)
    fit_s, previews_s = 2 * (16.0 - 2.4), 2 * (20.0 - 16.0)
    assert abs(left - (fit_s + previews_s)) < 1.0, left
    assert shown == 0.12


def test_the_bar_moves_between_reports_but_not_past_the_stage():
    rates = progress.StageRates()
    rates.learn(FINISHED, frames=40)
    running = [(0.0, 0.12, "fit: rigid"), (3.0, 0.2, "fit: rigid")]
    later, _ = rates.estimate(running, frames=40, now_s=6.0)
    much_later, _ = rates.estimate(running, frames=40, now_s=600.0)
    assert 0.2 < later < 0.79
    assert much_later == rates.spans["fit"][1]  # held at the stage's end until the backend moves on


def test_without_a_finished_job_the_backends_estimate_stands():
    rates = progress.StageRates()
    shown, left = rates.estimate([(0.0, 0.3, "fit: rigid")], frames=10, now_s=5.0)
    assert (shown, left) == (0.3, None)
