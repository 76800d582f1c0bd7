"""The landmark overlay's geometry: which landmarks show at a timeline frame, where they land
on the Sequencer preview, and their colour by sigma."""
import numpy as np

from facecap_helpers import synthetic_result_arrays


def test_landmarks_of_a_timeline_frame_map_onto_the_preview(addon, tmp_path):
    from facecap import overlay, results
    import facecap_helpers as h
    rig, animation = synthetic_result_arrays(frames=4, channels=3, grid=8)
    animation["frame_indices"] = np.array([10, 11, 12, 13], dtype=np.int32)
    mu = np.array([[0.0, 0.0], [640.0, 480.0], [320.0, 240.0], [np.nan, np.nan]], dtype=np.float32)
    animation["landmarks_px"] = np.tile(mu, (4, 1, 1, 1)).reshape(4, 1, 4, 2)
    animation["landmarks_sigma_px"] = np.tile(np.array([3.2, 25.6, 6.4, 1.0], dtype=np.float32), (4, 1, 1))
    folder = h.write_result_folder(tmp_path / "job", rig, animation, {"take": "t", "frame_offset": 100})
    result = results.read_result(folder / "result")
    assert overlay.frame_landmarks(result.animation, 109, 100) is None   # before the take
    points, sigma = overlay.frame_landmarks(result.animation, 112, 100)   # source frame 12
    assert points.tolist() == mu[:3].tolist() and np.allclose(sigma, [3.2, 25.6, 6.4])  # the unseen one is dropped
    # A 640x480 clip fitted into a 1920x1080 render: scaled by 2.25, centred, y up.
    view = overlay.image_to_preview(points, (640, 480), (1920, 1080))
    assert np.allclose(view, [[-720, 540], [720, -540], [0, 0]])
    colours = overlay.sigma_colours(sigma, 640)  # 0.5%, 4% and 1% of the width
    assert np.allclose(colours[0], [0, 1, 0, 1]) and np.allclose(colours[1], [1, 0, 0, 1])
    assert colours[2][0] > 0 and colours[2][1] == 1  # in between: yellowish
