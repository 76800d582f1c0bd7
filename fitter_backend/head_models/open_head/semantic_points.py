"""Named surface points of the open head: the 68 iBUG points and a few anatomical ones.

They are placed the way an annotator marks a frontal photograph of the neutral head: the
head is rasterised orthographically from the front (+Z) and every point is found in that
image, then tied to the front-most triangle under it (triangle + barycentric weights).

- eyes (36-47): the fissure is where the eyeball shows; corners at its ends, lid points at
  thirds of its width just outside it (on the lid margin);
- lips: the outer contour (48-59) is the border of MPFB's lips texture mask, the inner
  contour (60-67) the edge of the mouth opening once jawOpen parts the lips;
- nose: the bridge (27-30) on the midline from the eye line to the tip (the most forward
  midline point), the base (31-35) through the subnasale (the deepest point of the
  midline profile between tip and upper lip) and the edges of the alae;
- jaw (0-16): the outline of the face region (MPFB's face texture mask, which ends at the
  jaw's edge and in front of the ears) from the height of the outer eye corners around the
  chin, evenly spaced;
- brows (17-26): on the brow ridge, placed relative to the eye corners with the
  proportions of the mean iBUG face (a bald head has no hair to follow).
"""
from __future__ import annotations

import cv2
import numpy as np

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.head_model import SurfacePoints
from fitter_backend.head_models.open_head.raster import FrontView, front_view, pixel_barycentrics

PIXEL_M = 0.00025
MOUTH_OPENING = 0.4        # jawOpen weight that parts the lips to find their inner contour
#: Brow points (outer end to inner end) relative to an eye's corners, in eye widths: along
#: the corner-to-corner axis from the outer corner, and above the corners' line (from the
#: proportions of the mean iBUG face).
BROW_ALONG = (-0.58, -0.22, 0.26, 0.76, 1.23)
BROW_ABOVE = (0.57, 0.86, 0.94, 0.86, 0.67)
BRIDGE_TOP_ABOVE = 0.1     # ibug_27 above the eye corners' line, in eye widths
ALAR_BASE_RISE = 0.2       # ibug_31/35 above the subnasale, in eye widths
ALAR_BASE_INSET = 0.85     # ibug_31/35 at this fraction of the ala edge's distance from the midline
#: Outer-lip points at these fractions of the mouth half-width from the midline (upper:
#: 49/53 and the cupid's bow peaks 50/52; lower: 55/59, 56/58).
UPPER_LIP_AT = (0.62, 0.26)
LOWER_LIP_AT = (0.66, 0.30)
INNER_LIP_AT = 0.31        # 61/63 and 65/67, fractions of the opening's half-width

SKIN, EYE_LEFT, EYE_RIGHT = 0, 1, 2


class _Scene:
    """The front view of a mesh and the way back from pixels to triangles."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, triangle_part: np.ndarray,
                 bounds: tuple[float, float, float, float], keep: np.ndarray | None = None):
        corners = vertices[triangles]
        facing = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])[:, 2] > 0
        if keep is not None:
            facing &= keep
        self.ids = np.flatnonzero(facing)  # back faces are always hidden on a closed head
        self.vertices, self.triangles = vertices, triangles[self.ids]
        self.view: FrontView = front_view(vertices, self.triangles, bounds, PIXEL_M)
        hit = self.view.triangle >= 0
        self.part = np.full(self.view.triangle.shape, -1)
        self.part[hit] = triangle_part[self.ids[self.view.triangle[hit]]]

    def pixel(self, xy) -> tuple[int, int]:
        row, col = np.round(self.view.to_pixel(np.asarray(xy, dtype=np.float64))).astype(int)
        return int(row), int(col)

    def xy(self, row, col) -> np.ndarray:
        return self.view.to_xy(row, col)

    def point(self, pixel: tuple[int, int], name: str, part: int = SKIN) -> tuple[int, np.ndarray]:
        """(triangle id, barycentric weights) of the surface seen at a pixel, which must be ``part``."""
        row, col = pixel
        if not (0 <= row < self.part.shape[0] and 0 <= col < self.part.shape[1]) or self.part[row, col] != part:
            raise HeadModelError(f"open head: cannot place semantic point {name}: the surface there is not "
                                 f"{'skin' if part == SKIN else 'the eyeball'}")
        weights = pixel_barycentrics(self.view, self.vertices, self.triangles, np.array([row]), np.array([col]))[0]
        weights = np.clip(weights, 0, None)
        return int(self.ids[self.view.triangle[row, col]]), weights / weights.sum()


def _largest_component(mask: np.ndarray, containing: tuple[int, int] | None = None) -> np.ndarray:
    """The biggest 4-connected component of a mask (or the one containing a pixel)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    if count < 2:
        return np.zeros_like(mask)
    if containing is not None:
        label = labels[containing]
        return labels == label if label > 0 else np.zeros_like(mask)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _column_extremes(mask: np.ndarray, col: int) -> tuple[int, int]:
    rows = np.flatnonzero(mask[:, col])
    return int(rows.min()), int(rows.max())


