"""Fit jobs as the add-on sees them: start, follow, cancel, recover.

A job lives in its own folder: ``job.json`` (the request plus what the import needs from
Blender: take name, timeline offset, views) written by the add-on before the job starts, and
``result/`` written by the backend, complete once ``result/result.json`` exists. A crashed
Blender (or backend) therefore leaves everything needed to re-import a finished job.

:func:`poll` is a plain function: the UI's timer calls it, and so do tests (timers do not run
in bpy module mode). It never blocks.
"""
import dataclasses
import json
import re
import time
from pathlib import Path

from . import backend as backend_module
from . import progress, results

JOB_FILE = "job.json"
RESULT_FOLDER = "result"
HELLO_TIMEOUT_S = 120.0   # a backend that has not said hello by then is broken
CANCEL_GRACE_S = 5.0      # a cancel the backend has not confirmed by then kills it

ACTIVE = ("starting", "running", "cancelling")


class JobError(Exception):
    """A job cannot be started or found; the message is for the artist."""


@dataclasses.dataclass
class Job:
    id: str
    folder: Path
    request: dict
    blender: dict                 # take, frame_offset, scene, views ...
    status: str = "starting"      # starting running cancelling done failed cancelled
    stage: str = "starting the backend"
    fraction: float = 0.0
    eta_s: float | None = None
    message: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)
    cancel_requested: float | None = None
    imported: bool = False
    history: list = dataclasses.field(default_factory=list)   # (monotonic s, fraction, stage) reports

    @property
    def frames(self) -> int:
        """Frames the job fits (0 when the request does not say)."""
        source = self.request.get("source") or {}
        if source.get("kind") == "synthetic":
            return int(source.get("frames") or 0)
        start, end = source.get("frame_start"), source.get("frame_end")
        return end - start + 1 if isinstance(start, int) and isinstance(end, int) else 0

    def estimate(self, rates: progress.StageRates, now: float | None = None) -> tuple[float, float | None]:
        """(fraction to show, seconds left or None): measured stage rates, else the backend's ETA."""
        if not self.active:
            return self.fraction, None
        shown, left = rates.estimate(self.history, self.frames, time.monotonic() if now is None else now)
        return max(shown, self.fraction), left if left is not None else self.eta_s

    @property
    def result_dir(self) -> Path:
        return self.folder / RESULT_FOLDER

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def take(self) -> str:
        return self.blender.get("take", self.id)


