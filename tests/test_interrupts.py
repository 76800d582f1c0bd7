"""Interrupted jobs (issue 15 D8): end of stdin, SIGTERM or SIGINT to the server, SIGTERM to the CLI
while previews are written: the job unwinds, sends its terminal event and leaves no partial folder.
SIGKILL cannot be caught: the next run removes what it left."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fitter_backend.export.result_folder import staging_folder
from fitter_backend.server import protocol

REPO = Path(__file__).resolve().parents[1]


def start_server() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fitter_backend.server"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def events_until_first_fitting_progress(process) -> None:
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()[-800:]
        event = protocol.parse_event(protocol.decode_line(line))
        assert event["type"] == "progress", event
        if event["stage"].startswith("fitting"):
            return


@pytest.mark.parametrize("how", ["eof", "sigterm", "sigint"])
def test_an_interrupted_server_cancels_its_job_and_cleans_up(tmp_path, how):
    process = start_server()
    request = {"protocol": 1, "type": "fit", "job": "long", "head": "open", "mode": "offline",
               "out": str(tmp_path / "out"), "source": {"kind": "synthetic", "frames": 400, "seed": 3}}
    process.stdin.write((json.dumps(request) + "\n").encode())
    process.stdin.flush()
    events_until_first_fitting_progress(process)
    if how == "eof":
        process.stdin.close()
    else:
        process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    rest = [protocol.parse_event(protocol.decode_line(line)) for line in process.stdout.read().splitlines()]
    assert process.wait(120) in (0, 130), process.stderr.read()[-800:]
    assert rest and rest[-1] == {"protocol": 1, "type": "cancelled", "job": "long"}, rest[-3:]
    assert os.listdir(tmp_path) == [], "a partial or result folder was left"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    from tests.test_pipeline import render_frames, write_clip
    return write_clip(tmp_path_factory.mktemp("interrupt") / "clip.avi", render_frames(24, 160))


def run_until_previews(clip: Path, out: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "fitter_backend", "fit", str(clip), "--out", str(out),
                                "--landmarks", "face_mesh_468", "--progress", "json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=REPO)
    for line in process.stdout:
        if json.loads(line).get("stage") == "previews":
            return process
    raise AssertionError(process.stderr.read()[-800:])


def test_sigterm_to_the_cli_while_previews_are_written_leaves_nothing(tmp_path, long_clip):
    earlier = tmp_path / "take1"
    earlier.mkdir()
    (earlier / "report.json").write_text("earlier")
    process = run_until_previews(long_clip, earlier)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 130
    assert process.stderr.read().decode().strip().splitlines()[-1] == "error: interrupted; earlier results are unchanged"
    assert os.listdir(tmp_path) == ["take1"] and os.listdir(earlier) == ["report.json"]


def test_what_sigkill_leaves_is_removed_by_the_next_run(tmp_path, long_clip):
    process = run_until_previews(long_clip, tmp_path / "take1")
    process.kill()
    process.wait(60)
    assert [p for p in os.listdir(tmp_path) if ".partial-" in p], "the kill came too late to test anything"
    partial = staging_folder(tmp_path / "take1")  # what the next run does first
    assert os.listdir(tmp_path) == [partial.name]
