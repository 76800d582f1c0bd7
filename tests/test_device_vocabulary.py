"""One device vocabulary end to end (issue 15 D4): the add-on's Device menu, read from its source
(no bpy), goes through the protocol to a real backend process and into the landmark stage. Its
"gpu" was refused by the ONNX session helper, which knew only cpu/cuda/auto."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest

from fitter_backend.models import DEVICES
from fitter_backend.server import protocol

REPO = Path(__file__).resolve().parents[1]
CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def addon_device_words() -> list[str]:
    """The identifiers of the add-on's Device enum, as operators.py sends them (lower case)."""
    tree = ast.parse((REPO / "blender_addon" / "preferences.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "device":
            items = next(k.value for k in node.annotation.keywords if k.arg == "items")
            return [ast.literal_eval(item)[0].lower() for item in items.elts]
    raise AssertionError("no device property in blender_addon/preferences.py")


def test_the_addon_protocol_and_backend_share_one_vocabulary():
    words = addon_device_words()
    assert words == ["cpu", "gpu"]
    for word in words:
        assert protocol.parse_request({"protocol": 1, "type": "fit", "job": "a", "head": "open", "mode": "offline",
                                       "out": "/x", "device": word,
                                       "source": {"kind": "synthetic", "frames": 2, "seed": 0}})["device"] == word
    assert set(words) <= set(DEVICES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from tests.test_pipeline import render_frames, write_clip
    return write_clip(tmp_path_factory.mktemp("device") / "clip.avi", render_frames(3, 192))


def test_each_addon_device_reaches_the_landmark_stage_of_a_real_backend(clip, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "fitter_backend.server"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
    endings = {}
    try:
        for word in addon_device_words():
            request = {"protocol": 1, "type": "fit", "job": f"dev-{word}", "head": "open", "mode": "offline",
                       "out": str(tmp_path / word), "device": word, "landmarks": "bootstrap",
                       "source": {"kind": "video", "paths": [str(clip)], "frame_start": 0, "frame_end": 2}}
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            while True:
                line = process.stdout.readline()
                assert line, process.stderr.read()[-800:]
                event = protocol.parse_event(protocol.decode_line(line))
                if event["type"] in ("done", "error", "cancelled"):
                    endings[word] = event
                    break
    finally:
        process.stdin.close()
        process.wait(60)
    assert endings["cpu"]["type"] == "done", endings["cpu"]
    if CUDA:
        assert endings["gpu"]["type"] == "done", endings["gpu"]
    else:  # the add-on's word is understood; what is missing is the GPU runtime, and it says so
        assert endings["gpu"]["type"] == "error" and "install onnxruntime-gpu" in endings["gpu"]["message"], endings
        assert not (tmp_path / "gpu").exists()
