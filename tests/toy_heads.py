"""A small random articulated head for fast unit tests of the forward model and the fitter.

Not a face: an ellipsoid with random smooth identity/expression fields, five FLAME-like
joints (root, neck, jaw, eye_L, eye_R), random pose correctives and soft skin weights, so
every term of the forward model is exercised.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.head_models.head_model import REQUIRED_REGIONS, HeadModel, SurfacePoints


def ellipsoid_mesh(subdivisions: int = 2, radii_m=(0.08, 0.11, 0.09)) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere scaled to ``radii_m``: (V, 3) vertices, (F, 3) triangles."""
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    vertices = [np.array(v, float) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        midpoint: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in midpoint:
                m = vertices[a] + vertices[b]
                vertices.append(m / np.linalg.norm(m))
                midpoint[key] = len(vertices) - 1
            return midpoint[key]

        faces = [tri for a, b, c in faces for tri in
                 ((a, mid(a, b), mid(c, a)), (b, mid(b, c), mid(a, b)), (c, mid(c, a), mid(b, c)),
                  (mid(a, b), mid(b, c), mid(c, a)))]
    return np.array(vertices) * np.asarray(radii_m), np.array(faces, dtype=np.int32)


def toy_head(seed: int = 0, num_identity: int = 6, num_expression: int = 5, correctives: bool = True,
             subdivisions: int = 2) -> HeadModel:
    rng = np.random.default_rng(seed)
    template, triangles = ellipsoid_mesh(subdivisions)
    num_vertices = len(template)
    # Joints: root at the neck base, neck, jaw below the face centre, eyes in front.
    joint_positions = np.array([[0, -0.10, -0.01], [0, -0.06, -0.01], [0, -0.03, 0.03],
                                [0.03, 0.03, 0.06], [-0.03, 0.03, 0.06]])
    parents = np.array([-1, 0, 1, 1, 1], dtype=np.int32)
    distance = np.linalg.norm(template[:, None] - joint_positions[None], axis=2)
    # Soft weights on each vertex's two nearest joints, like a real rig's sparse weights.
    skin_weights = np.exp(-distance / 0.03)
    skin_weights[distance > np.sort(distance, axis=1)[:, [1]]] = 0
    skin_weights /= skin_weights.sum(1, keepdims=True)
    # Each joint as a convex combination of its nearest vertices (follows identity).
    regressor = np.zeros((5, num_vertices))
    for j in range(5):
        nearest = np.argsort(distance[:, j])[:6]
        regressor[j, nearest] = rng.uniform(0.5, 1.0, 6)
    regressor /= regressor.sum(1, keepdims=True)

    def smooth_basis(count: int, scale_m: float) -> np.ndarray:
        freq = rng.normal(size=(count, 3, 3)) * 20
        phase = rng.uniform(0, 2 * np.pi, (count, 3))
        basis = np.sin(np.einsum("vd,kcd->vck", template, freq) + phase.T[None])
        return (scale_m * basis).astype(np.float32)

    regions = {name: np.zeros(num_vertices, bool) for name in REQUIRED_REGIONS}
    front = template[:, 2] > 0.03
    regions["face"] = front
    regions["eyelids"] = distance[:, 3:5].min(1) < 0.025
    regions["lips"] = front & (np.abs(template[:, 1] + 0.04) < 0.015)
    regions["ears"] = np.abs(template[:, 0]) > 0.07
    regions["neck"] = template[:, 1] < -0.08
    regions["back_of_head"] = template[:, 2] < -0.03
    # A patch below the lips stands in for teeth, so the lip-teeth term has a hull.
    regions["teeth"] = front & (template[:, 1] < -0.058) & (template[:, 1] > -0.085)
    tri_ids = rng.choice(len(triangles), 68, replace=False)
    bary = rng.dirichlet(np.ones(3), 68)
    num_correctives = 36 if correctives else 0
    return HeadModel(
        name=f"toy-{seed}",
        template=template.astype(np.float32),
        identity_basis=smooth_basis(num_identity, 0.004),
        expression_basis=smooth_basis(num_expression, 0.003),
        expression_names=tuple(f"expr{k}" for k in range(num_expression)),
        pose_correctives=(rng.normal(size=(num_vertices, 3, num_correctives)) * 0.002).astype(np.float32),
        joint_regressor=regressor.astype(np.float32),
        joint_parents=parents,
        joint_names=("root", "neck", "jaw", "eye_L", "eye_R"),
        skin_weights=skin_weights.astype(np.float32),
        triangles=triangles,
        eyeball_joints=np.array([3, 4], dtype=np.int32),
        eyeball_radii_m=np.array([0.012, 0.012], dtype=np.float32),
        regions=regions,
        semantic_points=SurfacePoints(tri_ids.astype(np.int32), bary.astype(np.float32),
                                      tuple(f"ibug_{k:02d}" for k in range(68))),
        identity_prior_weights=np.ones(1, np.float32),
        identity_prior_means=np.zeros((1, num_identity), np.float32),
        identity_prior_stds=np.ones((1, num_identity), np.float32),
    ).validate("toy head")
