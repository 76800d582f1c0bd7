"""Where results go (issue 15 D1, D9, D11, D13): only an earlier result or an empty folder is ever
replaced, every path is checked before any work, a run killed mid-replace is repaired by the next,
and two runs racing for one folder take turns."""
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fitter_backend.export import result_folder
from fitter_backend.export.result_folder import OutputError, check_output, publish, staging_folder

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fitter_backend", *map(os.fsencode, args)], cwd=cwd,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def earlier_result(folder: Path, text: str = "earlier") -> Path:
    (folder / "previews").mkdir(parents=True)
    (folder / "report.json").write_text(text)
    return folder


@pytest.fixture
def shoot(tmp_path) -> Path:
    """The issue's shoot folder: a take (any bytes: the refusal comes before decoding) and notes."""
    folder = tmp_path / "shoot"
    folder.mkdir()
    (folder / "take1.mpg").write_bytes(b"\x00\x00\x01\xba the artist's take")
    (folder / "notes.txt").write_text("notes\n")
    return folder


@pytest.mark.parametrize("out", ["shoot", "shoot/.", "shoot/"])
def test_fit_never_deletes_a_folder_that_is_not_an_earlier_result(shoot, out):
    before = tree(shoot.parent)
    run = run_cli("fit", "shoot/take1.mpg", "--out", out, "--stop", "5", "--no-previews", cwd=shoot.parent)
    assert run.returncode == 2, run.stderr
    assert b"error: result folder" in run.stderr and b"shoot" in run.stderr
    assert tree(shoot.parent) == before and sorted(os.listdir(shoot.parent)) == ["shoot"]


def test_an_image_sequence_folder_is_not_its_own_result_folder(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.png").write_bytes(b"png")
    with pytest.raises(OutputError, match="holds the input"):
        check_output(frames, inputs=[frames])
    with pytest.raises(OutputError, match="holds the input"):
        check_output(tmp_path, inputs=[frames / "0001.png"])


def test_only_an_earlier_result_or_an_empty_folder_may_be_replaced(tmp_path):
    assert check_output(earlier_result(tmp_path / "a")) == tmp_path / "a"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty") == tmp_path / "empty"
    assert check_output(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists(), "checking created a folder"
    mixed = earlier_result(tmp_path / "mixed")
    (mixed / "take1.mov").write_bytes(b"video")
    with pytest.raises(OutputError, match="not an earlier facecap result"):
        check_output(mixed)
    with pytest.raises(OutputError, match="already exists and is not empty"):
        check_output(tmp_path / "a", replace_results=False)


@pytest.mark.parametrize("case", ["symlink", "root", "under_a_file", "proc", "dotdot_escape"])
def test_bad_result_folders_are_refused_before_any_work(tmp_path, case):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("keep")
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out, words = {
        "symlink": (tmp_path / "link", "is a symbolic link"),
        "root": (Path("/"), "root of the filesystem"),
        "under_a_file": (tmp_path / "file.txt" / "out", "is a file, not a folder"),
        "proc": (Path("/proc/facecap_out"), "cannot write the result folder"),
        # "x" does not exist: the path still resolves to real/, which holds the user's file
        "dotdot_escape": (tmp_path / "x" / ".." / "real", "not an earlier facecap result"),
    }[case]
    with pytest.raises(OutputError, match=words):
        check_output(out)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "keep.txt").read_text() == "keep"


def test_a_failing_cli_job_leaves_no_folders_behind(tmp_path):
    run = run_cli("fit", tmp_path / "missing.mp4", "--out", tmp_path / "a" / "b" / "c")
    assert run.returncode == 2 and run.stderr.startswith(b"error: ")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_run_killed_between_the_renames_is_repaired_by_the_next(tmp_path):
    target = tmp_path / "take1"
    dead = 2 ** 22 + 1  # above the default pid_max of 32768 * 128: no such process
    earlier_result(tmp_path / f".take1.old-{dead}", "the earlier result")
    (tmp_path / f".take1.partial-{dead}").mkdir()
    (tmp_path / f".take1.partial-{dead}" / "fit.npz").write_bytes(b"half")
    partial = staging_folder(target)
    assert (target / "report.json").read_text() == "the earlier result"
    assert sorted(os.listdir(tmp_path)) == [partial.name, "take1"]
    (partial / "report.json").write_text("the new result")
    publish(partial, target)
    assert (target / "report.json").read_text() == "the new result" and os.listdir(tmp_path) == ["take1"]


def _publish_many(target: str, tag: str, count: int) -> None:
    for k in range(count):
        partial = staging_folder(Path(target))
        (partial / "report.json").write_text(f"{tag} {k}")
        publish(partial, Path(target))


def test_two_runs_racing_for_one_folder_take_turns(tmp_path):
    target = tmp_path / "take1"
    context = multiprocessing.get_context("fork")
    runs = [context.Process(target=_publish_many, args=(str(target), tag, 40)) for tag in "ab"]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    assert [run.exitcode for run in runs] == [0, 0]
    assert os.listdir(tmp_path) == ["take1"] and (target / "report.json").read_text().endswith(" 39")


def test_a_write_that_fails_keeps_the_earlier_result_and_says_why(tmp_path, monkeypatch):
    import errno

    from fitter_backend.pipeline import FitJob, fit_videos
    target = earlier_result(tmp_path / "take1", "the earlier result")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "take1" / "fit.npz"))

    monkeypatch.setattr(result_folder, "staging_folder", disk_full)
    monkeypatch.setattr("fitter_backend.pipeline.staging_folder", disk_full)
    from tests.test_pipeline import render_frames, write_clip
    clip = write_clip(tmp_path / "clip.avi", render_frames(2, 192))
    with pytest.raises(OutputError, match="cannot write the results to .*take1: No space left on device"):
        fit_videos(FitJob(videos=(clip,), out=target, previews=False))
    assert (target / "report.json").read_text() == "the earlier result"
    assert sorted(os.listdir(tmp_path)) == ["clip.avi", "take1"]


@pytest.mark.parametrize("case", ["symlink", "dotdot_escape", "under_a_file"])
def test_the_server_refuses_a_bad_out_before_the_job_runs(tmp_path, case):
    from tests.test_server import Recorder, fit
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("keep")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")  # empty: passes a plain non-empty check
    (tmp_path / "file.txt").write_text("a file")
    out = {"symlink": tmp_path / "link", "dotdot_escape": tmp_path / "x" / ".." / ".." / tmp_path.name / "real",
           "under_a_file": tmp_path / "file.txt" / "out"}[case]
    recorder = Recorder()
    try:
        recorder.send(fit("bad", out))
        error = recorder.wait("error", "bad")
    finally:
        recorder.server.stop()
    assert "result folder" in error["message"]
    assert not [e for e in recorder.of("bad") if e["type"] == "progress" and e["fraction"] > 0.05]
    assert sorted(os.listdir(tmp_path)) == ["empty", "file.txt", "link", "real"] and os.listdir(tmp_path / "real") == ["keep.txt"]
    assert os.listdir(tmp_path / "empty") == [] and (tmp_path / "link").is_symlink()


def test_an_os_error_no_stage_named_is_still_one_line():
    run = run_cli("demo", "--out", "/proc/facecap_demo")  # the demo makes its folder first: EACCES/ENOENT
    assert run.returncode == 2 and run.stderr.count(b"\n") == 1, run.stderr[-600:]
    assert run.stderr.startswith(b"error: ") and b"/proc/facecap_demo" in run.stderr
