"""Joints, skin weights and the joint regressor of the open head, from MPFB's default rig.

Joints: root at the centre of the neck cut, neck at the rig's neck02, head at its head bone,
jaw at its jaw bone (the rig's mouth joint cube, between the jaw hinges) and the eyes at the
eyeball centres. Skin weights of all other bones fold into their nearest kept ancestor.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.open_head.head_mesh import HeadMesh
from fitter_backend.head_models.open_head.makehuman import SKIN_WEIGHTS, joint_vertex_ids

JOINT_NAMES = ("root", "neck", "head", "jaw", "eye_L", "eye_R")
JOINT_PARENTS = np.array([-1, 0, 1, 2, 2, 2], dtype=np.int32)
#: Rig bones kept as joints (every other bone's weights go to its nearest kept ancestor,
#: bones outside the neck's subtree to the root).
KEPT_BONES = {"neck01": "root", "neck02": "neck", "neck03": "neck", "head": "head", "jaw": "jaw",
              "eye.L": "eye_L", "eye.R": "eye_R"}
#: Joints placed at a rig bone's head (the others are the neck cut and the eyeballs).
RIG_JOINTS = {"neck": "neck02", "head": "head", "jaw": "jaw"}
#: Rigid helper parts and the joint that carries each of them entirely.
RIGID_PARTS = {"eyeball_left": "eye_L", "eyeball_right": "eye_R", "teeth_upper": "head", "teeth_lower": "jaw"}

# Joint regressor fit: candidate vertices within this distance of the joint, how strongly
# the rest location, staying put under expressions, and spreading the weights count.
CANDIDATE_RADIUS_M = 0.07
REST_WEIGHT = 10.0
EXPRESSION_WEIGHT = 3.0
SPREAD_WEIGHT = 0.002


def joint_probe_ids(rig: dict, groups: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Base-mesh vertices whose mean is each rig-placed joint (they follow every target)."""
    return {joint: joint_vertex_ids(rig[bone]["head"], groups) for joint, bone in RIG_JOINTS.items()}


def fold_skin_weights(rig: dict, bones: list[str], weights: np.ndarray, head: HeadMesh) -> np.ndarray:
    """(N, bones) base-mesh weights -> (V, J) weights of the kept vertices, rows summing to 1."""
    column_of = {}
    for column, bone in enumerate(bones):
        ancestor = bone
        while ancestor and ancestor not in KEPT_BONES:
            ancestor = rig.get(ancestor, {}).get("parent")
        column_of[column] = JOINT_NAMES.index(KEPT_BONES[ancestor] if ancestor else "root")
    folded = np.zeros((len(head.vertex_ids), len(JOINT_NAMES)))
    kept_weights = weights[head.vertex_ids]
    for column, joint in column_of.items():
        folded[:, joint] += kept_weights[:, column]
    # The eye joints carry the eyeballs only (the rig lets the lids follow the gaze a little).
    eyes = [JOINT_NAMES.index("eye_L"), JOINT_NAMES.index("eye_R")]
    folded[:, JOINT_NAMES.index("head")] += folded[:, eyes].sum(1)
    folded[:, eyes] = 0.0
    for part, joint in RIGID_PARTS.items():
        folded[head.parts[part]] = 0.0
        folded[head.parts[part], JOINT_NAMES.index(joint)] = 1.0
    if np.any(folded.sum(1) <= 0):
        raise HeadModelError(f"{SKIN_WEIGHTS}: some head vertices have no skin weights")
    return folded / folded.sum(1, keepdims=True)


def fit_regressor_row(target: np.ndarray, target_identity: np.ndarray, candidates: np.ndarray,
                      template: np.ndarray, identity_basis: np.ndarray,
                      expression_basis: np.ndarray) -> np.ndarray:
    """Convex weights w over ``candidates`` such that sum w_v x_v is the joint for every identity
    and stays put under every expression (non-negative least squares, sum 1 enforced by a
    heavily weighted row).

    target (3,), target_identity (3, I) the joint and its identity derivatives; template (V, 3),
    identity_basis (V, 3, I), expression_basis (V, 3, E) of the whole mesh. Returns (C,).
    """
    rows = [REST_WEIGHT * template[candidates].T,
            identity_basis[candidates].transpose(1, 2, 0).reshape(-1, len(candidates)),
            EXPRESSION_WEIGHT * expression_basis[candidates].transpose(1, 2, 0).reshape(-1, len(candidates)),
            100.0 * np.ones((1, len(candidates))),
            SPREAD_WEIGHT * np.eye(len(candidates))]
    goals = [REST_WEIGHT * target, target_identity.ravel(),
             np.zeros(3 * expression_basis.shape[2]), [100.0], np.zeros(len(candidates))]
    weights, _ = nnls(np.concatenate(rows), np.concatenate(goals), maxiter=50 * len(candidates))
    return weights / weights.sum()


def joint_regressor(head: HeadMesh, template: np.ndarray, identity_basis: np.ndarray,
                    expression_basis: np.ndarray, rig_joints: dict[str, tuple[np.ndarray, np.ndarray]]
                    ) -> np.ndarray:
    """(J, V) regressor. ``rig_joints``: joint -> (rest (3,), identity derivatives (3, I)) of the
    rig-placed joints; the root averages the neck cut, the eyes their eyeball vertices.
    """
    regressor = np.zeros((len(JOINT_NAMES), len(template)))
    regressor[0, head.neck_loop] = 1.0 / len(head.neck_loop)
    for joint, part in (("eye_L", "eyeball_left"), ("eye_R", "eyeball_right")):
        regressor[JOINT_NAMES.index(joint), head.parts[part]] = 1.0 / head.parts[part].sum()
    skin = head.parts["skin"] | head.parts["teeth_upper"]
    for joint, (rest, derivatives) in rig_joints.items():
        near = np.linalg.norm(template - rest, axis=1) < CANDIDATE_RADIUS_M
        candidates = np.flatnonzero(near & skin)
        regressor[JOINT_NAMES.index(joint), candidates] = fit_regressor_row(
            rest, derivatives, candidates, template, identity_basis, expression_basis)
    return regressor
