"""A head model's eyeballs at rest: which vertices, their centres, and their pupils.

The renderer paints the iris and pupil around each eyeball's forward axis, and set-up places a
landmark model's iris centres on the pupils, so both take them from here.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.head_models.correspondence import MeshSurface, embed_points
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices


def eyeball_vertices(model: HeadModel) -> list[np.ndarray]:
    """Vertex indices of each eyeball (``eyeball_joints`` order: left, right): the ``eyeballs``
    region's vertices skinned mostly to that eye's joint; empty where the head has no eyeballs."""
    if "eyeballs" not in model.regions:
        return [np.zeros(0, int) for _ in model.eyeball_joints]
    joint = np.argmax(model.skin_weights, axis=1)
    return [np.flatnonzero(model.regions["eyeballs"] & (joint == j)) for j in model.eyeball_joints]


def eyeball_centres(vertices: np.ndarray, eyeballs: list[np.ndarray]) -> np.ndarray:
    """(2, 3) each eyeball's bounding-box centre in ``vertices`` (V, 3) (the mesh is denser over
    the cornea, so the vertices' mean lies off-centre)."""
    return np.array([(vertices[ids].min(axis=0) + vertices[ids].max(axis=0)) / 2 for ids in eyeballs])


def pupils_at_rest(model: HeadModel, vertices: np.ndarray) -> np.ndarray:
    """(2, 3) the pupil of each eye looking ahead: its centre moved forward (+Z) to the front of
    the eyeball, in ``vertices`` (V, 3) of the head at rest."""
    eyeballs = eyeball_vertices(model)
    pupils = eyeball_centres(vertices, eyeballs)
    pupils[:, 2] = [vertices[ids, 2].max() for ids in eyeballs]
    return pupils


def pupil_surface_points(model: HeadModel) -> SurfacePoints:
    """The pupils at rest (:func:`pupils_at_rest`, ``eyeball_joints`` order) as points on their
    eyeballs' surfaces ("pupil_L", "pupil_R"), which turn with the eye joints."""
    vertices = posed_vertices(model)[0]
    pupils = pupils_at_rest(model, vertices)
    triangle, barycentric = [], []
    for ids, pupil in zip(eyeball_vertices(model), pupils):
        on_eye = np.zeros(model.num_vertices, bool)
        on_eye[ids] = True
        hit = embed_points(pupil[None], ("pupil",), MeshSurface(vertices, model.triangles, on_eye[model.triangles].all(axis=1)))
        triangle.append(hit.triangle[0])
        barycentric.append(hit.barycentric[0])
    return SurfacePoints(np.array(triangle, np.int32), np.array(barycentric, np.float32), ("pupil_L", "pupil_R"))