@dataclasses.dataclass
class Session:
    """The add-on's running state (one per Blender session; not saved in the .blend)."""

    backend: backend_module.BackendProcess | None = None
    backend_python: Path | None = None
    hello: dict | None = None
    backend_started: float = 0.0
    jobs: list = dataclasses.field(default_factory=list)
    rates: progress.StageRates = dataclasses.field(default_factory=progress.StageRates)
    log: list = dataclasses.field(default_factory=list)   # (level, message) for the info log

    def active_job(self) -> Job | None:
        return next((job for job in self.jobs if job.active), None)

    def latest_job(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None

    def report(self, level: str, message: str) -> None:
        self.log.append((level, message))

    def drain_log(self) -> list:
        log, self.log = self.log, []
        return log


def safe_name(text: str, fallback: str = "take") -> str:
    """A take or job name usable as a folder name and a job id."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")[:40]
    return name or fallback


def new_job_folder(jobs_root: Path, take: str) -> Path:
    """A new, unique folder ``<jobs_root>/<take>-<time>[-n]``."""
    jobs_root.mkdir(parents=True, exist_ok=True)
    stem = f"{safe_name(take)}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        folder = jobs_root / (stem if n == 0 else f"{stem}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise JobError(f"cannot make a job folder in {jobs_root}")


def write_job_file(folder: Path, request: dict, blender: dict) -> None:
    partial = folder / (JOB_FILE + ".partial")
    partial.write_text(json.dumps({"request": request, "blender": blender}, indent=1), encoding="utf-8")
    partial.replace(folder / JOB_FILE)


def read_job_file(folder) -> dict:
    """``{"request": ..., "blender": ...}`` of a job folder; JobError when it is not one or when
    a field the import uses has the wrong type."""
    path = Path(folder) / JOB_FILE
    if not path.is_file():
        raise JobError(f"{folder} is not a facecap job folder (no {JOB_FILE})")
    data = results.read_json(path, JobError)
    if not isinstance(data, dict) or not isinstance(data.get("blender"), dict):
        raise JobError(f"{path} is not a facecap job file")
    _check_blender_info(path, data["blender"])
    return data


def _check_blender_info(path: Path, info: dict) -> None:
    """The fields :func:`operators.import_job` reads: take, scene (str), frame_offset (int),
    views (list of {strip, camera: str or None})."""
    for key in ("take", "scene", "reuse_rig"):
        if not isinstance(info.get(key) or "", str):
            raise JobError(f"{path}: {key!r} must be a string, not {type(info[key]).__name__}")
    offset = info.get("frame_offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > results.MAX_FRAME_INDEX:
        raise JobError(f"{path}: 'frame_offset' must be a frame number, not {offset!r:.40}")
    views = info.get("views", [])
    if not isinstance(views, list) or not all(
            isinstance(v, dict) and all(isinstance(v.get(k), (str, type(None))) for k in ("strip", "camera"))
            for v in views):
        raise JobError(f"{path}: 'views' must be a list of {{\"strip\": name, \"camera\": name or null}}")


def clip_path(job_file: dict) -> Path | None:
    """The footage of a single-view video job (shown behind its camera), None otherwise."""
    request = job_file.get("request")
    source = request.get("source") if isinstance(request, dict) else None
    paths = source.get("paths") if isinstance(source, dict) and source.get("kind") == "video" else None
    if isinstance(paths, list) and len(paths) == 1 and isinstance(paths[0], str) and Path(paths[0]).is_file():
        return Path(paths[0])
    return None


def finished_job_folders(jobs_root: Path) -> list:
    """Job folders under ``jobs_root`` with a complete result, newest first."""
    if not jobs_root.is_dir():
        return []
    folders = [f for f in jobs_root.iterdir() if (f / JOB_FILE).is_file() and results.is_complete(f / RESULT_FOLDER)]
    return sorted(folders, key=lambda f: (f / RESULT_FOLDER / results.MANIFEST).stat().st_mtime, reverse=True)


# -- the backend ---------------------------------------------------------------------------
def ensure_backend(session: Session, python: Path) -> backend_module.BackendProcess:
    """The running backend for ``python``, started (and greeted) when needed."""
    if session.backend is not None and session.backend.alive() and session.backend_python == Path(python):
        return session.backend
    stop_backend(session)
    process = backend_module.BackendProcess(python)
    process.start()
    session.backend, session.backend_python, session.hello = process, Path(python), None
    session.backend_started = time.monotonic()
    process.request("hello")
    return process


def stop_backend(session: Session) -> None:
    if session.backend is not None:
        session.backend.stop()
    session.backend, session.hello = None, None


def start_fit(session: Session, python: Path, jobs_root: Path, request_fields: dict, blender: dict) -> Job:
    """Write the job folder, start the backend if needed and send the fit request.

    ``request_fields``: the fit request without job and out (source, head, mode, ...).
    ``blender``: what the import needs later (take, frame_offset, scene, views).
    """
    running = session.active_job()
    if running is not None:
        raise JobError(f"a fit is already running ({running.take}); cancel it or wait for it to finish")
    proto = backend_module.protocol()
    folder = new_job_folder(jobs_root, blender.get("take", "take"))
    job_id = safe_name(folder.name, "job")
    message = {"protocol": proto.PROTOCOL_VERSION, "type": "fit", "job": job_id,
               "out": str(folder / RESULT_FOLDER), **request_fields}
    try:
        request = proto.parse_request(message)
    except proto.ProtocolError as exc:
        folder.rmdir()
        raise JobError(f"invalid fit request: {exc}") from None
    write_job_file(folder, request, blender)
    job = Job(job_id, folder, request, blender)
    try:
        ensure_backend(session, python).send(request)
    except backend_module.BackendError as exc:
        job.status, job.message = "failed", str(exc)
        session.jobs.append(job)
        raise JobError(str(exc)) from None
    job.status = "running"
    session.jobs.append(job)
    return job


def cancel(session: Session, job: Job | None = None) -> Job | None:
    """Ask the backend to stop the running job; :func:`poll` kills it if it does not."""
    job = job or session.active_job()
    if job is None or not job.active:
        return None
    job.status, job.stage, job.cancel_requested = "cancelling", "cancelling", time.monotonic()
    try:
        session.backend.request("cancel", job=job.id)
    except (backend_module.BackendError, AttributeError):
        _end(job, "cancelled", "cancelled")
    return job


def _end(job: Job, status: str, message: str) -> None:
    job.status, job.message, job.eta_s = status, message, None
    if status == "done":
        job.fraction = 1.0
    elif status == "cancelled":
        discard_unfinished(job.folder)


def discard_unfinished(folder: Path) -> bool:
    """Remove a job folder that holds nothing but what the add-on wrote (``job.json``): a
    cancelled job leaves no trace. Anything else in it (a result, the artist's files) keeps it."""
    try:
        if {p.name for p in folder.iterdir()} - {JOB_FILE, JOB_FILE + ".partial"}:
            return False
        for name in (JOB_FILE, JOB_FILE + ".partial"):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()
    except OSError:  # already gone, or not ours to remove
        return False
    return True


def _job(session: Session, job_id) -> Job | None:
    return next((job for job in session.jobs if job.id == job_id), None)


def poll(session: Session, now: float | None = None) -> list:
    """Apply the backend's events; returns the jobs that ended (done, failed, cancelled) now."""
    now = time.monotonic() if now is None else now
    ended = []
    process = session.backend
    events = backend_module.poll_events(process) if process is not None else []
    for event in events:
        kind = event["type"]
        job = _job(session, event.get("job"))
        if kind == "hello":
            session.hello = event
        elif kind == "progress" and job is not None and job.status == "running":
            job.stage, job.fraction, job.eta_s = event["stage"], event["fraction"], event["eta_s"]
            job.history.append((now, job.fraction, job.stage))
        elif kind == "done" and job is not None and job.active:
            if results.is_complete(job.result_dir):
                session.rates.learn(job.history + [(now, 1.0, "done")], job.frames)
                _end(job, "done", f"finished in {now - job.started:.0f} s")
            else:
                _end(job, "failed", f"the backend reported {job.id} done but {job.result_dir} holds no result")
            ended.append(job)
        elif kind == "cancelled" and job is not None and job.active:
            _end(job, "cancelled", "cancelled")
            ended.append(job)
        elif kind == "error" and job is not None and job.active:
            _end(job, "failed", event["message"])
            session.report("ERROR", f"{job.take}: {event['message']}")
            ended.append(job)
        elif kind == "error":
            session.report("ERROR", f"backend: {event['message']}")
        elif kind in ("garbage", "exited"):
            if kind == "exited" and session.hello is None:
                event["message"] += (" before it answered: the backend environment may be incomplete "
                                     "('Set up backend' in the add-on preferences rebuilds it)")
            if kind == "garbage":
                session.report("ERROR", event["message"] + " (the backend was stopped)")
            process.kill()  # a no-op on an exited backend but for closing its pipe
            session.backend, session.hello = None, None
            for running in [j for j in session.jobs if j.active]:
                if running.status == "cancelling":
                    _end(running, "cancelled", "cancelled")
                else:
                    _end(running, "failed", event["message"])
                    session.report("ERROR", f"{running.take}: {event['message']}")
                ended.append(running)
            if kind == "exited" and not ended:
                session.report("WARNING", event["message"])
            break  # anything after garbage or the exit is not trusted
    for job in [j for j in session.jobs if j.status == "cancelling"]:
        if now - job.cancel_requested > CANCEL_GRACE_S:
            # The fitter checks for cancellation only between its stages: stop it the hard way.
            stop = session.backend
            session.backend, session.hello = None, None
            if stop is not None:
                stop.kill()
            _end(job, "cancelled", "cancelled (the backend was stopped)")
            ended.append(job)
    backend = session.backend
    if (backend is not None and session.hello is None and session.active_job() is not None
            and now - session.backend_started > HELLO_TIMEOUT_S):
        backend.kill()
        session.backend = None
        for running in [j for j in session.jobs if j.active]:
            _end(running, "failed", f"the backend did not answer within {HELLO_TIMEOUT_S:.0f} s")
            ended.append(running)
    return ended
