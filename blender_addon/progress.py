"""Time left and a progress bar that keeps moving, from measured stage rates (numpy-free, no UI).

The backend reports a job's fraction done and a stage (``"landmarks: frame 12/40"``). Stages run
at very different speeds per unit of fraction (landmarks are quick per frame, the fit is slow),
so a rate measured in one stage says little about the next. A :class:`StageRates` learns, from
the jobs that finished, each stage's span of the fraction and its seconds per unit of fraction
per frame; the time left of a running job is then the rest of its stage at the rate measured
in this job so far (else the learned one) plus the later stages at their learned rates. Between
two reports the bar moves on at the stage's rate, never past the stage's end.
"""
import dataclasses


def stage_key(stage: str) -> str:
    """``"landmarks: frame 12/40"`` -> ``"landmarks"``."""
    return stage.split(":", 1)[0].strip()


@dataclasses.dataclass
class StageRates:
    """stage -> (first fraction, last fraction) and stage -> seconds per fraction per frame."""

    spans: dict = dataclasses.field(default_factory=dict)
    seconds_per_fraction_frame: dict = dataclasses.field(default_factory=dict)

    def learn(self, history: list, frames: int) -> None:
        """Measure a finished job's stages from its ``history`` of (time_s, fraction, stage)."""
        by_stage = {}
        for (t0, f0, stage), (t1, f1, _) in zip(history, history[1:]):
            key = stage_key(stage)
            first, last, seconds, fraction = by_stage.get(key, (f0, f1, 0.0, 0.0))
            by_stage[key] = (min(first, f0), max(last, f1), seconds + t1 - t0, fraction + f1 - f0)
        for key, (first, last, seconds, fraction) in by_stage.items():
            self.spans[key] = (first, last)
            if fraction > 1e-6 and frames > 0:
                self.seconds_per_fraction_frame[key] = seconds / fraction / frames

    def stage_rate(self, key: str, frames: int) -> float | None:
        """Learned seconds per unit of fraction of a stage for a job of ``frames`` frames."""
        rate = self.seconds_per_fraction_frame.get(key)
        return None if rate is None else rate * max(frames, 1)

    def estimate(self, history: list, frames: int, now_s: float) -> tuple[float, float | None]:
        """(fraction to show, seconds left or None) of a running job."""
        if not history:
            return 0.0, None
        t_last, fraction, stage = history[-1]
        key = stage_key(stage)
        in_stage = [(t, f) for t, f, s in history if stage_key(s) == key]
        measured = None
        if len(in_stage) > 1 and in_stage[-1][1] - in_stage[0][1] > 1e-6:
            measured = (in_stage[-1][0] - in_stage[0][0]) / (in_stage[-1][1] - in_stage[0][1])
        rate = measured or self.stage_rate(key, frames)
        stage_end = self.spans.get(key, (fraction, fraction))[1]
        shown = fraction
        if rate and stage_end > fraction:  # move on between reports, never past the stage's end
            shown = min(stage_end, fraction + (now_s - t_last) / rate)
        if rate is None or key not in self.spans:
            return shown, None
        left = (stage_end - shown) * rate
        for other, (first, last) in self.spans.items():
            if first >= stage_end and other != key:
                other_rate = self.stage_rate(other, frames)
                if other_rate is None:
                    return shown, None
                left += (last - first) * other_rate
        return shown, max(0.0, left)
