"""The head's overall size and its pupils' distance, as functions of its identity coefficients.

One camera cannot see absolute size: a head k times larger and k times further away projects
to the same pixels, perspective included, so a monocular fit takes its size from the identity
prior. The size measure here is the RMS distance of the neutral head's skin vertices from their
centroid: one number for the whole head, not a feature that a landmark model places.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.head_models.head_model import HeadModel


@dataclasses.dataclass(frozen=True)
class SizeLine:
    """The neutral head's size linearised about a reference identity:
    size_m(identity) ~= size_m + gradient_m . (identity - reference)."""

    reference: np.ndarray   # (I,) identity coefficients: the prior's mean
    size_m: float           # RMS radius of the skin at the reference, metres
    gradient_m: np.ndarray  # (I,) metres per unit of each identity coefficient


def prior_mean_identity(model: HeadModel) -> np.ndarray:
    """(I,) the mean of the identity prior's mixture."""
    weights = np.asarray(model.identity_prior_weights, np.float64)
    return weights @ np.asarray(model.identity_prior_means, np.float64)


def _neutral_skin(model: HeadModel, identity: np.ndarray) -> np.ndarray:
    """(V', 3) the neutral head's skin vertices, centred on their centroid."""
    skin = model.skin
    vertices = model.template[skin] + model.identity_basis[skin] @ np.asarray(identity, np.float64)
    return vertices - vertices.mean(axis=0)


def neutral_size_m(model: HeadModel, identity: np.ndarray) -> float:
    """RMS distance in metres of the neutral head's skin vertices from their centroid."""
    return float(np.sqrt(np.mean(np.sum(_neutral_skin(model, identity) ** 2, axis=1))))


def size_line(model: HeadModel) -> SizeLine:
    """:class:`SizeLine` of ``model`` about its prior's mean identity. The neutral vertices are
    linear in the identity, v = T + S beta, so d size / d beta = mean_v (v - c) . (S_v - S_c) / size."""
    reference = prior_mean_identity(model)
    centred = _neutral_skin(model, reference)
    size_m = neutral_size_m(model, reference)
    basis = model.identity_basis[model.skin].astype(np.float64)               # (V', 3, I)
    gradient_m = np.einsum("vc,vci->i", centred, basis - basis.mean(axis=0)) / (len(centred) * size_m)
    return SizeLine(reference, size_m, gradient_m)


def eye_distance_line(model: HeadModel) -> SizeLine:
    """The distance between the eyeball centres (the pupils' distance with the eyes looking far
    ahead), linearised about the prior's mean identity: joints are J = R (T + S beta)."""
    reference = prior_mean_identity(model)
    regressor = model.joint_regressor[model.eyeball_joints].astype(np.float64)       # (2, V)
    centres = regressor @ (model.template + model.identity_basis @ reference)        # (2, 3)
    apart = centres[0] - centres[1]
    distance_m = float(np.linalg.norm(apart))
    d_apart = np.einsum("v,vci->ci", regressor[0] - regressor[1], model.identity_basis)  # (3, I)
    return SizeLine(reference, distance_m, apart @ d_apart / distance_m)
