"""GUI smoke test in Debian's Blender 3.4 under Xvfb: the legacy zip is installed, the
Facecap panel draws in the Sequencer's sidebar, a real mouse click on Fit runs a video job
(a movie strip of a rendered actor) through the backend to completion, the rig is keyed,
and a screenshot is kept (preview with the landmark overlay, the take list, and the head over the
footage through the fitted camera, as the panel's "View over Footage" shows it).

The set-up installs ``blender xvfb xdotool imagemagick`` with apt when they are missing and
apt is usable (root); otherwise the test is skipped with the reason.
"""
import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

import facecap_helpers as h

TOOLS = {"blender": "blender", "Xvfb": "xvfb", "xdotool": "xdotool", "import": "imagemagick"}
SCREEN = (1280, 800)
ARTIFACTS = Path(os.environ.get("FACECAP_ARTIFACTS", h.ROOT / "out" / "test_artifacts"))


def ensure_tools() -> None:
    missing = sorted({package for exe, package in TOOLS.items() if shutil.which(exe) is None})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing, "python3-numpy"]
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"the GUI test needs {', '.join(missing)}; install them with: {' '.join(command)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    installed = subprocess.run(command, env=env, capture_output=True, text=True)
    if installed.returncode != 0:  # stale package lists: update once and retry
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        installed = subprocess.run(command, env=env, capture_output=True, text=True)
    if installed.returncode != 0:
        pytest.skip(f"could not install {', '.join(missing)} with apt-get: {installed.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def display():
    ensure_tools()
    for number in range(91, 99):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            break
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten",
                               "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        assert server.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.1)
    yield f":{number}"
    server.terminate()
    server.wait(10)


def xdotool(display, *args):
    subprocess.run(["xdotool", *args], env=dict(os.environ, DISPLAY=display), check=True, capture_output=True)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_for(path: Path, predicate, timeout_s: float, blender) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = read_status(path)
        if status.get("error"):
            pytest.fail(f"the GUI driver failed: {status['error']}")
        if predicate(status):
            return status
        if blender.poll() is not None:
            pytest.fail(f"Blender exited with status {blender.returncode}; last status {status}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; last status {status}")
        time.sleep(0.2)


def test_click_fit_in_blender_34_gui(display, backend_python, sample_clip, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_addon", h.ROOT / "build_addon.py")
    build_addon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_addon)
    legacy_zip = build_addon.build(tmp_path / "dist")[1]
    scripts = tmp_path / "scripts"
    zipfile.ZipFile(legacy_zip).extractall(scripts / "addons")
    status, quit_flag = tmp_path / "status.json", tmp_path / "quit"
    env = dict(os.environ, DISPLAY=display, BLENDER_USER_SCRIPTS=str(scripts),
               BLENDER_USER_CONFIG=str(tmp_path / "config"), FACECAP_GUI_STATUS=str(status),
               FACECAP_GUI_QUIT=str(quit_flag), FACECAP_GUI_BACKEND=str(backend_python),
               FACECAP_GUI_JOBS=str(tmp_path / "jobs"), FACECAP_GUI_CLIP=str(sample_clip))
    log = open(tmp_path / "blender.log", "w")
    blender = subprocess.Popen(["blender", "--factory-startup", "--window-geometry", "0", "0",
                                str(SCREEN[0]), str(SCREEN[1]), "--python", str(h.ROOT / "tests/blender/gui_driver.py")],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = wait_for(status, lambda s: s.get("sidebar"), 90, blender)
        assert ready["blender"].startswith("3.4"), ready["blender"]
        x, y, width, height = ready["sidebar"]
        window_height = ready["window"][3]
        scale = ready["ui_scale"]
        top = window_height - (y + height)  # X screen rows count from the top, Blender's from the bottom
        # Another tab of the sidebar may be in front: Ctrl+Wheel over it steps through the tabs.
        def showing():
            time.sleep(0.8)  # events are handled, then the sidebar is redrawn
            return read_status(status).get("since_panel_drawn_s", 1e9) < 0.6

        xdotool(display, "mousemove", str(x + width // 2), str(top + height // 2))
        for _ in range(16):  # the tabs wrap around
            if showing() and showing():
                break
            xdotool(display, "keydown", "ctrl", "click", "5", "keyup", "ctrl")
        assert showing(), "the Facecap panel never showed"
        # The Fit button is the first row of the first panel of the sidebar: click its middle.
        started = {}
        for offset in (48, 48, 40, 56):
            xdotool(display, "mousemove", str(x + width // 2), str(int(top + offset * scale)))
            xdotool(display, "click", "1")
            try:
                started = wait_for(status, lambda s: s.get("job") is not None, 4, blender)
                break
            except pytest.fail.Exception:
                continue
        if not started.get("job"):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            subprocess.run(["import", "-window", "root", str(ARTIFACTS / "blender34_gui_failed.png")], env=env)
            pytest.fail(f"clicking where Fit should be did not start a job; see {ARTIFACTS}/blender34_gui_failed.png")
        done = wait_for(status, lambda s: s["job"]["status"] not in ("starting", "running", "cancelling")
                        and (s["viewing"] or s["job"]["status"] != "done"), 240, blender)
        assert done["job"]["status"] == "done", done
        assert done["job"]["imported"], done
        time.sleep(1.5)  # let the panel and the 3D View redraw with the result
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "blender34_gui.png"
        subprocess.run(["import", "-window", "root", str(screenshot)], env=env, check=True, capture_output=True)
        print(f"screenshot: {screenshot}; keyed: {done['keyed']}; {done['elapsed_s']:.0f} s in Blender")
        assert done["keyed"] == {"bone_curves": 6 * 4 + 3, "shape_curves": 52, "keys_per_curve": 8,
                                 "action": "gui_take shapes"}
        assert screenshot.stat().st_size > 10_000
        ready = done["ready"]  # the take is ready to judge without any manual set-up
        assert ready["camera"] == "gui_take Camera" and ready["shows_backgrounds"]
        assert ready["backgrounds"] == [str(sample_clip)]
        assert ready["frames"] == [1, 8] and ready["takes"] == ["gui_take"]
        # A second actor's take next to the first: the take list holds both.
        (tmp_path / "quit.second").touch()
        both = wait_for(status, lambda s: len(s.get("ready", {}).get("takes", [])) == 2, 120, blender)
        assert both["ready"]["takes"] == ["gui_take", "second_actor"], both
        time.sleep(1.5)
        subprocess.run(["import", "-window", "root", str(ARTIFACTS / "blender34_gui_two_takes.png")], env=env,
                       check=True, capture_output=True)
    finally:
        quit_flag.touch()
        try:
            blender.wait(20)
        except subprocess.TimeoutExpired:
            blender.kill()
        log.close()
