"""The annotated face sets of the shared fixtures, each as 68 iBUG points per image.

300-W (COCO-style JSON, 68 points), 300-VW (iBUG ``.pts``) and AFLW2000-3D (``pt3d_68`` x, y
of the ``.mat`` files) are read by :func:`fitter_backend.landmarks.calibrate.load_annotated_faces`;
WFLW (COCO-style JSON, 98 points) is mapped to 68 here with :data:`IBUG68_FROM_WFLW98`, and
the IMM face database (AAM ``.asf``, 58 points) with :data:`IBUG68_FROM_IMM58`, which gives
only the points whose definitions agree: the others are NaN and every NME skips them.
Annotation pixel conventions (0- or 1-based) are taken as they are: at most 1 px.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from fitter_backend.errors import FacecapError
from fitter_backend.landmarks.calibrate import AnnotatedFace, load_annotated_faces

#: WFLW's 98 points (Wu et al. 2018) at the 0-based iBUG-68 points, from the two definitions:
#: WFLW's contour 0-32 has twice iBUG's 17 points (every second one coincides); 33-37 and
#: 42-46 are the brows' upper arcs (38-41, 47-50 their lower arcs, not in iBUG); 51-59 the
#: nose as in iBUG; each eye has 8 points from the outer corner (60, 68) over the upper lid
#: to the inner corner (64, 72) and back along the lower lid, of which iBUG's 6 are the
#: corners and the thirds (61, 63 / 65, 67); 76-95 the mouth as in iBUG; 96, 97 the pupils.
IBUG68_FROM_WFLW98 = (
    *range(0, 33, 2),                   # jaw 0-16
    *range(33, 38), *range(42, 47),     # brows 17-26
    *range(51, 60),                     # nose 27-35
    60, 61, 63, 64, 65, 67,             # subject's right eye 36-41
    68, 69, 71, 72, 73, 75,             # subject's left eye 42-47
    *range(76, 96),                     # lips 48-67
)

#: IMM's 58 points (Stegmann et al. 2003; image-left = the subject's right) at the 0-based
#: iBUG-68 points whose definitions are the same, checked by drawing both on the stills.
#: Left out as ambiguous: IMM's 13-point jaw starts at the ear lobes (iBUG's 17 start at
#: the ear tops); its brows follow the brow's middle, iBUG's the upper edge; its 8-point
#: eyes put three points on each lid at quarters, iBUG two at thirds; its nose is an outline
#: of the alae without the tip or bridge; its mouth has the lips' meeting line and the lower
#: lip's lower edge, but no upper-lip top.
IBUG68_FROM_IMM58 = {
    8: 6,                       # chin
    33: 52,                     # subnasale (the nose outline's lowest middle point)
    36: 21, 39: 25,             # subject's right eye: outer, inner corner
    42: 17, 45: 13,             # subject's left eye: inner, outer corner
    48: 39, 54: 43,             # mouth corners
    57: 45,                     # lower lip, lower edge, middle
}
IMM_POINTS = 58

#: Set names in the order they are reported.
SETS = ("300w", "wflw", "300vw", "aflw2000", "imm")


def load_wflw(folder: Path) -> list[AnnotatedFace]:
    """WFLW faces of ``folder``'s ``test_wflw.json`` (98 points each) as 68 iBUG points."""
    path = folder / "test_wflw.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {image["id"]: image["file_name"] for image in data["images"]}
        faces = []
        for annotation in data["annotations"]:
            points = np.array(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
            if len(points) != 98:
                raise ValueError(f"annotation {annotation.get('id')} has {len(points)} points, expected 98")
            name = files[annotation["image_id"]]
            faces.append(AnnotatedFace(f"wflw/{Path(name).stem}#{annotation['id']}", folder / name,
                                        points[list(IBUG68_FROM_WFLW98)]))
    except (ValueError, KeyError, TypeError) as error:
        raise FacecapError(f"{path}: not a COCO-style WFLW annotation file ({error})") from error
    return faces


def read_asf(path: Path) -> np.ndarray:
    """An AAM shape file's points as (P, 2) fractions of the image width and height."""
    rows = [line.split() for line in path.read_text(encoding="ascii", errors="replace").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    try:
        count = int(rows[0][0])
        points = np.array([[float(row[2]), float(row[3])] for row in rows[1:1 + count]])
    except (IndexError, ValueError) as error:
        raise FacecapError(f"{path}: not an AAM shape file (.asf) with a point count and "
                           f"'<path> <type> <x> <y> ...' rows ({error})") from error
    if points.shape != (count, 2) or not np.isfinite(points).all():
        raise FacecapError(f"{path}: expected {count} finite points, found {len(points)}")
    return points


def load_imm(folder: Path) -> list[AnnotatedFace]:
    """The IMM faces in ``folder`` (``NN-Km.asf`` beside ``NN-Km.jpg``) as 68 iBUG points, NaN
    where IMM has no counterpart (:data:`IBUG68_FROM_IMM58`)."""
    faces = []
    for asf in sorted(folder.glob("*.asf")):
        image = asf.with_suffix(".jpg")
        if not image.is_file():
            continue
        fractions = read_asf(asf)
        if len(fractions) != IMM_POINTS:
            raise FacecapError(f"{asf}: {len(fractions)} points, expected IMM's {IMM_POINTS}")
        height, width = _image_size(image)
        points = np.full((68, 2), np.nan)
        for ibug, imm in IBUG68_FROM_IMM58.items():
            points[ibug] = fractions[imm] * (width, height)
        faces.append(AnnotatedFace(f"imm/{asf.stem}", image, points))
    return faces


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FacecapError(f"{path}: not a readable image")
    return image.shape


def annotated_sets(fixtures: Path) -> dict[str, list[AnnotatedFace]]:
    """Set name -> its faces, for the sets found under ``fixtures`` (the shared ``landmarks`` folder)."""
    if not fixtures.is_dir():
        raise FacecapError(f"annotated fixtures folder {fixtures} does not exist (expected the shared "
                           "fixtures' landmarks folder with mmpose_300w/, mmpose_wflw/, mmpose_300vw/, "
                           "aflw2000_3d_prnet/, imm_face_db/)")
    faces = load_annotated_faces(fixtures) + load_wflw(fixtures / "mmpose_wflw") + load_imm(fixtures / "imm_face_db")
    sets = {name: [f for f in faces if f.name.split("/")[0] == name] for name in SETS}
    return {name: found for name, found in sets.items() if found}
