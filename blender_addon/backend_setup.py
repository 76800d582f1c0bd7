""""Set up backend": run ``setup_env.py`` as a child process and follow its progress.

Like the backend, the set-up runs without blocking Blender: a reader thread queues its JSON
lines and :func:`poll` (a plain function) applies them to a :class:`SetupTask`.
"""
import dataclasses
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from . import backend

SCRIPT = Path(__file__).resolve().parent / "setup_env.py"


@dataclasses.dataclass
class SetupTask:
    venv: Path
    process: subprocess.Popen
    lines: queue.Queue
    stage: str = "starting"
    fraction: float = 0.0
    last_line: str = ""
    status: str = "running"     # running done failed
    message: str = ""

    @property
    def python(self) -> Path:
        return backend.venv_python(self.venv)


def base_python_candidates() -> list:
    """Pythons that can create the environment: $FACECAP_PYTHON, python3.11, python3, Blender's own."""
    names = [os.environ.get("FACECAP_PYTHON", ""), "python3.11", "python3", "python"]
    found = [shutil.which(n) for n in names if n]
    return [Path(p) for p in found if p] + [Path(sys.executable)]


def find_base_python() -> Path:
    for candidate in base_python_candidates():
        try:
            out = subprocess.run([str(candidate), "-c", "import sys, venv; print(sys.version_info >= (3, 10))"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return candidate
    raise backend.BackendError("no Python 3.10+ with the venv module was found to create the backend "
                               "environment; install Python 3.11 or set $FACECAP_PYTHON")


def start(venv: Path | None = None, base_python: Path | None = None, sources: Path | None = None,
          wheels: Path | None = None) -> SetupTask:
    venv = Path(venv) if venv else backend.default_venv()
    sources = Path(sources) if sources else backend.backend_sources()
    command = [str(base_python or find_base_python()), str(SCRIPT), "--venv", str(venv), "--sources", str(sources)]
    bundled_wheels = sources / "wheels"
    if wheels or bundled_wheels.is_dir():
        command += ["--wheels", str(wheels or bundled_wheels)]
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                   creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except OSError as exc:
        raise backend.BackendError(f"cannot run the set-up with {command[0]}: {exc}") from None
    lines = queue.Queue()

    def read() -> None:
        for raw in process.stdout:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="facecap-setup").start()
    return SetupTask(venv, process, lines)


def poll(task: SetupTask) -> bool:
    """Apply the set-up's output; True once it has ended (see ``task.status``/``message``)."""
    while task.status == "running":
        try:
            raw = task.lines.get_nowait()
        except queue.Empty:
            return False
        if raw is None:
            code = task.process.wait()
            if task.status == "running":
                task.status = "failed"
                task.message = task.message or f"the set-up stopped (exit status {code}): {task.last_line}"
            break
        try:
            message = json.loads(raw)
        except ValueError:
            task.last_line = raw.decode("utf-8", "replace").strip()[-300:]
            continue
        if not isinstance(message, dict):
            continue
        if "error" in message:
            task.status, task.message = "failed", str(message["error"])
        elif message.get("done"):
            task.status, task.fraction, task.stage = "done", 1.0, "done"
            task.message = f"backend environment built ({task.python}); checking that it answers"
        else:
            step, steps = int(message.get("step", 1)), int(message.get("steps", 1))
            task.stage = f"Step {step} of {steps}: {message.get('stage', '')}"
            task.fraction = (step - 1) / steps
            task.last_line = str(message.get("line", ""))
    return task.status != "running"


def cancel(task: SetupTask) -> None:
    if task.process.poll() is None:
        task.process.kill()
    task.status, task.message = "failed", "the set-up was cancelled"
