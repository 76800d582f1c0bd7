"""Blender-side test set-up: the add-on enabled from this checkout in a throw-away user folder.

Blender reads BLENDER_USER_SCRIPTS when bpy is first imported, so it is set here, before
any test module imports bpy. The add-on folder is linked as ``addons/facecap``, the name it
has when installed from the legacy zip.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_SCRIPTS = Path(tempfile.mkdtemp(prefix="facecap-blender-user-"))
(USER_SCRIPTS / "addons").mkdir()
(USER_SCRIPTS / "addons" / "facecap").symlink_to(ROOT / "blender_addon", target_is_directory=True)
os.environ["BLENDER_USER_SCRIPTS"] = str(USER_SCRIPTS)

import bpy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import facecap_helpers  # noqa: E402


@pytest.fixture(scope="session")
def backend_python():
    if not facecap_helpers.BACKEND_PYTHON.is_file():
        pytest.skip("the backend environment is not set up (run ./run.sh test)")
    return facecap_helpers.BACKEND_PYTHON


@pytest.fixture(scope="session")
def jobs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture
def addon(backend_python, jobs_root):
    """A fresh empty scene with the add-on enabled and pointed at the backend and jobs folder."""
    return facecap_helpers.fresh_addon(backend_python, jobs_root)


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory, backend_python):
    """A 24-frame clip of the open head talking and turning (rendered by the backend)."""
    path = tmp_path_factory.mktemp("clip") / "actor.mp4"
    script = ("import sys\n"
              "from fitter_backend.head_models.open_head import load_open_head\n"
              "from fitter_backend.sample_clip import render_sample_clip\n"
              "render_sample_clip(load_open_head(), sys.argv[1], num_frames=24, size_px=320)\n")
    subprocess.run([str(backend_python), "-c", script, str(path)], check=True, capture_output=True, cwd=ROOT)
    return path


def pytest_sessionfinish(session, exitstatus):
    operators = sys.modules.get("facecap.operators")
    if operators is not None:
        operators.shutdown()  # no backend process outlives the tests
    EXIT_STATUS[0] = int(exitstatus)


EXIT_STATUS = [0]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The bpy 4.2 module crashes at interpreter exit once Python classes were registered
    (bpy 4.5 and later do not): end with pytest's status before its exit handlers run."""
    if bpy.app.version < (4, 3):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STATUS[0])


@pytest.fixture(scope="session")
def fitted_job(backend_python, jobs_root, tmp_path_factory):
    """A finished synthetic fit (10 frames, open head) run through the add-on, not imported."""
    facecap_helpers.fresh_addon(backend_python, jobs_root)
    from facecap import operators
    settings = facecap_helpers.synthetic_settings(frames=10, seed=3, take="talk")
    settings.auto_import = False
    bpy.context.scene.frame_start = 101
    job = facecap_helpers.run_until_ended(operators.start_fit(bpy.context))
    assert job.status == "done", job.message
    return job.folder


@pytest.fixture(scope="session")
def expected_posed(fitted_job, tmp_path_factory):
    """(N, V, 3) the backend's posed vertices of ``fitted_job``, Blender frame."""
    return facecap_helpers.expected_vertices(fitted_job / "result", tmp_path_factory.mktemp("expected") / "v.npy")
