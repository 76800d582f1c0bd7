"""A head model's eyes: the eyeballs at rest (which vertices, their centres, their pupils), and
how far its blink units must close the lids of each identity.

The renderer paints the iris and pupil around each eyeball's forward axis, and set-up places a
landmark model's iris centres on the pupils, so both take them from here.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.head_models.correspondence import MeshSurface, embed_points
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices


#: The ARKit units that close each eye's lids (left, right).
BLINK_UNITS = ("eyeBlinkLeft", "eyeBlinkRight")
#: The blink units and the iBUG (upper, lower) lid points of each, whose gap it closes.
BLINK_LIDS = {"eyeBlinkRight": (("ibug_37", "ibug_41"), ("ibug_38", "ibug_40")),
              "eyeBlinkLeft": (("ibug_43", "ibug_47"), ("ibug_44", "ibug_46"))}


def has_blinks(model: HeadModel) -> bool:
    """Whether the head has both eyes' blink units."""
    return all(unit in model.expression_names for unit in BLINK_UNITS)


def blink_closing_scales(model: HeadModel) -> tuple[np.ndarray, np.ndarray]:
    """(E,) offset and (E, I) identity gain of each expression unit's weight (see
    :attr:`HeadModel.blend_scale_terms`). A blink unit's blend shape closes the lids by a fixed
    distance, the mean head's gap, while identities open their eyes 6-9 mm: at weight 1 a narrow
    eye's lids crossed and a wide eye stayed open. Its weight is therefore scaled by the rest gap
    (linear in the identity, along +Y) over that distance, so the lids meet at 1 on every head.
    Other units, and heads without the units or the iBUG lid points, get 1 and 0."""
    offset, gain = np.ones(model.num_expression), np.zeros((model.num_expression, model.num_identity))
    named = set(model.semantic_points.names)
    for unit, pairs in BLINK_LIDS.items():
        if unit not in model.expression_names or not named.issuperset(p for pair in pairs for p in pair):
            continue
        k = model.expression_names.index(unit)
        lids = model.semantic_points.subset([p for pair in pairs for p in pair])   # upper, lower, ...
        corners, bary = model.triangles[lids.triangle], lids.barycentric.astype(np.float64)

        def height(array: np.ndarray) -> np.ndarray:
            """(V, 3, ...) per-vertex vectors -> (..., ) mean upper-minus-lower height of the pairs."""
            at_points = np.einsum("sc,sc...->s...", bary, np.asarray(array, np.float64)[corners])[:, 1]
            return (at_points[0::2] - at_points[1::2]).mean(axis=0)

        closure = -height(model.expression_basis[:, :, k])
        if closure > 0:
            offset[k], gain[k] = height(model.template) / closure, height(model.identity_basis) / closure
    return offset, gain


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