def _fissure_pixels(opening: np.ndarray, at: tuple[float, float] = (1 / 3, 2 / 3)) -> list[tuple[int, int]]:
    """Six pixels around an opening (an eye fissure, a parted mouth) in iBUG order, each one
    pixel outside it: the image-left corner, two upper points at fractions ``at`` of its
    width, the image-right corner and the two lower points (right to left)."""
    rows, cols = np.nonzero(opening)
    left, right = int(cols.min()), int(cols.max())
    columns = [int(round(left + f * (right - left))) for f in at]
    upper = [(_column_extremes(opening, c)[0] - 1, c) for c in columns]
    lower = [(_column_extremes(opening, c)[1] + 1, c) for c in reversed(columns)]
    return ([(int(round(rows[cols == left].mean())), left - 1)] + upper
            + [(int(round(rows[cols == right].mean())), right + 1)] + lower)


def _face_outline(face: np.ndarray, from_row: int) -> np.ndarray:
    """(P, 2) (row, col) pixels of the outer boundary of the ``face`` mask below ``from_row``,
    from image-left around the bottom to image-right."""
    contours, _ = cv2.findContours(face.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    loop = max(contours, key=len)[:, 0, ::-1]  # (x, y) -> (row, col)
    loop = np.roll(loop, -int(np.argmin(loop[:, 0])), axis=0)  # start at the top
    below = np.flatnonzero(loop[:, 0] >= from_row)
    outline = loop[below[0]:below[-1] + 1]
    return outline if outline[0, 1] < outline[-1, 1] else outline[::-1]


def _resample(polyline: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced by arc length along a polyline (ends included)."""
    lengths = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(polyline, axis=0), axis=1))])
    at = np.linspace(0, lengths[-1], count)
    return np.stack([np.interp(at, lengths, polyline[:, k]) for k in range(polyline.shape[1])], 1)


def _texture_mask_pixels(scene: _Scene, vertex_uvs: np.ndarray, image: np.ndarray,
                         allowed_vertices: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose surface is bright in a UV-space mask image, interpolating
    each pixel's texture coordinate (only triangles touching ``allowed_vertices``)."""
    tri = scene.view.triangle
    rows, cols = np.nonzero(tri >= 0)
    corners = scene.triangles[tri[rows, cols]]
    near = allowed_vertices[corners].any(1)
    rows, cols, corners = rows[near], cols[near], corners[near]
    weights = pixel_barycentrics(scene.view, scene.vertices, scene.triangles, rows, cols)
    uv = np.einsum("pk,pkc->pc", np.nan_to_num(weights), vertex_uvs[corners])
    height, width = image.shape
    u = np.clip((uv[:, 0] * width).astype(int), 0, width - 1)
    v = np.clip(((1 - uv[:, 1]) * height).astype(int), 0, height - 1)
    mask = np.zeros(tri.shape, dtype=bool)
    mask[rows, cols] = image[v, u] > 127
    return mask


def _eye_pixels(scene: _Scene) -> dict[str, tuple[int, int]]:
    """36-41 around the subject's right eye (image left), 42-47 around the left."""
    pixels = {}
    for code, first in ((EYE_RIGHT, 36), (EYE_LEFT, 42)):
        fissure = _largest_component(scene.part == code)
        if fissure.sum() < 20:
            raise HeadModelError("open head: an eyeball does not show between the eyelids")
        for k, pixel in enumerate(_fissure_pixels(fissure)):
            pixels[f"ibug_{first + k:02d}"] = pixel
    return pixels


def _brow_pixels(scene: _Scene, eyes: dict[str, tuple[int, int]], eye_width_m: float) -> dict[str, tuple[int, int]]:
    """17-21 over the subject's right eye (outer to inner end), 22-26 over the left (inner to outer)."""
    pixels = {}
    for outer, inner, names in ((36, 39, range(17, 22)), (45, 42, range(26, 21, -1))):
        o, i = scene.xy(*eyes[f"ibug_{outer}"]), scene.xy(*eyes[f"ibug_{inner}"])
        axis = (i - o) / np.linalg.norm(i - o)
        up = np.array([-axis[1], axis[0]]) * np.sign(axis[0])
        for name, along, above in zip(names, BROW_ALONG, BROW_ABOVE):
            pixels[f"ibug_{name:02d}"] = scene.pixel(o + eye_width_m * (along * axis + above * up))
    return pixels


def _inner_lip_points(opened: _Scene, lips_mask: np.ndarray) -> dict[str, tuple[int, np.ndarray]]:
    """60-67 on the lips' edges around the mouth opening of the parted-lips scene."""
    rows, cols = np.nonzero(lips_mask)
    centre = (int(round(rows.mean())), int(round(cols.mean())))
    opening = _largest_component(~lips_mask & (opened.view.triangle >= 0), containing=centre)
    if not opening.any() or opening[:, 0].any() or opening[:, -1].any():
        raise HeadModelError("open head: the lips do not enclose the mouth opening")
    # iBUG's inner-lip points sit closer to the middle than the opening's thirds.
    at = (0.5 - INNER_LIP_AT / 2, 0.5, 0.5 + INNER_LIP_AT / 2)
    pixels = _fissure_pixels(opening, at)
    left, upper, right, lower = pixels[0], pixels[1:4], pixels[4], pixels[5:]
    names = [f"ibug_{k}" for k in range(60, 68)]
    return {name: opened.point(pixel, name) for name, pixel in zip(names, [left, *upper, right, *lower])}


def _outer_lip_pixels(lips_mask: np.ndarray) -> dict[str, tuple[int, int]]:
    """48-59 on the border of the lips (image-left corner, upper lip, right corner, lower lip)."""
    rows, cols = np.nonzero(lips_mask)
    left, right = int(cols.min()), int(cols.max())
    middle, half = (left + right) / 2, (right - left) / 2

    def column(fraction: float) -> int:
        return int(round(middle + fraction * half))

    top = {k: (_column_extremes(lips_mask, column(f))[0], column(f)) for k, f in
           ((49, -UPPER_LIP_AT[0]), (50, -UPPER_LIP_AT[1]), (51, 0.0), (52, UPPER_LIP_AT[1]), (53, UPPER_LIP_AT[0]))}
    bottom = {k: (_column_extremes(lips_mask, column(f))[1], column(f)) for k, f in
              ((55, LOWER_LIP_AT[0]), (56, LOWER_LIP_AT[1]), (57, 0.0), (58, -LOWER_LIP_AT[1]), (59, -LOWER_LIP_AT[0]))}
    pixels = {f"ibug_{k}": p for k, p in {**top, **bottom}.items()}
    pixels["ibug_48"] = (int(round(rows[cols == left].mean())), left)
    pixels["ibug_54"] = (int(round(rows[cols == right].mean())), right)
    return pixels


def _nose_pixels(scene: _Scene, eye_row: int, lip_row: int, eye_width_m: float) -> dict[str, tuple[int, int]]:
    """27-30 down the bridge to the tip, 31-35 along the nose's base."""
    mid = scene.pixel((0.0, 0.0))[1]
    profile = scene.view.depth[:, mid]
    tip_row = eye_row + int(np.argmax(profile[eye_row:lip_row]))
    labrale_row = lip_row - 1  # the upper lip's most forward point: climb the lip from its edge
    while labrale_row > tip_row + 1 and profile[labrale_row - 1] >= profile[labrale_row]:
        labrale_row -= 1
    span = np.arange(tip_row, labrale_row + 1)
    chord = np.interp(span, [tip_row, labrale_row], [profile[tip_row], profile[labrale_row]])
    subnasale_row = int(span[np.argmax(chord - profile[span])])
    top_row = eye_row - int(round(BRIDGE_TOP_ABOVE * eye_width_m / PIXEL_M))
    pixels = {f"ibug_{27 + k}": (int(round(row)), mid) for k, row in enumerate(np.linspace(top_row, tip_row, 4))}
    pixels["ibug_33"] = (subnasale_row, mid)
    alar_row = subnasale_row - int(round(ALAR_BASE_RISE * eye_width_m / PIXEL_M))
    offsets = np.arange(int(round(0.008 / PIXEL_M)), int(round(0.03 / PIXEL_M)))  # the ala's edge: 8-30 mm out
    for sign, outer_name, inner_name in ((-1, "ibug_31", "ibug_32"), (1, "ibug_35", "ibug_34")):
        across = scene.view.depth[alar_row, mid + sign * offsets]
        # The ala's edge: where the surface falls back fastest towards the cheek.
        edge = offsets[np.argmin(np.convolve(np.diff(across), np.ones(4) / 4, mode="same"))]
        outer_col = mid + sign * int(round(ALAR_BASE_INSET * edge))
        pixels[outer_name] = (alar_row, outer_col)
        pixels[inner_name] = ((alar_row + subnasale_row) // 2, (outer_col + mid) // 2)
    return pixels


def _jaw_points(face_only: _Scene, eye_row: int) -> dict[str, tuple[int, np.ndarray]]:
    """0-16 along the face outline below the eye corners, from the subject's right ear;
    ibug_08 where the outline crosses the midline, 0-8 and 8-16 evenly spaced on each side."""
    outline = _face_outline(face_only.view.triangle >= 0, eye_row)
    mid = face_only.pixel((0.0, 0.0))[1]
    bottom = int(np.argmin(np.abs(outline[:, 1] - mid) - 1e-3 * outline[:, 0]))
    spaced = np.concatenate([_resample(outline[:bottom + 1].astype(float), 9),
                             _resample(outline[bottom:].astype(float), 9)[1:]])
    # Snapped to the nearest outline pixel, which lies on the face.
    jaw = [outline[np.argmin(np.linalg.norm(outline - p, axis=1))] for p in spaced]
    return {f"ibug_{k:02d}": face_only.point((int(r), int(c)), f"ibug_{k:02d}") for k, (r, c) in enumerate(jaw)}


def _anatomical_points(scene: _Scene, template: np.ndarray, triangles: np.ndarray, parts: dict[str, np.ndarray],
                       ears: np.ndarray) -> dict[str, tuple[int, np.ndarray]]:
    """Pupils (the eyeball's front, straight ahead of its centre) and the ears' top and lobe."""
    points = {}
    for code, part, name in ((EYE_LEFT, "eyeball_left", "eye_centre_L"), (EYE_RIGHT, "eyeball_right", "eye_centre_R")):
        points[name] = scene.point(scene.pixel(template[parts[part], :2].mean(0)), name, part=code)
    for side, suffix in ((1, "L"), (-1, "R")):
        ear = np.flatnonzero(ears & (np.sign(template[:, 0]) == side))
        for label, vertex in (("ear_top", ear[np.argmax(template[ear, 1])]),
                              ("ear_lobe", ear[np.argmin(template[ear, 1])])):
            triangle = int(np.flatnonzero((triangles == vertex).any(1))[0])
            points[f"{label}_{suffix}"] = (triangle, (triangles[triangle] == vertex).astype(np.float64))
    return points


def triangle_parts(triangles: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    """(F,) SKIN, EYE_LEFT or EYE_RIGHT for triangles wholly on one of those parts, else -1."""
    part = np.full(len(parts["skin"]), -1)
    part[parts["skin"]] = SKIN
    part[parts["eyeball_left"]] = EYE_LEFT
    part[parts["eyeball_right"]] = EYE_RIGHT
    return np.where((part[triangles] == part[triangles[:, :1]]).all(1), part[triangles[:, 0]], -1)


def front_scene(vertices: np.ndarray, triangles: np.ndarray, triangle_part: np.ndarray, face: np.ndarray,
                bounds: tuple[float, float, float, float]) -> _Scene:
    """The front view of the face (``face``: (F,) triangles) and the eyeballs: only they can
    be seen from the front where the points lie."""
    return _Scene(vertices, triangles, triangle_part, bounds,
                  keep=face | (triangle_part[:, None] == [EYE_LEFT, EYE_RIGHT]).any(1))


def place_semantic_points(template: np.ndarray, triangles: np.ndarray, parts: dict[str, np.ndarray],
                          regions: dict[str, np.ndarray], vertex_uvs: np.ndarray, lips_image: np.ndarray,
                          jaw_open: np.ndarray) -> SurfacePoints:
    """The iBUG-68 points ("ibug_00".."ibug_67") and named anatomical points.

    template (V, 3) neutral head in metres; parts: "skin", "eyeball_left", "eyeball_right"
    masks; regions: "face", "lips", "ears" (V,) masks; vertex_uvs (V, 2); lips_image the
    UV-space lips mask; jaw_open (V, 3) the jawOpen unit.
    """
    triangle_part = triangle_parts(triangles, parts)
    face = regions["face"][triangles].all(1)
    face_xy = template[regions["face"], :2]
    bounds = (face_xy[:, 0].min() - 0.005, face_xy[:, 0].max() + 0.005,
              face_xy[:, 1].min() - 0.005, face_xy[:, 1].max() + 0.005)
    scene = front_scene(template, triangles, triangle_part, face, bounds)

    pixels = _eye_pixels(scene)
    corners = np.array([scene.xy(*pixels[f"ibug_{k}"]) for k in (36, 39, 42, 45)])
    eye_width_m = float(np.mean(np.linalg.norm(corners[[0, 2]] - corners[[1, 3]], axis=1)))
    eye_row = scene.pixel((0.0, corners[:, 1].mean()))[0]
    pixels.update(_brow_pixels(scene, pixels, eye_width_m))

    mouth_xy = template[regions["lips"], :2]
    mouth_bounds = (mouth_xy[:, 0].min() - 0.01, mouth_xy[:, 0].max() + 0.01,
                    mouth_xy[:, 1].min() - 0.02, mouth_xy[:, 1].max() + 0.01)
    opened = _Scene(template + MOUTH_OPENING * jaw_open, triangles, triangle_part, mouth_bounds)
    points = _inner_lip_points(opened, _largest_component(
        _texture_mask_pixels(opened, vertex_uvs, lips_image, regions["lips"])))
    pixels.update(_outer_lip_pixels(_largest_component(
        _texture_mask_pixels(scene, vertex_uvs, lips_image, regions["lips"]))))

    lip_row = scene.pixel(template[triangles[points["ibug_62"][0]]].T[:2] @ points["ibug_62"][1])[0]
    pixels.update(_nose_pixels(scene, eye_row, lip_row, eye_width_m))
    points.update({name: scene.point(pixel, name) for name, pixel in pixels.items()})
    face_only = _Scene(template, triangles, triangle_part, bounds, keep=face)
    points.update(_jaw_points(face_only, eye_row))
    points.update(nose_tip=points["ibug_30"], subnasale=points["ibug_33"], chin=points["ibug_08"])
    points.update(_anatomical_points(scene, template, triangles, parts, regions["ears"]))

    names = [f"ibug_{k:02d}" for k in range(68)] + sorted(n for n in points if not n.startswith("ibug_"))
    return SurfacePoints(np.array([points[n][0] for n in names], dtype=np.int32),
                         np.array([points[n][1] for n in names], dtype=np.float32), tuple(names))
