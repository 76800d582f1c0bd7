"""Paths OpenCV cannot take (issue 15 D2): a file or folder name with a byte that is not UTF-8
crashed OpenCV (SIGSEGV, exit 139) in the CLI and killed the server. Every such path is now
refused with one message naming it; the server keeps serving."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pipeline import render_frames, write_clip

REPO = Path(__file__).resolve().parents[1]
BAD = b"bad\xff"


@pytest.fixture(scope="module")
def bad_clip(tmp_path_factory) -> Path:
    """A real clip under a name holding the byte 0xff."""
    folder = tmp_path_factory.mktemp("paths")
    clip = write_clip(folder / "clip.avi", render_frames(2, 192))
    bad = os.fsencode(folder) + b"/" + BAD + b".avi"
    os.rename(clip, bad)
    return Path(os.fsdecode(bad))


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fitter_backend", *map(os.fsencode, args)], cwd=REPO,
                          capture_output=True, timeout=120)


def test_a_video_name_that_is_not_utf8_is_refused_not_a_crash(bad_clip, tmp_path):
    run = cli("fit", bad_clip, "--out", tmp_path / "out", "--no-previews")
    assert run.returncode == 2, (run.returncode, run.stderr[-400:])
    assert run.stderr.startswith(b"error: the path ") and b"bad\\xff.avi" in run.stderr
    assert b"not UTF-8" in run.stderr and not (tmp_path / "out").exists()


def test_an_out_folder_name_that_is_not_utf8_is_refused_not_a_crash(bad_clip, tmp_path):
    good = tmp_path / "good.avi"
    good.write_bytes(Path(bad_clip).read_bytes())
    out = os.fsencode(tmp_path) + b"/" + BAD
    run = cli("fit", good, "--out", out)
    assert run.returncode == 2, (run.returncode, run.stderr[-400:])
    assert b"not UTF-8" in run.stderr and os.listdir(tmp_path) == ["good.avi"]


def test_the_server_refuses_such_a_path_and_keeps_serving(bad_clip, tmp_path):
    requests = [
        {"protocol": 1, "type": "fit", "job": "bad", "head": "open", "mode": "offline", "out": str(tmp_path / "o"),
         "source": {"kind": "video", "paths": [str(bad_clip)], "frame_start": 0, "frame_end": 1}},
        {"protocol": 1, "type": "hello"},
        {"protocol": 1, "type": "fit", "job": "badout", "head": "open", "mode": "offline",
         "out": os.fsdecode(os.fsencode(tmp_path) + b"/" + BAD),
         "source": {"kind": "synthetic", "frames": 3, "seed": 0}},
        {"protocol": 1, "type": "hello"},
    ]
    process = subprocess.Popen([sys.executable, "-m", "fitter_backend.server"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    events = []
    for request in requests:  # one at a time: each answer before the next request
        process.stdin.write((json.dumps(request) + "\n").encode("ascii"))
        process.stdin.flush()
        while True:
            event = json.loads(process.stdout.readline() or "null")
            assert event is not None, process.stderr.read()[-800:]
            if event["type"] != "progress":
                events.append(event)
                break
    process.stdin.close()
    assert process.wait(60) == 0
    assert [e["type"] for e in events] == ["error", "hello", "error", "hello"]
    assert "not UTF-8" in events[0]["message"] and "not UTF-8" in events[2]["message"]
