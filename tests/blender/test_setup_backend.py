""""Set up backend" runs without blocking, shows its steps and fails readably."""
import time

import bpy

import facecap_helpers as h


def test_a_failing_install_is_reported_readably(addon, tmp_path):
    from facecap import backend_setup, operators
    sources = tmp_path / "sources"
    (sources / "requirements").mkdir(parents=True)
    (sources / "requirements" / "backend.txt").write_text("facecap-no-such-package==0.0.0\n")
    wheels = tmp_path / "wheels"  # offline install from an empty wheel folder: no network needed
    wheels.mkdir()
    operators.SETUP.task = task = backend_setup.start(venv=tmp_path / "venv", sources=sources, wheels=wheels)
    stages = set()
    deadline = time.monotonic() + 180
    while task.status == "running":
        assert time.monotonic() < deadline, f"the set-up is still at {task.stage}"
        operators.tick(bpy.context)  # what the add-on's timer does
        stages.add(task.stage)
        time.sleep(0.1)
    print(task.message)
    assert task.status == "failed"
    assert task.message.startswith("installing packages failed (exit status 1)")
    assert "facecap-no-such-package" in task.message
    assert {"Step 1 of 4: creating the environment", "Step 2 of 4: installing packages"} <= stages
    assert task.python.is_file()  # the environment itself was made
    assert ("ERROR", task.message) in operators.SESSION.log
    operators.SETUP.task = None


def test_the_venv_python_is_auto_detected(addon, tmp_path, monkeypatch):
    from facecap import backend
    monkeypatch.setenv("FACECAP_DATA", str(tmp_path))
    monkeypatch.setattr(backend, "BUNDLED_SOURCES", tmp_path / "no-bundle")
    # The checkout's own environment comes before the one "Set up backend" makes.
    assert backend.find_backend_python("") == h.ROOT / ".venvs" / "backend" / "bin" / "python"
    assert backend.candidate_pythons("")[-1] == tmp_path / "backend-venv" / "bin" / "python"
    assert backend.find_backend_python(str(h.ROOT / ".venvs" / "backend")) == h.BACKEND_PYTHON
