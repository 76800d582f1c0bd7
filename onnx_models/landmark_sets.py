"""Dense landmark sets on the open head: barycentric points, versioned data files, a picture.

``dense_700`` covers the whole head: the 68 iBUG points, the eyelid margins, the inner and
outer lip lines, an iris ring and pupil per eyeball, and area-spread points over face, nose,
jaw contour, ears, neck and back of head (denser on eyes and lips). ``dense_320`` is a subset
of it for the real-time model (same points, same names, indices into ``dense_700`` kept).

Spread: candidate points are drawn by area on the outer skin (the surface some outside view
sees head-on: eye sockets and mouth interior are left out), then picked by farthest-point
sampling where a region's distances count ``sqrt(density)`` times, so a region with density
4 gets points at half the spacing. Deterministic (fixed seeds); the files in
``onnx_models/landmark_sets/`` are what ``python -m onnx_models.landmark_sets`` writes.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.correspondence import MeshSurface
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import surface_points
from fitter_backend.render.camera import orbit_camera, to_pixels_depth
from fitter_backend.render.rasterise import rasterise
from fitter_backend.render.shading import vertex_normals
from fitter_backend.render.visibility import visible_points
from onnx_models import SETS_DIR

SET_FORMAT = "facecap-landmark-set"
SET_VERSION = 1
DENSE_SET = "dense_700"
REALTIME_SET = "dense_320"
IBUG68 = tuple(f"ibug_{k:02d}" for k in range(68))

#: Every landmark belongs to exactly one region (evaluation, loss weights, sigma reports).
REGIONS = ("eyes", "lips", "nose", "contour", "face", "ears", "neck", "back_of_head")
#: Relative point density per unit area (spacing scales with 1 / sqrt(density)).
DENSITY = {"eyes": 5.0, "lips": 5.0, "nose": 2.0, "contour": 1.6, "face": 1.4, "ears": 1.3, "neck": 0.55,
           "back_of_head": 0.45}
#: Iris: ring of points on the eyeball at this angle from the gaze axis (iris radius ~ 6 mm).
IRIS_POINTS = 8
IRIS_RADIUS_M = 0.0058
#: Extra density of the real-time subset: its points go where the fit needs them most.
SUBSET_EMPHASIS = {"eyes": 6.0, "lips": 4.0}
CANDIDATES = 40000
CONTOUR_BAND_M = 0.009
NOSE_BAND_M = 0.013


@dataclasses.dataclass(frozen=True)
class LandmarkSet:
    """N landmarks on a head model.

    points: barycentric points (names ``<set>_<kind>...`` or the iBUG names).
    regions: region name -> (K,) int indices (a partition of range(N)).
    semantic: "ibug_00".."ibug_67" (and pupils) -> landmark index.
    rest_m: (N, 3) positions on the neutral head (checks that a head is the one the set was made on).
    topology: sha256 of the head's vertex count and triangles.
    parent, parent_indices: for subsets, the full set's name and each point's index in it.
    """

    name: str
    points: SurfacePoints
    regions: dict[str, np.ndarray]
    semantic: dict[str, int]
    rest_m: np.ndarray
    topology: str
    head_model: str
    parent: str | None = None
    parent_indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def region_of(self) -> np.ndarray:
        """(N,) index into REGIONS of each landmark's region."""
        out = np.full(len(self), -1, np.int64)
        for k, name in enumerate(REGIONS):
            out[self.regions.get(name, [])] = k
        return out

    def anchors(self) -> dict[str, list[int]]:
        """Indices averaged for the real-time affine ROI (landmark contract ``anchors``)."""
        pick = lambda names: [self.semantic[n] for n in names]  # noqa: E731
        return {"right_eye": pick(IBUG68[36:42]), "left_eye": pick(IBUG68[42:48]),
                "mouth": pick(("ibug_48", "ibug_54"))}

    def check_head(self, model: HeadModel, tolerance_m: float = 1e-3) -> None:
        """Raise HeadModelError unless ``model`` is the head this set was made on."""
        if head_topology(model) != self.topology:
            raise HeadModelError(f"landmark set {self.name!r} was made on head model {self.head_model!r} with "
                                 f"another mesh topology than {model.name!r} ({model.num_vertices} vertices)")
        rest = surface_points(model.template[None].astype(np.float64), model.triangles, self.points)[0]
        worst = float(np.abs(rest - self.rest_m).max())
        if worst > tolerance_m:
            raise HeadModelError(f"landmark set {self.name!r}: head model {model.name!r} has the same mesh but its "
                                 f"neutral shape differs by up to {worst * 1000:.2f} mm (tolerance "
                                 f"{tolerance_m * 1000:.1f} mm); rebuild the set with python -m onnx_models.landmark_sets")

    def to_json(self) -> dict:
        data = {
            "format": SET_FORMAT, "format_version": SET_VERSION, "name": self.name, "num_landmarks": len(self),
            "head_model": self.head_model, "head_topology_sha256": self.topology,
            "names": list(self.points.names), "triangle": self.points.triangle.tolist(),
            "barycentric": np.round(self.points.barycentric.astype(np.float64), 6).tolist(),
            "rest_m": np.round(self.rest_m, 6).tolist(),
            "regions": {name: self.regions[name].tolist() for name in REGIONS if name in self.regions},
            "semantic_points": self.semantic,
        }
        if self.parent is not None:
            data["parent"] = self.parent
            data["parent_indices"] = self.parent_indices.tolist()
        return data

    @classmethod
    def from_json(cls, data: dict, source: str) -> "LandmarkSet":
        def fail(message: str):
            raise HeadModelError(f"landmark set file {source}: {message}")

        if not isinstance(data, dict) or data.get("format") != SET_FORMAT:
            fail(f"expected format {SET_FORMAT!r}")
        if data.get("format_version") != SET_VERSION:
            fail(f"expected format_version {SET_VERSION}, got {data.get('format_version')!r}")
        try:
            count = int(data["num_landmarks"])
            names = tuple(str(n) for n in data["names"])
            triangle = np.asarray(data["triangle"], dtype=np.int32)
            bary = np.asarray(data["barycentric"], dtype=np.float64)
            rest = np.asarray(data["rest_m"], dtype=np.float64)
            regions = {str(k): np.asarray(v, dtype=np.int64) for k, v in data["regions"].items()}
            semantic = {str(k): int(v) for k, v in data["semantic_points"].items()}
        except (KeyError, TypeError, ValueError) as error:
            fail(f"missing or malformed field ({error})")
        if len(names) != count or len(set(names)) != count:
            fail(f"expected {count} unique names")
        if triangle.shape != (count,) or bary.shape != (count, 3) or rest.shape != (count, 3):
            fail(f"triangle, barycentric and rest_m must have {count} rows")
        if (triangle < 0).any() or np.abs(bary.sum(1) - 1).max() > 1e-4 or (bary < -1e-6).any():
            fail("triangles must be non-negative and barycentric rows non-negative, summing to 1")
        unknown = set(regions) - set(REGIONS)
        if unknown:
            fail(f"unknown regions {sorted(unknown)}")
        covered = np.sort(np.concatenate(list(regions.values())))
        if not np.array_equal(covered, np.arange(count)):
            fail("regions must partition the landmarks (each index in exactly one region)")
        if any(not 0 <= i < count for i in semantic.values()) or any(n not in semantic for n in IBUG68):
            fail("semantic_points must name all 68 iBUG points with indices in range")
        parent = data.get("parent")
        parent_indices = None if parent is None else np.asarray(data["parent_indices"], dtype=np.int64)
        if parent_indices is not None and parent_indices.shape != (count,):
            fail(f"parent_indices must have {count} entries")
        return cls(str(data["name"]), SurfacePoints(triangle, bary.astype(np.float32), names), regions, semantic,
                   rest, str(data["head_topology_sha256"]), str(data["head_model"]), parent, parent_indices)


