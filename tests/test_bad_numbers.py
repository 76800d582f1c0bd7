"""Numbers that broke jobs (issue 15 D10, D11, D12): a focal length that makes the result infinite,
a singular camera, a tiny focal that fits nothing, a calibration nested 100,000 deep. Each is one
clear message naming the value, before the job runs where it can be known then; a result that is
not finite is never written."""
import json

import numpy as np
import pytest

from fitter_backend.errors import FacecapError, FitError
from fitter_backend.export.result_files import write_result
from fitter_backend.fitting import synthetic
from fitter_backend.fitting.sequence import FitResult
from fitter_backend.server import protocol
from fitter_backend.server.runner import calibration_file
from fitter_backend.video.errors import CalibrationError
from fitter_backend.video.multiview import load_calibration
from tests.toy_heads import toy_head


def test_a_result_that_is_not_finite_is_never_written(tmp_path):
    model = toy_head(seed=2)
    shot = synthetic.make_shot(model, synthetic.area_sampled_points(model, 30), num_frames=4)
    shot.truth.translation_m[2, 2] = np.inf
    result = FitResult(shot.truth, np.ones(4), [[]] * 4, {"frames": 4})
    with pytest.raises(FitError, match=r"not finite: translation_m \(frame 2\)"):
        write_result(tmp_path / "out", model, result, np.arange(4), 25.0, {})
    assert not (tmp_path / "out" / "result.json").exists() and not (tmp_path / "out" / "fit.npz").exists()


def calibration(tmp_path, **camera) -> str:
    entry = {"name": "a", "image_size_px": [640, 480], "R": np.eye(3).tolist(), "t_m": [0, 0, 0], **camera}
    path = tmp_path / "calib.json"
    path.write_text(json.dumps({"format": "facecap-calibration", "format_version": 1, "cameras": [entry]}))
    return path


@pytest.mark.parametrize("focal", [1e308, 1e-3, 1e-300])
def test_a_focal_length_no_camera_has_is_refused(tmp_path, focal):
    with pytest.raises(CalibrationError, match=r"focal_px .* between 32 and 64000 px .* got"):
        load_calibration(calibration(tmp_path, focal_px=focal))


def test_a_calibration_nested_100000_deep_is_one_clear_message(tmp_path):
    path = tmp_path / "calib.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CalibrationError, match="nested too deeply"):
        load_calibration(path)


@pytest.mark.parametrize("focal", [1e308, 1e-3])
def test_the_protocol_refuses_such_a_focal(focal):
    camera = {"matrix_world": np.eye(4).tolist(), "focal_px": focal}
    with pytest.raises(protocol.ProtocolError, match="focal_px: .* is outside"):
        protocol.parse_request({"protocol": 1, "type": "fit", "job": "a", "head": "open", "mode": "offline",
                                "out": "/x", "source": {"kind": "video", "paths": ["a.mp4"], "frame_start": 0,
                                                        "frame_end": 1, "cameras": [camera]}})


@pytest.mark.parametrize("matrix", [
    [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],          # two equal unit axes: singular
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]],         # mirrored
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],          # not a rigid transform
])
def test_a_blender_camera_that_is_not_a_rigid_transform_is_named(tmp_path, matrix):
    from tests.test_pipeline import render_frames, write_clip
    clip = write_clip(tmp_path / "clip.avi", render_frames(1, 96))
    cameras = [{"matrix_world": np.eye(4).tolist(), "focal_px": None}, {"matrix_world": matrix, "focal_px": None}]
    with pytest.raises(FacecapError, match=r"the camera of view 2 \(clip.avi\) is not a rigid transform"):
        calibration_file(tmp_path, [clip, clip], cameras)


@pytest.mark.parametrize("value", ["200", "nan", "inf", "-63"])
def test_a_pupil_distance_no_adult_has_is_one_clear_message_before_any_work(tmp_path, value, capsys):
    from fitter_backend.cli import main

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read: the value is checked first")
    assert main(["fit", str(video), "--out", str(tmp_path / "out"), f"--pupil-distance-mm={value}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "pupil distance must be 40 to 90 mm" in error[0] and value.lstrip("-") in error[0]
    assert not (tmp_path / "out").exists()
