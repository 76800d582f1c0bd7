"""The annotated face sets of the shared fixtures, each as 68 iBUG points per image.

300-W (COCO-style JSON, 68 points), 300-VW (iBUG ``.pts``) and AFLW2000-3D (``pt3d_68`` x, y
of the ``.mat`` files) are read by :func:`fitter_backend.landmarks.calibrate.load_annotated_faces`;
WFLW (COCO-style JSON, 98 points) is mapped to 68 here with :data:`IBUG68_FROM_WFLW98`.
Annotation pixel conventions (0- or 1-based) are taken as they are: at most 1 px.
"""
from __future__ import annotations

import json
from pathlib import Path

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

#: Set names in the order they are reported.
SETS = ("300w", "wflw", "300vw", "aflw2000")


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


def annotated_sets(fixtures: Path) -> dict[str, list[AnnotatedFace]]:
    """Set name -> its faces, for the sets found under ``fixtures`` (the shared ``landmarks`` folder)."""
    if not fixtures.is_dir():
        raise FacecapError(f"annotated fixtures folder {fixtures} does not exist (expected the shared "
                           "fixtures' landmarks folder with mmpose_300w/, mmpose_wflw/, mmpose_300vw/, "
                           "aflw2000_3d_prnet/)")
    faces = load_annotated_faces(fixtures) + load_wflw(fixtures / "mmpose_wflw")
    sets = {name: [f for f in faces if f.name.split("/")[0] == name] for name in SETS}
    return {name: found for name, found in sets.items() if found}
