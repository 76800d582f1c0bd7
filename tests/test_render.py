"""The software renderer: camera, rasteriser, shading, visibility, head renders."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fitter_backend.errors import FacecapError, HeadModelError
from fitter_backend.render.camera import look_at, orbit_camera, project, to_pixels_depth
from fitter_backend.render.rasterise import interpolate, rasterise
from fitter_backend.render.shading import DirectionalLight, PointLight, shade, to_uint8, vertex_normals
from fitter_backend.render.visibility import visible_points
from fitter_backend.render.head_png import (Panel, expression_vector, render_grid, render_head, render_head_png,
                                            sample_identity, showcase_panels)
from tests.toy_heads import ellipsoid_mesh, toy_head


def pixel_centres(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)


def sphere_in_view(radius: float, distance: float, size: int, focal_px: float, subdivisions: int = 4):
    """A unit-subdivided sphere centred on the optical axis: (pixels+depth, triangles, camera verts)."""
    vertices, triangles = ellipsoid_mesh(subdivisions, (radius, radius, radius))
    vertices_cam = vertices - [0.0, 0.0, distance]
    return to_pixels_depth(vertices_cam, focal_px, (size, size)), triangles, vertices_cam


# -- camera --------------------------------------------------------------------------
def test_project_matches_closed_form():
    rng = np.random.default_rng(0)
    points = rng.uniform([-0.2, -0.2, -1.5], [0.2, 0.2, -0.3], (50, 3))
    uv = project(points, 800.0, (640, 480))
    assert np.allclose(uv[:, 0], 320 + 800 * points[:, 0] / -points[:, 2])
    assert np.allclose(uv[:, 1], 240 - 800 * points[:, 1] / -points[:, 2])
    assert np.allclose(to_pixels_depth(points, 800.0, (640, 480))[:, 2], -points[:, 2])


def test_look_at_puts_target_on_the_optical_axis_with_up_upwards():
    rng = np.random.default_rng(1)
    for _ in range(10):
        eye, target = rng.normal(size=3), rng.normal(size=3)
        rotation, translation = look_at(eye, target)
        assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.isclose(np.linalg.det(rotation), 1)
        assert np.allclose(rotation @ eye + translation, 0)
        assert np.allclose(rotation @ target + translation, [0, 0, -np.linalg.norm(target - eye)])
        assert (rotation @ [0.0, 1.0, 0.0])[1] > 0  # world up stays up in the image
    rotation, translation = look_at([0, 0, 2], [0, 0, 0])
    assert np.allclose(rotation, np.eye(3)) and np.allclose(translation, [0, 0, -2])
    with pytest.raises(FacecapError, match="parallel"):
        look_at([0, 2, 0], [0, 0, 0])


def test_orbit_camera_sides():
    # Frontal: the subject's left (+X) is on the image right; from the subject's left (yaw 90)
    # the nose (+Z) points to the image left.
    nose, left_ear = np.array([0, 0, 0.1]), np.array([0.08, 0, 0])
    for yaw, point, sign in ((0, left_ear, +1), (90, nose, -1)):
        rotation, translation = orbit_camera(np.zeros(3), 1.0, yaw_deg=yaw)
        u, _ = project(rotation @ point + translation, 500.0, (200, 200))
        assert np.sign(u - 100) == sign
    rotation, translation = orbit_camera(np.zeros(3), 1.0, pitch_deg=30)
    _, v = project(rotation @ [0, 0, 0.1] + translation, 500.0, (200, 200))
    assert v > 100  # seen from above, the nose tip drops below the centre


# -- rasteriser ----------------------------------------------------------------------
def test_single_triangle_covers_exactly_the_pixels_whose_centres_it_contains():
    corners = np.array([[3.3, 2.2, 1.0], [27.6, 7.9, 1.0], [9.1, 21.7, 1.0]])
    raster = rasterise(corners, np.array([[0, 1, 2]]), (32, 24))
    u, v = pixel_centres(32, 24)
    expected = np.ones_like(u, dtype=bool)
    for k in range(3):
        a, b = corners[k, :2], corners[(k + 1) % 3, :2]
        distance = ((b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0])) / np.linalg.norm(b - a)
        assert np.abs(distance).min() > 1e-3  # no centre on an edge: the answer is unambiguous
        expected &= distance > 0
    assert expected.sum() > 100
    assert np.array_equal(raster.mask, expected)
    assert np.all(raster.triangle_id[expected] == 0) and np.all(raster.triangle_id[~expected] == -1)
    # Equal depths: barycentrics reproduce the pixel centres from the corners.
    uv = interpolate(raster, np.array([[0, 1, 2]]), corners[:, :2])
    assert np.allclose(uv[expected], np.stack([u, v], -1)[expected], atol=1e-4)
    assert np.allclose(raster.barycentric[expected].sum(-1), 1, atol=1e-6)
    assert np.all(np.isinf(raster.depth[~expected])) and np.allclose(raster.depth[expected], 1.0)


def test_perspective_correct_barycentrics_and_depth():
    size, focal = 64, 60.0
    corners_cam = np.array([[-0.3, -0.3, -0.5], [0.6, -0.2, -2.5], [0.0, 0.5, -1.2]])
    raster = rasterise(to_pixels_depth(corners_cam, focal, (size, size)), np.array([[0, 1, 2]]), (size, size))
    mask = raster.mask
    assert mask.sum() > 300
    # The 3D point the barycentrics describe projects back onto the pixel centre ...
    points = interpolate(raster, np.array([[0, 1, 2]]), corners_cam)[mask]
    u, v = pixel_centres(size, size)
    assert np.allclose(project(points, focal, (size, size)), np.stack([u, v], -1)[mask], atol=2e-3)
    # ... and its depth is the depth buffer's (screen-space interpolation would miss both).
    assert np.allclose(-points[:, 2], raster.depth[mask], rtol=1e-5)


def test_orthographic_rasterisation_interpolates_affinely():
    corners = np.array([[2.2, 3.1, 1.0], [29.7, 5.3, 5.0], [8.4, 27.9, 2.0]])
    raster = rasterise(corners, np.array([[0, 1, 2]]), (32, 32), perspective=False)
    mask = raster.mask
    assert mask.sum() > 250
    values = interpolate(raster, np.array([[0, 1, 2]]), corners)[mask]
    u, v = pixel_centres(32, 32)
    assert np.allclose(values[:, :2], np.stack([u, v], -1)[mask], atol=1e-4)
    assert np.allclose(values[:, 2], raster.depth[mask], atol=1e-5)
    # Depth is the plane through the corners.
    normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
    plane_depth = corners[0, 2] - (normal[0] * (u - corners[0, 0]) + normal[1] * (v - corners[0, 1])) / normal[2]
    assert np.allclose(raster.depth[mask], plane_depth[mask], atol=1e-4)


def test_nearer_triangle_wins_in_either_order():
    near = [[2.0, 2.0, 1.0], [30.0, 2.0, 1.0], [2.0, 30.0, 1.0]]
    far = [[1.0, 1.0, 3.0], [31.0, 1.0, 3.0], [16.0, 31.0, 3.0]]
    for vertices, near_id in ((np.array(near + far), 0), (np.array(far + near), 1)):
        raster = rasterise(vertices, np.array([[0, 1, 2], [3, 4, 5]]), (32, 32))
        overlap = raster.mask & (raster.depth < 2)
        assert overlap.sum() > 200
        assert np.all(raster.triangle_id[overlap] == near_id)
        assert np.all(raster.triangle_id[raster.mask & ~overlap] == 1 - near_id)
        assert np.allclose(raster.depth[overlap], 1.0) and np.allclose(raster.depth[raster.mask & ~overlap], 3.0)


def test_sphere_silhouette_is_a_watertight_disc_of_the_projected_radius():
    size, focal, radius, distance = 200, 300.0, 0.1, 0.5
    pixels, triangles, _ = sphere_in_view(radius, distance, size, focal)
    raster = rasterise(pixels, triangles, (size, size))
    expected_px = focal * radius / np.sqrt(distance ** 2 - radius ** 2)  # tangent cone
    u, v = pixel_centres(size, size)
    r = np.hypot(u - size / 2, v - size / 2)
    assert np.all(raster.mask[r < 0.97 * expected_px])  # no cracks between triangles
    assert not np.any(raster.mask[r > expected_px + 1])
    assert raster.mask.sum() == pytest.approx(np.pi * expected_px ** 2, rel=0.03)
    assert raster.depth.min() == pytest.approx(distance - radius, rel=1e-3)


def test_backface_culling_keeps_the_front_of_a_closed_mesh():
    pixels, triangles, _ = sphere_in_view(0.1, 0.5, 100, 150.0, subdivisions=3)
    both = rasterise(pixels, triangles, (100, 100))
    front = rasterise(pixels, triangles, (100, 100), cull_backfaces=True)
    assert np.array_equal(both.mask, front.mask)
    assert front.depth[50, 50] == pytest.approx(0.4, rel=1e-3)
    # Reversed winding: only the far half is left, behind the tangent circle (depth d - r^2/d).
    inside_out = rasterise(pixels, triangles[:, ::-1], (100, 100), cull_backfaces=True)
    assert np.all(inside_out.depth[inside_out.mask] > 0.48 - 0.005)  # polygonal sphere
    assert inside_out.depth[50, 50] == pytest.approx(0.6, rel=1e-3)
    assert inside_out.mask.sum() == pytest.approx(both.mask.sum(), rel=0.02)


def test_triangles_behind_the_camera_or_off_screen_are_dropped():
    vertices = np.array([[5.0, 5.0, -1.0], [20.0, 5.0, 1.0], [5.0, 20.0, 1.0],
                         [-50.0, -50.0, 1.0], [-40.0, -50.0, 1.0], [-50.0, -40.0, 1.0]])
    raster = rasterise(vertices, np.array([[0, 1, 2], [3, 4, 5]]), (32, 32))
    assert not raster.mask.any()
    with pytest.raises(FacecapError, match="triangle indices"):
        rasterise(vertices, np.array([[0, 1, 6]]), (32, 32))


def test_triangles_larger_than_the_image_fill_it():
    vertices = np.array([[-500.0, -500.0, 2.0], [900.0, -500.0, 2.0], [-500.0, 900.0, 2.0]])
    raster = rasterise(vertices, np.array([[0, 1, 2]]), (40, 30))
    assert raster.mask.all() and np.allclose(raster.depth, 2.0)


# -- visibility and shading ------------------------------------------------------------
def test_visible_points_front_of_a_sphere_only():
    size, focal, distance = 128, 200.0, 0.5
    pixels, triangles, vertices_cam = sphere_in_view(0.1, distance, size, focal)
    raster = rasterise(pixels, triangles, (size, size))
    centroids = vertices_cam[triangles].mean(1)                     # points on the surface
    points_px = to_pixels_depth(centroids, focal, (size, size))
    visible = visible_points(raster, points_px)
    # Seen from distance d, the silhouette of a sphere of radius r lies at z = r^2 / d = 0.02.
    height = (centroids + [0, 0, distance])[:, 2]
    silhouette_px = focal * 0.1 / np.sqrt(distance ** 2 - 0.1 ** 2)
    off_rim = np.hypot(points_px[:, 0] - size / 2, points_px[:, 1] - size / 2) < silhouette_px - 1.5
    facing, hidden = height > 0.03, (height < 0.01) & off_rim  # within a pixel of an edge: either
    assert np.all(visible[facing]) and not np.any(visible[hidden])
    off_image = points_px.copy()
    off_image[:, 0] += size
    assert not visible_points(raster, off_image).any()


def test_vertex_normals_of_a_sphere_point_outwards():
    vertices, triangles = ellipsoid_mesh(3, (1.0, 1.0, 1.0))
    normals = vertex_normals(vertices, triangles)
    assert np.allclose(normals, vertices / np.linalg.norm(vertices, axis=1, keepdims=True), atol=0.02)


def test_lambert_shading_of_a_plane_facing_the_camera():
    quad_cam = np.array([[-1.0, -1.0, -2.0], [1.0, -1.0, -2.0], [1.0, 1.0, -2.0], [-1.0, 1.0, -2.0]])
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    raster = rasterise(to_pixels_depth(quad_cam, 16.0, (32, 32)), triangles, (32, 32))
    normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    albedo = np.array([0.5, 0.4, 0.2])
    angle = np.radians(60)
    light = DirectionalLight((np.sin(angle), 0.0, np.cos(angle)), (1.0, 0.5, 1.0), 2.0)
    image = shade(raster, triangles, normals, albedo, [light], ambient=(0.1, 0.1, 0.1), positions=quad_cam,
                  background=(0.0, 0.0, 1.0))
    expected = albedo * (0.1 + 2.0 * np.cos(angle) * np.array([1.0, 0.5, 1.0]))
    assert np.allclose(image[raster.mask], expected, atol=1e-5)
    assert np.allclose(image[~raster.mask], [0, 0, 1])
    # A point light straight in front lights the centre fully and the corners less.
    lit = shade(raster, triangles, normals, albedo, [PointLight((0.0, 0.0, -1.0))], ambient=(0, 0, 0),
                positions=quad_cam)
    assert np.allclose(lit[16, 16], albedo, atol=2e-3) and np.all(lit[raster.mask] <= lit[16, 16] + 1e-6)
    # Two-sided: seen from behind (normals pointing away) it is lit as if they faced the camera.
    flipped = shade(raster, triangles, -normals, albedo, [light], ambient=(0.1, 0.1, 0.1), positions=quad_cam)
    assert np.allclose(flipped[raster.mask], expected, atol=1e-5)


def test_to_uint8_applies_display_gamma_and_clips():
    linear = np.array([-0.5, 0.0, 0.001, 0.2, 0.5, 1.0, 3.0], dtype=np.float32)
    expected = np.round(np.clip(linear, 0, 1) ** (1 / 2.2) * 255)
    assert np.abs(to_uint8(linear).astype(int) - expected).max() <= 1
    assert to_uint8(linear)[[0, 1, -1]].tolist() == [0, 0, 255]
    assert to_uint8(np.float32([0.5]), gamma=1.0)[0] == 128


# -- head renders ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def head():
    return toy_head(subdivisions=3)


def test_render_head_frontal_is_upright_and_responds_to_parameters(head, tmp_path):
    image = render_head(head, size=96, yaw_deg=0, pitch_deg=0)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    background = image[0, 0].astype(int)
    covered = np.any(np.abs(image.astype(int) - background) > 8, axis=2)
    assert 0.2 < covered.mean() < 0.8
    # Lips are tinted red (BGR): they sit in the lower half of a frontal, upright view.
    reddish = covered & (image[..., 2].astype(int) - image[..., 0] > 25)
    rows = np.nonzero(reddish)[0]
    assert len(rows) > 10 and rows.mean() > 48
    opened = render_head(head, size=96, joint_rotations={"jaw": (0.4, 0, 0)}, yaw_deg=0, pitch_deg=0)
    assert np.abs(opened.astype(int) - image).mean() > 1
    path = render_head_png(head, tmp_path / "head.png", expression={"expr0": 2.0}, size=64)
    assert cv2.imread(str(path)).shape == (64, 64, 3)


def test_render_head_draws_visible_semantic_points(head):
    plain = render_head(head, size=128)
    dotted = render_head(head, size=128, points=True)
    changed = np.any(plain != dotted, axis=2)
    assert changed.sum() > 30
    red_minus_blue = dotted[changed][:, 2].astype(int) - dotted[changed][:, 0]
    assert np.median(red_minus_blue) > 60  # red dots (BGR)


def test_render_grid_and_showcase(head):
    panels = showcase_panels(head, seed=3)
    assert [p.caption for p in panels] == ["neutral", "random identity (seed 3)"]  # toy head: no ARKit names
    grid = render_grid(head, panels + [Panel("expr1", expression={"expr1": 1.0})], size=64)
    assert grid.shape[1] == 3 * 64 and grid.shape[0] > 64
    assert not np.array_equal(grid[:, :64], grid[:, 64:128])


def test_parameter_errors_name_the_problem(head):
    with pytest.raises(HeadModelError, match="no expression channel 'jawOpen'"):
        expression_vector(head, {"jawOpen": 1.0})
    with pytest.raises(HeadModelError, match=r"expects \(5,\)"):
        expression_vector(head, np.zeros(4))
    with pytest.raises(HeadModelError, match="no joint 'elbow'"):
        render_head(head, joint_rotations={"elbow": (0, 0, 1)}, size=32)


def test_sample_identity_follows_the_prior(head):
    draws = np.stack([sample_identity(head, np.random.default_rng(seed)) for seed in range(400)])
    assert abs(draws.mean()) < 0.1 and draws.std() == pytest.approx(1.0, rel=0.1)


def test_command_line_writes_png_obj_and_reports_bad_parameters(head, tmp_path, capsys):
    from fitter_backend.head_models.obj_io import read_obj
    from fitter_backend.render.__main__ import main

    model_path = head.save_npz(tmp_path / "toy.npz")
    common = ["--model", str(model_path)]
    assert main(["png", "--out", str(tmp_path / "a.png"), "--size", "48", "--expression", "expr0=1", *common]) == 0
    assert cv2.imread(str(tmp_path / "a.png")).shape == (48, 48, 3)
    assert main(["obj", "--out", str(tmp_path / "a.obj"), "--joint", "jaw=0.3,0,0", "--identity-seed", "2",
                 "--normals", *common]) == 0
    vertices, triangles = read_obj(tmp_path / "a.obj")
    assert vertices.shape == (head.num_vertices, 3) and np.array_equal(triangles, head.triangles)
    assert not np.allclose(vertices, head.template, atol=1e-3)  # posed, not the template
    assert main(["obj", "--out", str(tmp_path / "b.obj"), "--expression", "smile=1", *common]) == 2
    assert "no expression channel 'smile'" in capsys.readouterr().err
    assert main(["obj", "--out", str(tmp_path / "b.obj"), "--joint", "jaw=1,2", *common]) == 2
    assert "three comma-separated numbers" in capsys.readouterr().err


def test_open_head_smile_left_shows_on_the_subjects_left():
    from fitter_backend.head_models.head_model import HeadModel
    from fitter_backend.paths import open_head_path

    if not open_head_path().is_file():
        pytest.skip("the open head is not built (run: python -m fitter_backend setup)")
    model = HeadModel.load_npz(open_head_path())
    captions = [panel.caption for panel in showcase_panels(model)]
    assert captions[1:3] == ["jawOpen = 1", "mouthSmileLeft = 1"]
    view = {"size": 128, "yaw_deg": 0.0, "pitch_deg": 0.0}
    neutral = render_head(model, **view).astype(int)
    smile = np.abs(render_head(model, expression={"mouthSmileLeft": 1.0}, **view) - neutral).sum(2)
    jaw = np.abs(render_head(model, expression={"jawOpen": 1.0}, **view) - neutral).sum(2)
    columns = np.arange(128)
    # Frontal view: the subject's left (+X) is the image's right half; the jaw opens symmetrically.
    assert smile[:, 64:].sum() > 3 * smile[:, :64].sum()
    assert (jaw * columns).sum() / jaw.sum() == pytest.approx(64, abs=6)
    assert (jaw.sum(1) * np.arange(128)).sum() / jaw.sum() > 64  # below the image centre
