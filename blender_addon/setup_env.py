"""Create the backend's Python environment: a script run by a base Python (>= 3.10).

    python setup_env.py --venv DIR --sources DIR [--wheels DIR]

1. ``python -m venv DIR`` (kept when it already has a Python),
2. ``pip install -r SOURCES/requirements/backend.txt`` (offline from ``--wheels`` when given),
3. ``python -m fitter_backend setup`` (builds the open head and the face models into the
   user data folder; downloads their sources),
4. a check that the backend's server module imports.

Progress goes to stdout as JSON lines ``{"step", "steps", "stage", "line"}``; the last line is
``{"done": true}`` or ``{"error": "..."}`` (with a non-zero exit status). Standard library only:
this runs outside Blender and before any environment exists.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

STEPS = 4


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def run(step: int, stage: str, command: list, env: dict | None = None) -> None:
    """Run one step, streaming its output as progress lines; SystemExit with the tail on failure."""
    say(step=step, steps=STEPS, stage=stage, line=" ".join(command[:6]))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, errors="replace")
    tail = []
    for line in process.stdout:
        line = line.rstrip()
        if line:
            tail = (tail + [line])[-8:]
            say(step=step, steps=STEPS, stage=stage, line=line[-300:])
    if process.wait() != 0:
        errors = [t for t in tail if "error" in t.lower()] or tail
        say(error=f"{stage} failed (exit status {process.returncode}): {' | '.join(errors[-3:])}")
        sys.exit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", required=True, type=Path)
    parser.add_argument("--sources", required=True, type=Path)
    parser.add_argument("--wheels", type=Path)
    args = parser.parse_args()
    requirements = args.sources / "requirements" / "backend.txt"
    if not requirements.is_file():
        say(error=f"the backend requirements are missing: {requirements}")
        return 1
    if sys.version_info < (3, 10):
        say(error=f"Python 3.10 or newer is needed to create the backend, this is {sys.version.split()[0]}")
        return 1
    python = venv_python(args.venv)
    if not python.is_file():
        run(1, "creating the environment", [sys.executable, "-m", "venv", str(args.venv)])
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", "-r",
           str(requirements)]
    if args.wheels:
        pip += ["--no-index", "--find-links", str(args.wheels)]
    run(2, "installing packages", pip)
    env = dict(os.environ, PYTHONPATH=str(args.sources))
    env.pop("PYTHONHOME", None)
    run(3, "building the head and face models", [str(python), "-m", "fitter_backend", "setup"], env)
    run(4, "checking the backend", [str(python), "-c", "import fitter_backend.server.server"], env)
    say(done=True, python=str(python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
