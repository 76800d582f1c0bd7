"""The backend process: requests on stdin, events on stdout, one job at a time.

The main thread reads and validates requests; a fit runs in a worker thread whose progress
callback checks the job's cancel flag (so a cancel takes effect at the next progress report
of the fitter). Every event is validated before it is written; nothing else may reach
stdout (``main`` points file descriptor 1 at stderr for stray prints and logging).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import traceback
from typing import BinaryIO, Callable, Iterator

from fitter_backend import __version__
from fitter_backend.errors import FacecapError
from fitter_backend.interrupts import interrupt_on_signals
from fitter_backend.server import protocol
from fitter_backend.server.runner import HeadModelCache, JobCancelled, run_fit_job



def available_providers() -> list[str]:
    """onnxruntime's execution providers (what "device": "gpu" can use), [] without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


@dataclasses.dataclass
class RunningJob:
    job: str
    cancel: threading.Event
    thread: threading.Thread
    started: float


class Server:
    """Dispatches requests; ``emit`` writes one validated event line."""

    def __init__(self, write: Callable[[str], None], run_job=run_fit_job) -> None:
        self._write = write
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._run_job = run_job
        self._models = HeadModelCache()
        self.running: RunningJob | None = None

    def emit(self, kind: str, **fields) -> None:
        line = protocol.encode(protocol.event(kind, **fields))
        with self._write_lock:
            self._write(line)

    def handle_line(self, line: str | bytes) -> bool:
        """Handle one request line; False once the server should stop. No line stops it
        otherwise: whatever it holds is answered with an ``error`` event."""
        if not line.strip():
            return True
        message = None
        try:
            message = protocol.decode_line(line)
            request = protocol.parse_request(message)
        except Exception as exc:  # ProtocolError, or a validation bug: the line is refused either way
            job = message.get("job") if isinstance(message, dict) else None
            fields = {"job": job} if protocol.is_job_id(job) and not self._is_running(job) else {}
            text = str(exc) if isinstance(exc, protocol.ProtocolError) else f"{type(exc).__name__}: {exc}"
            self.emit("error", message=f"bad request: {text}"[:2000], **fields)
            return True
        kind = request["type"]
        if kind == "hello":
            self.emit("hello", backend_version=__version__, providers=available_providers())
        elif kind == "fit":
            self._start(request)
        elif kind == "cancel":
            self._cancel(request["job"])
        elif kind == "shutdown":
            self.stop()
            return False
        return True

    def _is_running(self, job: str) -> bool:
        with self._state_lock:
            return self.running is not None and self.running.job == job

    def _start(self, request: dict) -> None:
        with self._state_lock:
            if self.running is not None:
                # Not tagged with the id when it is the running job's: that job has not ended.
                same = self.running.job == request["job"]
                self.emit("error", **({} if same else {"job": request["job"]}), message=(
                    f"job {self.running.job!r} is still running; cancel it or wait for it to finish"))
                return
            cancel = threading.Event()
            thread = threading.Thread(target=self._work, args=(request, cancel), daemon=True,
                                      name=f"job-{request['job']}")
            self.running = RunningJob(request["job"], cancel, thread, time.monotonic())
        thread.start()

    def _cancel(self, job: str) -> None:
        with self._state_lock:
            running = self.running
        if running is None or running.job != job:
            self.emit("error", job=job, message=f"no running job {job!r} to cancel")
            return
        running.cancel.set()

    def _work(self, request: dict, cancel: threading.Event) -> None:
        job = request["job"]
        started = time.monotonic()

        def report(stage: str, fraction: float) -> None:
            if cancel.is_set():
                raise JobCancelled(job)
            elapsed = time.monotonic() - started
            eta = elapsed * (1 - fraction) / fraction if fraction >= 0.05 else None
            self.emit("progress", job=job, stage=stage, fraction=round(fraction, 4),
                      eta_s=None if eta is None else round(eta, 1))

        try:
            result_dir = self._run_job(request, report, self._models, cancel.is_set)
        except JobCancelled:
            kind, fields = "cancelled", {}
        except FacecapError as exc:
            kind, fields = "error", {"message": str(exc) or type(exc).__name__}
        except Exception as exc:  # a bug: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            kind, fields = "error", {"message": f"internal error in the backend: {type(exc).__name__}: {exc}"}
        else:
            kind, fields = "done", {"result_dir": str(result_dir)}
        # Free the slot before announcing, so a client may start the next job at once.
        with self._state_lock:
            self.running = None
        self.emit(kind, job=job, **fields)

    def stop(self, wait_s: float | None = None) -> None:
        """Cancel a running job and wait for its worker to unwind (by default for as long as it
        takes: the job checks its flag at every progress report, then removes its partial folder
        and sends its terminal event; a process that exited first would leave both undone)."""
        with self._state_lock:
            running = self.running
        if running is not None:
            running.cancel.set()
            running.thread.join(wait_s)


def read_lines(stdin: BinaryIO) -> Iterator[bytes]:
    """Request lines as bytes, never buffering more than MAX_LINE_BYTES + 1 of one: the rest of
    an overlong line is read and dropped in pieces, and the line yields as just too long."""
    while True:
        line = stdin.readline(protocol.MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > protocol.MAX_LINE_BYTES and not line.endswith(b"\n"):
            while True:
                rest = stdin.readline(1 << 16)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


def serve(stdin: BinaryIO, write: Callable[[str], None]) -> int:
    """Serve until ``shutdown``, the end of stdin (the add-on is gone) or SIGINT/SIGTERM (as
    KeyboardInterrupt, see :func:`main`); a running job is cancelled and waited for in each case."""
    server = Server(write)
    try:
        for line in read_lines(stdin):
            if not server.handle_line(line):
                return 0
    except KeyboardInterrupt:
        server.stop()
        return 130
    server.stop()
    return 0


def main() -> int:
    # Protocol lines go to the original stdout; anything else printed (by us, numpy, native
    # libraries) lands on stderr instead of corrupting the stream.
    protocol_out = os.fdopen(os.dup(1), "w", encoding="ascii", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def write(line: str) -> None:
        protocol_out.write(line)
        protocol_out.flush()

    # SIGINT and SIGTERM: the main thread stops reading and the running job is cancelled.
    interrupt_on_signals()
    return serve(sys.stdin.buffer, write)
