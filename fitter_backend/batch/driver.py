"""The Ray driver: one task per shot, each calling the pipeline's own job function
(:func:`fitter_backend.pipeline.fit_videos`), so every result is the same atomic folder as
``fit``. A failed shot is reported and the others go on; a worker that dies is retried
(``--retries``) and then reported; Ctrl-C cancels the running tasks and leaves no partial
result. Local Ray by default (loopback only, no dashboard), or ``--ray-address``."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import fitter_backend
from fitter_backend.batch.cache_key import is_finished, read_manifest, result_digest, shot_key, write_manifest
from fitter_backend.batch.progress import BatchProgress, ShotOutcome
from fitter_backend.batch.shots import Shot
from fitter_backend.errors import FacecapError
from fitter_backend.pipeline import FitJob, fit_videos

try:
    import ray
    from ray.exceptions import RayError, TaskCancelledError
except ImportError:  # an optional extra: the command says how to install it
    ray = None

#: Object store of the local runtime: only small records travel through it.
LOCAL_OBJECT_STORE_BYTES = 96 * 2**20
PROGRESS_INTERVAL_S = 0.25
CANCEL_WAIT_S = 20.0


class BatchCancelled(FacecapError):
    """Ctrl-C: running shots were cancelled; finished ones are kept."""


def _worker_env() -> dict[str, str]:
    """What a worker needs to import and run the backend like this process does: the
    checkout on its path (nodes share it at the same place), the data folder, one BLAS thread."""
    env = {"PYTHONPATH": str(Path(fitter_backend.__file__).resolve().parents[1]),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if os.environ.get("FACECAP_DATA"):
        env["FACECAP_DATA"] = os.environ["FACECAP_DATA"]
    return env


def _run_shot(name: str, job: FitJob, board: Any) -> dict[str, Any]:
    """A Ray task: fit one shot; the outcome as a dict (application errors are returned,
    not raised, so that only a dead worker is retried)."""
    pid = os.getpid()
    board.post.remote({"type": "start", "shot": name, "worker_pid": pid, "node": socket.gethostname()})
    last_sent = [0.0, ""]

    def progress(stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        if stage == last_sent[1] and now - last_sent[0] < PROGRESS_INTERVAL_S:
            return
        last_sent[:] = [now, stage]
        board.post.remote({"type": "progress", "shot": name, "stage": stage, "fraction": round(fraction, 4),
                           "message": message, "worker_pid": pid})

    started = time.perf_counter()
    try:
        out = fit_videos(job, progress=progress)
    except FacecapError as error:
        return {"status": "failed", "error": str(error), "time_s": time.perf_counter() - started}
    except Exception as error:  # a defect: reported with its type, the other shots go on
        return {"status": "failed", "error": f"{type(error).__name__}: {error}", "time_s": time.perf_counter() - started}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"status": "ok", "frames": report["frames"], "time_s": time.perf_counter() - started,
            "median_residual": report["fit"].get("median_frame_rms"), "out": str(out),
            "result_sha256": result_digest(out)}


def _check_result_folders(shots: list[Shot], out_dir: Path) -> None:
    """Refuse, before any work, to replace a folder the project did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FacecapError(f"--out {out_dir} is a file; expected a folder for the shots' results")
    for shot in shots:
        folder = out_dir / shot.name
        if folder.exists() and not (folder.is_dir() and ((folder / "report.json").is_file()
                                                          or not any(folder.iterdir()))):
            raise FacecapError(f"{folder} exists and is not a facecap result (no report.json): "
                               f"rename shot {shot.name!r} or move that {'folder' if folder.is_dir() else 'file'}")


def _remove_partials(out_dir: Path, name: str) -> None:
    """Hidden partial folders of a shot whose worker died (``fit_videos`` removes its own
    otherwise). Only called once the shot's task has ended, so none is still being written."""
    for partial in out_dir.glob(f".{name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _start_ray(address: str | None, workers: int) -> None:
    if ray is None:
        raise FacecapError("batch needs Ray, an optional extra: pip install -r requirements/batch.txt")
    common = {"runtime_env": {"env_vars": _worker_env()}, "log_to_driver": False,
              "logging_level": logging.WARNING, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            # "local": a fresh runtime even when this machine runs a cluster (else ray.init joins it).
            ray.init(address="local", num_cpus=workers, object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False,
                     _node_ip_address="127.0.0.1", **common)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise FacecapError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {error}") from None


def run_batch(shots: list[Shot], out_dir: Path, progress: BatchProgress, address: str | None = None,
              workers: int = 2, retries: int = 1) -> list[ShotOutcome]:
    """Fit every shot into ``out_dir/<name>``; returns the outcomes in the shots' order.

    Raises BatchCancelled on Ctrl-C (after the running shots stopped and were recorded).
    """
    out_dir = Path(out_dir)
    _check_result_folders(shots, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    digests: dict[Path, str] = {}
    keys = {shot.name: shot_key(shot, digests) for shot in shots}
    outcomes: dict[str, ShotOutcome] = {}
    to_run = []
    for shot in shots:
        if is_finished(out_dir, shot.name, keys[shot.name], manifest):
            entry = manifest[shot.name]
            outcomes[shot.name] = ShotOutcome(shot.name, "skipped", entry.get("frames"), entry.get("time_s"),
                                              entry.get("median_residual"), out=str(out_dir / shot.name))
            progress.shot_done(outcomes[shot.name])
        else:
            to_run.append(shot)
    if to_run:
        _start_ray(address, workers)
        try:
            _run_on_ray(to_run, out_dir, keys, manifest, outcomes, progress, retries)
        finally:
            ray.shutdown()
    return [outcomes[shot.name] for shot in shots]


def _run_on_ray(shots: list[Shot], out_dir: Path, keys: dict[str, str], manifest: dict[str, Any],
                outcomes: dict[str, ShotOutcome], progress: BatchProgress, retries: int) -> None:
    board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
    task = ray.remote(num_cpus=1, max_retries=retries)(_run_shot)
    refs = {task.remote(shot.name, shot.job(out_dir), board): shot.name for shot in shots}
    pending = list(refs)

    def drain() -> None:
        for event in ray.get(board.take.remote()):
            progress.event(event)

    def record(name: str, result: dict[str, Any]) -> None:
        _remove_partials(out_dir, name)
        outcome = ShotOutcome(name, result["status"], result.get("frames"), result.get("time_s"),
                              result.get("median_residual"), result.get("error"), out=result.get("out"))
        outcomes[name] = outcome
        if outcome.status in ("ok", "failed"):
            manifest[name] = {"key": keys[name], **{k: v for k, v in result.items() if k != "out"}}
            write_manifest(out_dir, manifest)
        progress.shot_done(outcome)

    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=PROGRESS_INTERVAL_S)
            drain()
            for ref in done:
                try:
                    result = ray.get(ref)
                except RayError as error:  # the worker died more often than --retries allows
                    result = {"status": "failed", "error": f"worker lost ({retries} retries): "
                                                           f"{str(error).splitlines()[0]}"}
                record(refs[ref], result)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        _, still = ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
        for ref in pending:
            try:
                result = ray.get(ref, timeout=0) if ref not in still else None
            except (RayError, TaskCancelledError):
                result = None
            record(refs[ref], result or {"status": "cancelled", "error": "cancelled (Ctrl-C)"})
        raise BatchCancelled(f"cancelled: {sum(o.status == 'cancelled' for o in outcomes.values())} "
                             "shots stopped, finished results kept") from None


class _ProgressBoard:
    """A Ray actor the workers post their events to; the driver takes them in batches."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def post(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def take(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events
