"""Progress across shots and the summary table: a status line on a terminal (one line per
event in a log file), or JSON lines on stdout (``--progress json``) for tools."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, TextIO


@dataclasses.dataclass
class ShotOutcome:
    """How a shot ended: status ok, skipped (unchanged since the last run), failed or cancelled."""

    name: str
    status: str
    frames: int | None = None
    time_s: float | None = None
    median_residual: float | None = None
    error: str | None = None
    attempts: int = 0
    out: str | None = None


class BatchProgress:
    """Receives the workers' events ({"type": "start"|"progress", "shot", ...}) and the shots'
    outcomes, and shows them. ``style``: "bar" (terminal) or "json" (JSON lines on stdout)."""

    def __init__(self, style: str, shot_names: list[str], stream: TextIO | None = None):
        self.style = style
        self.stream = stream or (sys.stdout if style == "json" else sys.stderr)
        self.total = len(shot_names)
        self.running: dict[str, tuple[str, float]] = {}  # shot -> (stage, fraction of the shot)
        self.attempts: dict[str, int] = {name: 0 for name in shot_names}
        self.finished: dict[str, ShotOutcome] = {}
        self.last_line = 0.0

    def _emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), file=self.stream, flush=True)

    def _status_line(self, force: bool = False) -> None:
        if not self.stream.isatty():
            return
        now = time.monotonic()
        if not force and now - self.last_line < 0.2:
            return
        self.last_line = now
        running = "  ".join(f"{name} {stage} {100 * fraction:3.0f}%" for name, (stage, fraction) in self.running.items())
        line = f"[{len(self.finished)}/{self.total} done] {running}"
        print(f"\r{line[:118]:<118}", end="", file=self.stream, flush=True)

    def _line(self, text: str) -> None:
        if self.stream.isatty():
            text = f"\r{text:<118}"
        print(text, file=self.stream, flush=True)

    def event(self, event: dict[str, Any]) -> None:
        """A worker's event: "start" (a shot began, or began again after a worker died) or "progress"."""
        name = event.get("shot", "")
        if name in self.finished:  # late progress of a shot already reported
            return
        if event.get("type") == "start":
            self.attempts[name] = self.attempts.get(name, 0) + 1
            self.running[name] = ("started", 0.0)
            if self.style == "json":
                self._emit({**event, "attempt": self.attempts[name]})
            else:
                again = f" (attempt {self.attempts[name]})" if self.attempts[name] > 1 else ""
                self._line(f"  started  {name} on {event.get('node', '?')} pid {event.get('worker_pid')}{again}")
            return
        self.running[name] = (event.get("stage", ""), float(event.get("fraction", 0.0)))
        if self.style == "json":
            self._emit(event)
        else:
            self._status_line()

    def shot_done(self, outcome: ShotOutcome) -> None:
        """A shot's end (or that it was skipped)."""
        outcome.attempts = self.attempts.get(outcome.name, 0)
        self.finished[outcome.name] = outcome
        self.running.pop(outcome.name, None)
        if self.style == "json":
            self._emit({"type": "shot", **dataclasses.asdict(outcome)})
            return
        detail = outcome.error or (f"{outcome.frames} frames, {outcome.time_s:.1f} s" if outcome.time_s is not None
                                   else "")
        self._line(f"  {outcome.status:<9}{outcome.name}: {detail}")
        self._status_line(force=True)

    def summary(self, outcomes: list[ShotOutcome]) -> None:
        """The table that ends a run: shot, frames, status, time, median residual."""
        counts = {status: sum(o.status == status for o in outcomes) for status in ("ok", "skipped", "failed", "cancelled")}
        if self.style == "json":
            self._emit({"type": "summary", **counts, "shots": [dataclasses.asdict(o) for o in outcomes]})
            return
        if self.stream.isatty():  # clear the status line before the table
            print(f"\r{'':<118}\r", end="", file=self.stream, flush=True)
        print(summary_table(outcomes), flush=True)
        print(", ".join(f"{n} {status}" for status, n in counts.items()), flush=True)


def summary_table(outcomes: list[ShotOutcome]) -> str:
    """Plain-text table, one row per shot; errors follow on their own lines."""
    width = max([4] + [len(o.name) for o in outcomes])
    rows = [f"{'shot':<{width}}  {'frames':>6}  {'status':<9}  {'time_s':>7}  {'median_residual':>15}"]
    for o in outcomes:
        frames = "-" if o.frames is None else str(o.frames)
        seconds = "-" if o.time_s is None else f"{o.time_s:.1f}"
        residual = "-" if o.median_residual is None else f"{o.median_residual:.3f}"
        rows.append(f"{o.name:<{width}}  {frames:>6}  {o.status:<9}  {seconds:>7}  {residual:>15}")
    rows += [f"  {o.name}: {o.error}" for o in outcomes if o.error]
    return "\n".join(rows)
