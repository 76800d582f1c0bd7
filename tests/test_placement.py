"""Landmark sigma widened by each point's placement spread (fitting/placement.py)."""
import numpy as np

from fitter_backend.fitting.cameras import Cameras, project
from fitter_backend.fitting.placement import placement_sigma_px, with_placement_sigma
from fitter_backend.fitting.problem import Observations, Parameters
from fitter_backend.head_models.head_model import SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices, surface_points
from fitter_backend.head_models.open_head import load_open_head


def test_sigma_grows_by_the_spread_projected_at_each_points_depth():
    model = load_open_head()
    points = SurfacePoints(np.array([100, 2000, 3000], np.int32), np.full((3, 3), 1 / 3, np.float32),
                           ("a", "b", "c"), np.array([0.0, 0.002, 0.004]))
    frames = 2
    translation = np.array([[0.0, -0.1, -0.6], [0.05, -0.1, -0.9]])
    cameras = Cameras.monocular(640, 480, focal_px=900.0)
    params = Parameters(np.zeros(model.num_identity), np.zeros((frames, model.num_expression)),
                        np.zeros((frames, model.num_joints, 3)), translation, cameras)
    spread_px = placement_sigma_px(model, points, params)
    world = surface_points(posed_vertices(model, None, None, None, translation), model.triangles, points)
    depth_m = -project(world, cameras, 0, derivatives=False).camera_points[..., 2]
    np.testing.assert_allclose(spread_px[:, 0], points.spread_m[None] * 900.0 / depth_m, rtol=1e-6)
    assert spread_px[1, 0, 2] < spread_px[0, 0, 2]            # further away, fewer pixels

    sigma = np.full((frames, 1, 3), 3.0)
    observations = Observations(np.zeros((frames, 1, 3, 2)), sigma)
    widened = with_placement_sigma(observations, model, points, params)
    np.testing.assert_allclose(widened.sigma_px, np.sqrt(9.0 + spread_px ** 2))
    assert widened.sigma_px[0, 0, 0] == 3.0                   # no spread, no change
    still = SurfacePoints(points.triangle, points.barycentric, points.names)
    assert with_placement_sigma(observations, model, still, params) is observations


def test_spread_follows_points_through_subset_and_join():
    spread = SurfacePoints(np.array([1, 2], np.int32), np.full((2, 3), 1 / 3, np.float32), ("a", "b"),
                           np.array([0.001, 0.002]))
    still = SurfacePoints(np.array([3], np.int32), np.full((1, 3), 1 / 3, np.float32), ("c",))
    np.testing.assert_array_equal(spread.join(still).spread_m, [0.001, 0.002, 0.0])
    np.testing.assert_array_equal(still.join(spread).subset(["b", "c"]).spread_m, [0.002, 0.0])
    assert still.join(still).spread_m is None
