"""The throwaway environment that converts TFLite models to ONNX at set-up time.

TensorFlow is needed only to convert, never at run time, and its ~1.6 GB would clash with
the backend's pins, so it lives in its own venv under ``<data_dir>/convert-venv``. It is
created only when a conversion is needed and deleted after a successful one (fresh set-up
costs ~45 s to build it; keeping it would cost 1.6 GB of disk for a step that runs once).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fitter_backend import paths
from fitter_backend.model_setup.errors import ModelSetupError

#: Verified together on Python 3.11 (tf2onnx 1.17 handles TF 2.21's TFLite flatbuffers).
CONVERTER_REQUIREMENTS = (
    "tensorflow-cpu==2.21.0",
    "tf2onnx==1.17.0",
    "onnx==1.23.2",
    "numpy==2.4.6",
    "protobuf==7.36.2",
)
TOOL = Path(__file__).with_name("tflite_convert_tool.py")


def convert_venv_dir() -> Path:
    return paths.data_dir() / "convert-venv"


def converter_id() -> str:
    """A short name for the converter pins, recorded in each converted model's stamp."""
    return " ".join(CONVERTER_REQUIREMENTS)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        raise ModelSetupError(f"{what} failed (exit {result.returncode}): " + " | ".join(lines[-4:]))


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_convert_venv(progress=print) -> Path:
    """Create (or reuse a complete) conversion venv; returns its Python."""
    venv = convert_venv_dir()
    stamp = venv / ".requirements.sha256"
    wanted = hashlib.sha256("\n".join(CONVERTER_REQUIREMENTS).encode()).hexdigest()
    python = _venv_python(venv)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    progress(f"creating the throwaway conversion environment {venv} ({', '.join(CONVERTER_REQUIREMENTS[:2])}; about a minute)")
    _run([sys.executable, "-m", "venv", str(venv)], f"creating the virtual environment {venv}")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          *CONVERTER_REQUIREMENTS],
         f"installing {' '.join(CONVERTER_REQUIREMENTS)} from the package registry into {venv}")
    stamp.write_text(wanted)
    return python


def convert_tflite_models(jobs: list[dict[str, str]], progress=print) -> None:
    """Run :mod:`tflite_convert_tool` on ``jobs`` (tflite, onnx, reference paths) in the venv."""
    python = ensure_convert_venv(progress)
    progress(f"converting {len(jobs)} TFLite model(s) to ONNX with tf2onnx")
    with tempfile.TemporaryDirectory() as scratch:
        jobs_file = Path(scratch) / "jobs.json"
        jobs_file.write_text(json.dumps(jobs))
        _run([str(python), str(TOOL), str(jobs_file)], "converting TFLite to ONNX")


def remove_convert_venv() -> None:
    shutil.rmtree(convert_venv_dir(), ignore_errors=True)
