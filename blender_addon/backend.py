"""The backend child process: start it, send requests, collect its events.

The backend runs the add-on's own copy of ``fitter_backend`` (shipped in the add-on, or the
checkout the add-on lives in) with a Python from a separate environment (numpy 2, OpenCV,
onnxruntime). Requests go to its stdin, events come from its stdout as JSON lines; a
reader thread pushes raw lines into a queue and :func:`poll_events` (a plain function that
the timer, a modal operator or a test calls) validates them. Both sides validate with the
same ``protocol.py``, loaded from those backend sources.

Besides protocol events, :func:`poll_events` returns two local ones:
``{"type": "garbage", "message"}`` for a line that is not valid protocol and
``{"type": "exited", "message", "returncode"}`` once the process is gone.
"""
import importlib.util
import os
import queue
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent
BUNDLED_SOURCES = ADDON_DIR / "backend"   # where build_addon.py puts fitter_backend/ and requirements/
PYTHON_ENV_VAR = "FACECAP_BACKEND_PYTHON"
STDERR_LINES = 60


class BackendError(Exception):
    """The backend cannot be found, started or talked to; the message says what to do."""


def backend_sources() -> Path:
    """The folder holding ``fitter_backend/``: bundled in the add-on, else the checkout around it."""
    for folder in (BUNDLED_SOURCES, ADDON_DIR.parent):
        if (folder / "fitter_backend" / "server" / "protocol.py").is_file():
            return folder
    raise BackendError(f"the backend sources are missing from the add-on ({BUNDLED_SOURCES}); reinstall it")


_protocol_module = None


def protocol():
    """The shared protocol module (standard library only), loaded from the backend sources."""
    global _protocol_module
    if _protocol_module is None:
        path = backend_sources() / "fitter_backend" / "server" / "protocol.py"
        spec = importlib.util.spec_from_file_location("facecap_backend_protocol", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _protocol_module = module
    return _protocol_module


# -- finding a backend environment ---------------------------------------------------------
def data_dir() -> Path:
    """The backend's user data folder (same rule as ``fitter_backend.paths.data_dir``)."""
    explicit = os.environ.get("FACECAP_DATA")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "facecap"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "facecap"


def default_venv() -> Path:
    """Where "Set up backend" creates the environment."""
    return data_dir() / "backend-venv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def candidate_pythons(configured: str = "") -> list:
    """Where to look for the backend's Python, in order: the preference, $FACECAP_BACKEND_PYTHON,
    the checkout's .venvs/backend (development), the environment "Set up backend" makes."""
    candidates = []
    for value in (configured, os.environ.get(PYTHON_ENV_VAR, "")):
        if value:
            path = Path(value).expanduser()
            candidates.append(venv_python(path) if path.is_dir() else path)
    try:
        candidates.append(venv_python(backend_sources() / ".venvs" / "backend"))
    except BackendError:
        pass
    candidates.append(venv_python(default_venv()))
    return candidates


def find_backend_python(configured: str = "") -> Path:
    """The backend's Python; BackendError says what is missing and what to do."""
    if configured:
        path = candidate_pythons(configured)[0]
        if not path.is_file():
            raise BackendError(f"the backend Python set in the preferences does not exist: {path} "
                               "(clear the field to auto-detect, or press 'Set up backend')")
        return path
    for path in candidate_pythons():
        if path.is_file():
            return path
    raise BackendError("no backend environment found: press 'Set up backend' in the add-on preferences "
                       "(or set the backend Python there)")


# -- the process ---------------------------------------------------------------------------
class BackendProcess:
    """One backend child process and the threads reading its output."""

    def __init__(self, python: Path, sources: Path | None = None, env: dict | None = None) -> None:
        self.python = Path(python)
        self.sources = Path(sources) if sources else backend_sources()
        self.extra_env = dict(env or {})
        self.lines: queue.Queue = queue.Queue()
        self.stderr_tail: deque = deque(maxlen=STDERR_LINES)
        self.process: subprocess.Popen | None = None
        self.exit_reported = False
        self._stderr_thread: threading.Thread | None = None

    def start(self) -> None:
        env = dict(os.environ, **self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join([str(self.sources)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into the venv
        try:
            self.process = subprocess.Popen(
                [str(self.python), "-m", "fitter_backend.server"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(self.sources),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except OSError as exc:
            raise BackendError(f"cannot start the backend with {self.python}: {exc}") from None
        threading.Thread(target=self._read_stdout, daemon=True, name="facecap-stdout").start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True, name="facecap-stderr")
        self._stderr_thread.start()

    def _read_stdout(self) -> None:
        with self.process.stdout:  # closed by the reader once the backend has said all
            for raw in self.process.stdout:
                self.lines.put(("line", raw))
        returncode = self.process.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(2.0)  # the last words usually explain the exit
        self.lines.put(("exit", returncode))

    def _read_stderr(self) -> None:
        with self.process.stderr:
            for raw in self.process.stderr:
                self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, message: dict) -> None:
        """Validate a request and write it; BackendError when the process is gone."""
        line = protocol().encode(protocol().parse_request(message))
        if not self.alive():
            raise BackendError("the backend is not running")
        try:
            self.process.stdin.write(line.encode("ascii"))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise BackendError(f"cannot write to the backend (it stopped?): {exc}") from None

    def request(self, kind: str, **fields) -> None:
        self.send({"protocol": protocol().PROTOCOL_VERSION, "type": kind, **fields})

    def last_error_lines(self, count: int = 2) -> str:
        """The backend's last stderr lines that are not traceback frames (e.g. the exception)."""
        lines = [line for line in self.stderr_tail
                 if line.strip() and not line[0].isspace() and not line.startswith("Traceback")]
        return " | ".join(lines[-count:])

    def stop(self, wait_s: float = 5.0) -> None:
        """Ask for a shutdown, then kill if it does not exit in time."""
        if self.alive():
            try:
                self.request("shutdown")
            except BackendError:
                pass
            try:
                self.process.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_stdin()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.process is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:  # the pipe broke with the process
                pass


def poll_events(backend: BackendProcess) -> list:
    """Every event that arrived since the last call, validated, without blocking."""
    events = []
    proto = protocol()
    while True:
        try:
            kind, payload = backend.lines.get_nowait()
        except queue.Empty:
            return events
        if kind == "exit":
            backend.exit_reported = True
            detail = backend.last_error_lines()
            events.append({"type": "exited", "returncode": payload,
                           "message": f"the backend stopped (exit status {payload})"
                                      + (f": {detail}" if detail else "")})
            continue
        try:
            events.append(proto.parse_event(proto.decode_line(payload)))
        except proto.ProtocolError as exc:
            events.append({"type": "garbage", "message": f"the backend sent an invalid message: {exc}"})