def head_topology(model: HeadModel) -> str:
    digest = hashlib.sha256(np.int64(model.num_vertices).tobytes())
    digest.update(np.ascontiguousarray(model.triangles, dtype=np.int32).tobytes())
    return digest.hexdigest()


def set_path(name: str, folder: Path = SETS_DIR) -> Path:
    return Path(folder) / f"{name}.json"


def load_landmark_set(name_or_path: str | Path, model: HeadModel | None = None) -> LandmarkSet:
    """A shipped set by name (``dense_700``, ``dense_320``) or a set file; checked against
    ``model`` when given."""
    path = Path(name_or_path) if str(name_or_path).endswith(".json") else set_path(str(name_or_path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HeadModelError(f"landmark set {path} does not exist (shipped sets: {DENSE_SET}, {REALTIME_SET}; "
                             f"python -m onnx_models.landmark_sets writes them)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HeadModelError(f"landmark set {path} is not readable JSON: {error}") from None
    landmark_set = LandmarkSet.from_json(data, str(path))
    if model is not None:
        landmark_set.check_head(model)
    return landmark_set


# -- building ------------------------------------------------------------------------
def _outer_surface(model: HeadModel, positions: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(K,) bool: points that some view from outside sees head-on (not eye sockets, mouth interior)."""
    vertices = model.template.astype(np.float64)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    seen = np.zeros(len(positions), bool)
    size = 384
    focal = 0.5 * size / np.tan(np.radians(15))
    for pitch in (-25.0, 0.0, 30.0, 70.0):
        for yaw in np.arange(0.0, 360.0, 30.0 if abs(pitch) < 60 else 90.0):
            rotation, translation = orbit_camera(centre, 1.0, yaw, pitch)
            cam = vertices @ rotation.T + translation
            raster = rasterise(to_pixels_depth(cam, focal, (size, size)), model.triangles, (size, size))
            points_cam = positions @ rotation.T + translation
            facing = np.einsum("kc,kc->k", normals @ rotation.T, -points_cam) / np.linalg.norm(points_cam, axis=1)
            seen |= visible_points(raster, to_pixels_depth(points_cam, focal, (size, size)), 0.001) & (facing > 0.25)
    return seen


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(K,) distance of each point to an open polyline (L, 3)."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(np.einsum("kmc,mc->km", points[:, None] - a[None], ab) / np.einsum("mc,mc->m", ab, ab), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=2).min(1)


def _point_regions(model: HeadModel, positions: np.ndarray, triangle: np.ndarray, bary: np.ndarray,
                   ibug: np.ndarray) -> np.ndarray:
    """(K,) index into REGIONS for points on the skin."""
    vertex = model.triangles[triangle, np.argmax(bary, axis=1)]
    label = np.full(len(positions), REGIONS.index("face"))
    for region, source in (("back_of_head", "back_of_head"), ("neck", "neck"), ("ears", "ears"),
                           ("lips", "lips"), ("eyes", "eyelids")):
        label[model.regions[source][vertex]] = REGIONS.index(region)
    frontal = np.isin(label, [REGIONS.index(r) for r in ("face", "neck")])
    contour = frontal & (_polyline_distance(positions, ibug[0:17]) < CONTOUR_BAND_M)
    label[contour] = REGIONS.index("contour")
    nose_line = np.minimum(_polyline_distance(positions, ibug[27:31]), _polyline_distance(positions, ibug[31:36]))
    label[(label == REGIONS.index("face")) & (nose_line < NOSE_BAND_M)] = REGIONS.index("nose")
    return label


def _closed_curve_between(anchors: np.ndarray, per_segment: int) -> np.ndarray:
    """Points of a closed Catmull-Rom curve through ``anchors`` (L, 3), ``per_segment`` strictly
    between consecutive anchors."""
    n = len(anchors)
    out = []
    for i in range(n):
        p0, p1, p2, p3 = anchors[(i - 1) % n], anchors[i], anchors[(i + 1) % n], anchors[(i + 2) % n]
        for t in np.arange(1, per_segment + 1) / (per_segment + 1):
            out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    return np.array(out)


def _iris_points(model: HeadModel) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pupil centre plus an iris ring on each eyeball mesh: triangles, barycentrics, names."""
    vertices = model.template.astype(np.float64)
    triangles, barys, names = [], [], []
    eyeball_tris = np.flatnonzero(model.regions["eyeballs"][model.triangles].all(axis=1))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        members = eyeball_tris[np.sign(vertices[model.triangles[eyeball_tris], 0].mean(1)) == sign]
        corners = vertices[model.triangles[members]]                         # (T, 3, 3)
        centre = corners.reshape(-1, 3).mean(0)
        radius = np.linalg.norm(corners.reshape(-1, 3) - centre, axis=1).mean()
        forward = np.array([0.0, 0.0, 1.0])
        angle = np.arcsin(min(IRIS_RADIUS_M / radius, 0.9))
        directions = [forward]
        for k in range(IRIS_POINTS):
            phi = 2 * np.pi * k / IRIS_POINTS
            directions.append(np.array([np.sin(angle) * np.cos(phi), np.sin(angle) * np.sin(phi), np.cos(angle)]))
        for k, direction in enumerate(directions):
            tri, bary = _ray_hit(centre, direction, corners)
            triangles.append(members[tri])
            barys.append(bary)
            names.append(f"pupil_{side}" if k == 0 else f"iris_{side}_{k - 1}")
    return np.array(triangles), np.array(barys), names


def _ray_hit(origin: np.ndarray, direction: np.ndarray, corners: np.ndarray) -> tuple[int, np.ndarray]:
    """First triangle (index into corners (T, 3, 3)) a ray from inside hits, and its barycentrics."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = np.einsum("tc,tc->t", e1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = origin - a
        u = np.einsum("tc,tc->t", s, p) / det
        q = np.cross(s, e1)
        v = np.einsum("c,tc->t", direction, q) / det
        t = np.einsum("tc,tc->t", e2, q) / det
    hit = (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
    best = int(np.flatnonzero(hit)[np.argmin(t[hit])])
    bary = np.clip(np.array([1 - u[best] - v[best], u[best], v[best]]), 0, 1)
    return best, bary / bary.sum()


def build_dense_set(model: HeadModel, count: int = 700, seed: int = 0) -> LandmarkSet:
    """The whole-head set (see the module docstring)."""
    vertices = model.template.astype(np.float64)
    skin = model.skin[model.triangles].all(axis=1)
    surface = MeshSurface(vertices, model.triangles, skin)
    ibug_points = model.semantic_points.subset(IBUG68)
    ibug = surface_points(vertices[None], model.triangles, ibug_points)[0]

    fixed_tri = [ibug_points.triangle]
    fixed_bary = [ibug_points.barycentric.astype(np.float64)]
    names = list(IBUG68)
    lines = (("lid_R", ibug[36:42], 2), ("lid_L", ibug[42:48], 2), ("lip_inner", ibug[60:68], 2),
             ("lip_outer", ibug[48:60], 1))
    for prefix, anchors, per in lines:
        curve = _closed_curve_between(anchors, per)
        hits = surface.closest(curve)
        fixed_tri.append(hits.triangle)
        fixed_bary.append(hits.barycentric)
        names += [f"{prefix}_{k:02d}" for k in range(len(curve))]
    iris_tri, iris_bary, iris_names = _iris_points(model)
    fixed_tri.append(iris_tri)
    fixed_bary.append(iris_bary)
    names += iris_names
    fixed_tri = np.concatenate(fixed_tri).astype(np.int64)
    fixed_bary = np.concatenate(fixed_bary)
    fixed_pos = np.einsum("kc,kcd->kd", fixed_bary, vertices[model.triangles[fixed_tri]])

    # Area-weighted candidates on the outer skin.
    rng = np.random.default_rng(seed)
    skin_ids = np.flatnonzero(skin)
    corners = vertices[model.triangles[skin_ids]]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    cand_tri = rng.choice(skin_ids, size=CANDIDATES, p=area / area.sum())
    cand_bary = rng.dirichlet(np.ones(3), size=CANDIDATES)
    cand_pos = np.einsum("kc,kcd->kd", cand_bary, vertices[model.triangles[cand_tri]])
    normals = vertex_normals(vertices, model.triangles)
    cand_normal = np.einsum("kc,kcd->kd", cand_bary, normals[model.triangles[cand_tri]])
    outer = _outer_surface(model, cand_pos, cand_normal)
    cand_tri, cand_bary, cand_pos = cand_tri[outer], cand_bary[outer], cand_pos[outer]
    cand_region = _point_regions(model, cand_pos, cand_tri, cand_bary, ibug)
    weight = np.sqrt(np.array([DENSITY[r] for r in REGIONS]))[cand_region]

    # Farthest-point sampling with density-scaled distances, seeded with the fixed points.
    nearest = np.full(len(cand_pos), np.inf)
    for p in fixed_pos:
        nearest = np.minimum(nearest, np.linalg.norm(cand_pos - p, axis=1))
    chosen = []
    for _ in range(count - len(fixed_pos)):
        k = int(np.argmax(nearest * weight))
        chosen.append(k)
        nearest = np.minimum(nearest, np.linalg.norm(cand_pos - cand_pos[k], axis=1))
    chosen = np.array(chosen)

    triangle = np.concatenate([fixed_tri, cand_tri[chosen]]).astype(np.int32)
    bary = np.concatenate([fixed_bary, cand_bary[chosen]]).astype(np.float32)
    names += [f"dense_{k:03d}" for k in range(len(chosen))]
    rest = np.einsum("kc,kcd->kd", bary.astype(np.float64), vertices[model.triangles[triangle]])
    region = _point_regions(model, rest, triangle, bary, ibug)
    region[[i for i, n in enumerate(names) if n.startswith(("lid_", "iris_", "pupil_"))]] = REGIONS.index("eyes")
    region[[i for i, n in enumerate(names) if n.startswith("lip_")]] = REGIONS.index("lips")
    for lo, hi, name in ((0, 17, "contour"), (17, 27, "face"), (27, 36, "nose"), (36, 48, "eyes"), (48, 68, "lips")):
        region[lo:hi] = REGIONS.index(name)
    semantic = {n: i for i, n in enumerate(names) if n in IBUG68 or n.startswith("pupil_")}
    return LandmarkSet(f"dense_{count}", SurfacePoints(triangle, bary, tuple(names)), _partition(region), semantic,
                       rest, head_topology(model), model.name)


def _partition(region: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.flatnonzero(region == k) for k, name in enumerate(REGIONS) if (region == k).any()}


def build_subset(parent: LandmarkSet, count: int = 320) -> LandmarkSet:
    """``count`` points of ``parent``: its iBUG points and pupils, then density-weighted
    farthest-point sampling over the rest (eyes and lips weighted up by SUBSET_EMPHASIS,
    which keeps lid, lip-line and iris points that the full set's spacing would drop)."""
    keep = sorted(parent.semantic.values())
    region = parent.region_of()
    weight = np.sqrt(np.array([DENSITY[r] * SUBSET_EMPHASIS.get(r, 1.0) for r in REGIONS]))[region]
    nearest = np.full(len(parent), np.inf)
    for i in keep:
        nearest = np.minimum(nearest, np.linalg.norm(parent.rest_m - parent.rest_m[i], axis=1))
    while len(keep) < count:
        k = int(np.argmax(nearest * weight))
        keep.append(k)
        nearest = np.minimum(nearest, np.linalg.norm(parent.rest_m - parent.rest_m[k], axis=1))
    keep = np.array(keep)
    names = tuple(parent.points.names[i] for i in keep)
    semantic = {n: i for i, n in enumerate(names) if n in parent.semantic}
    points = SurfacePoints(parent.points.triangle[keep], parent.points.barycentric[keep], names)
    return LandmarkSet(f"dense_{count}", points, _partition(region[keep]), semantic, parent.rest_m[keep],
                       parent.topology, parent.head_model, parent.name, keep)


def write_set(landmark_set: LandmarkSet, folder: Path = SETS_DIR) -> Path:
    path = set_path(landmark_set.name, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(landmark_set.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")
    return path


#: BGR colours of the regions in pictures.
REGION_COLOURS = {"eyes": (60, 220, 60), "lips": (60, 60, 235), "nose": (230, 160, 40), "contour": (0, 200, 255),
                  "face": (235, 235, 235), "ears": (235, 60, 200), "neck": (150, 150, 150),
                  "back_of_head": (40, 120, 255)}


def draw_set(model: HeadModel, landmark_set: LandmarkSet, size: int = 384) -> np.ndarray:
    """The set's visible points on the neutral head from five sides, coloured by region (BGR)."""
    import cv2

    from fitter_backend.render.head_png import render_clay

    vertices = model.template.astype(np.float64)
    region = landmark_set.region_of()
    tiles = []
    for caption, yaw, pitch in (("front", 0, 5), ("3/4", 40, 10), ("profile", 90, 0), ("back", 180, 15),
                                ("below", 20, -35)):
        image, raster, vertices_cam, focal = render_clay(model, vertices, 2 * size, yaw, pitch, 20.0)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        cam = surface_points(vertices_cam[None], model.triangles, landmark_set.points)[0]
        px = to_pixels_depth(cam, focal, (2 * size, 2 * size))
        visible = visible_points(raster, px, 0.002)
        for (u, v), r in zip(px[visible, :2] / 2, region[visible]):
            cv2.circle(image, (int(round((u - 0.5) * 16)), int(round((v - 0.5) * 16))), 2 * 16,
                       REGION_COLOURS[REGIONS[r]], -1, cv2.LINE_AA, 4)
        cv2.putText(image, caption, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (235, 235, 235), 1, cv2.LINE_AA)
        tiles.append(image)
    strip = np.concatenate(tiles, axis=1)
    legend = np.zeros((28, strip.shape[1], 3), np.uint8)
    x = 8
    for name in REGIONS:
        count = len(landmark_set.regions.get(name, []))
        cv2.circle(legend, (x + 6, 14), 6, REGION_COLOURS[name], -1, cv2.LINE_AA)
        text = f"{name} {count}"
        cv2.putText(legend, text, (x + 16, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
        x += 30 + 9 * len(text)
    return np.concatenate([strip, legend], axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_models.landmark_sets",
                                     description="Write the dense landmark sets (JSON) and their pictures.")
    parser.add_argument("--out", type=Path, default=SETS_DIR, help="folder (default: the shipped one)")
    args = parser.parse_args(argv)
    from fitter_backend.head_models.open_head import load_open_head
    from fitter_backend.render.head_png import write_png

    model = load_open_head()
    dense = build_dense_set(model, 700)
    realtime = build_subset(dense, 320)
    for landmark_set in (dense, realtime):
        path = write_set(landmark_set, args.out)
        write_png(path.with_suffix(".png"), draw_set(model, landmark_set))
        counts = ", ".join(f"{k} {len(v)}" for k, v in landmark_set.regions.items())
        print(f"{path}: {len(landmark_set)} landmarks ({counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
