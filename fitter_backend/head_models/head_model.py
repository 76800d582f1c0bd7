"""The generic articulated morphable head that every stage of the backend works on.

A head model is plain data (numpy arrays, float32 for storage) plus names. The forward
model lives in :mod:`fitter_backend.head_models.lbs`; loaders for concrete sources (the
open MakeHuman head, FLAME) produce a :class:`HeadModel` and nothing else.

Conventions
-----------
- Units are metres; +Y up, +Z out of the face (towards a camera looking down -Z),
  +X to the subject's left.
- Joint 0 is the root. Its axis-angle rotation is the global head rotation about the
  root joint; a separate per-frame translation moves the whole head.
- ``pose_correctives`` are driven by ``(R_k - I)`` of the non-root joints, flattened
  row-major, joints in order: P = 9 * (J - 1) (FLAME's ``posedirs`` layout).
- Identity coefficients are scaled so that the prior is (a mixture of) Gaussians in
  coefficient space; the default single component is N(0, I).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from fitter_backend.errors import HeadModelError

FORMAT_VERSION = 1

#: Regions every head model provides as vertex masks (more are allowed).
REQUIRED_REGIONS = ("face", "eyelids", "lips", "ears", "neck", "back_of_head")


@dataclasses.dataclass(frozen=True)
class SurfacePoints:
    """Points on the mesh surface: barycentric weights on triangles.

    triangle: (S,) int32 triangle index into ``HeadModel.triangles``.
    barycentric: (S, 3) float32 weights, rows sum to 1.
    names: S names (may be generic, e.g. ``"dense_000"``).
    spread_m: (S,) metres a landmark model's point wanders over the surface between views of
        the same head (how well one place explains it; landmarks/embedding.py), or None: 0.
    eyes_closed: the same points where a landmark model puts them when the head's eyes are
        closed, for points it does not move with the lid skin that slides under them
        (landmarks/embedding.py, fitting/closed_eyes.py), or None: where they are now.
    """

    triangle: np.ndarray
    barycentric: np.ndarray
    names: tuple[str, ...]
    spread_m: np.ndarray | None = None
    eyes_closed: "SurfacePoints | None" = None

    def __len__(self) -> int:
        return len(self.names)

    def vertex_ids(self, triangles: np.ndarray) -> np.ndarray:
        """(S, 3) vertex indices of each point's triangle."""
        return triangles[self.triangle]

    def subset(self, names: list[str] | tuple[str, ...]) -> "SurfacePoints":
        """The points with the given names, in that order."""
        index = {name: i for i, name in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise HeadModelError(f"surface points not defined on this head model: {missing[:5]}")
        rows = np.array([index[n] for n in names], dtype=np.int64)
        return SurfacePoints(self.triangle[rows], self.barycentric[rows], tuple(names),
                             None if self.spread_m is None else self.spread_m[rows],
                             None if self.eyes_closed is None else self.eyes_closed.subset(names))

    def join(self, other: "SurfacePoints") -> "SurfacePoints":
        """These points followed by ``other``'s."""
        spread = (None if self.spread_m is None and other.spread_m is None else
                  np.concatenate([p.spread_m if p.spread_m is not None else np.zeros(len(p)) for p in (self, other)]))
        closed = (None if self.eyes_closed is None and other.eyes_closed is None else
                  self.closed_placement().join(other.closed_placement()))
        return SurfacePoints(np.concatenate([self.triangle, other.triangle]),
                             np.concatenate([self.barycentric, other.barycentric]), self.names + other.names, spread,
                             closed)

    def closed_placement(self) -> "SurfacePoints":
        """Where the points lie when the eyes are closed (where they are now if no different)."""
        if self.eyes_closed is not None:
            return self.eyes_closed
        return SurfacePoints(self.triangle, self.barycentric, self.names)


#: Regions inside the head (behind lids and lips), not its outer skin.
INNER_REGIONS = ("eyeballs", "teeth", "tongue")
# ARKit units that pay for being on together (E_expression, w a b per pair). Most move the
# same vertices in opposite directions, so a fit could explain a still face with both, or a
# blink with a smaller blink plus a smaller wide eye. Gaze is unseen under a closed lid, so
# eyeBlink and the eyeLook units, which also move the lids, would share a blink between them
# (README, "The fitter": wojtek's open-eye eyeBlink max 0.12/0.30 -> 0.09/0.23).
OPPOSING_EXPRESSIONS = (
    ("eyeBlinkLeft", "eyeWideLeft"), ("eyeBlinkRight", "eyeWideRight"),
    ("eyeSquintLeft", "eyeWideLeft"), ("eyeSquintRight", "eyeWideRight"),
    ("eyeLookUpLeft", "eyeLookDownLeft"), ("eyeLookUpRight", "eyeLookDownRight"),
    ("eyeLookInLeft", "eyeLookOutLeft"), ("eyeLookInRight", "eyeLookOutRight"),
    ("browDownLeft", "browOuterUpLeft"), ("browDownRight", "browOuterUpRight"),
    ("jawOpen", "mouthClose"), ("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"),
    ("mouthSmileLeft", "mouthFrownLeft"), ("mouthSmileRight", "mouthFrownRight"),
    ("mouthPucker", "mouthStretchLeft"), ("mouthPucker", "mouthStretchRight"),
) + tuple((f"eyeBlink{side}", f"eyeLook{way}{side}") for side in ("Left", "Right")
          for way in ("Down", "Up", "In", "Out"))

# ARKit units of the two eyes that one gaze moves alike (E_expression, r = w (a - b)): both eyes
# look down or up together, and the left eye looks in as the right one looks out. Apart, each
# eye's eyeLook units were free lid shapes, and a fit shut a rendered blink with them
# (eyeBlinkLeft 0.14 beside eyeLookInLeft 0.75, eyeLookInRight 0.66, both eyes' eyeLookDown 0.5-0.95).
CONJUGATE_EXPRESSIONS = (
    ("eyeLookDownLeft", "eyeLookDownRight"), ("eyeLookUpLeft", "eyeLookUpRight"),
    ("eyeLookInLeft", "eyeLookOutRight"), ("eyeLookOutLeft", "eyeLookInRight"),
)

# ARKit units that move fast and whole (blinks, winks, the jaw dropping and the lips sealing over
# it). E_temporal on the units themselves spares these and steadies the rest (brows, cheeks, the
# lips' shapes), whose weights shook with the landmarks' noise.
FAST_EXPRESSION_PREFIXES = ("eye",)
FAST_EXPRESSIONS = ("jawOpen", "mouthClose")


@dataclasses.dataclass(frozen=True)
class HeadModel:
    """An articulated morphable head. Shapes use V vertices, F triangles, J joints,
    I identity components, E expression channels, P = 9 (J - 1) corrective inputs,
    M prior mixture components.
    """

    name: str
    template: np.ndarray            # (V, 3) neutral mean head, metres
    identity_basis: np.ndarray      # (V, 3, I) per unit identity coefficient
    expression_basis: np.ndarray    # (V, 3, E) per unit expression coefficient
    expression_names: tuple[str, ...]
    pose_correctives: np.ndarray    # (V, 3, P); P may be 0 (no correctives)
    joint_regressor: np.ndarray     # (J, V) rows sum to 1
    joint_parents: np.ndarray       # (J,) int32, -1 for the root
    joint_names: tuple[str, ...]
    skin_weights: np.ndarray        # (V, J) rows sum to 1
    triangles: np.ndarray           # (F, 3) int32
    eyeball_joints: np.ndarray      # (2,) int32 joints at the eyeball centres (left, right)
    eyeball_radii_m: np.ndarray     # (2,) float32
    regions: dict[str, np.ndarray]  # name -> (V,) bool
    semantic_points: SurfacePoints  # named points, at least the 68 iBUG points "ibug_00".."ibug_67"
    identity_prior_weights: np.ndarray  # (M,) mixture weights, sum to 1
    identity_prior_means: np.ndarray    # (M, I)
    identity_prior_stds: np.ndarray     # (M, I) diagonal standard deviations
    attribution: str = ""

    # -- sizes -----------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def skin(self) -> np.ndarray:
        """(V,) bool: the vertices of the outer skin, i.e. outside :data:`INNER_REGIONS`."""
        inner = np.zeros(self.num_vertices, bool)
        for region in INNER_REGIONS:
            if region in self.regions:
                inner |= self.regions[region]
        return ~inner

    @property
    def num_joints(self) -> int:
        return int(self.joint_parents.shape[0])

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[2])

    @property
    def num_expression(self) -> int:
        return int(self.expression_basis.shape[2])

    @property
    def expression_bounded(self) -> np.ndarray:
        """(E,) bool: channels that are blend-shape weights in [0, 1] (ARKit units, named as
        in ARKit); other channels (FLAME's PCA components) are unbounded coefficients."""
        from fitter_backend.head_models.open_head.expression import ARKIT_NAMES

        return np.array([name in ARKIT_NAMES for name in self.expression_names], bool)

    @functools.cached_property
    def blend_scale_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """(E,) offset and (E, I) identity gain of :meth:`blend_scales`: 1 and 0 but for the blink
        units, whose lids meet at 1 on every head
        (:func:`fitter_backend.head_models.eyes.blink_closing_scales`)."""
        from fitter_backend.head_models.eyes import blink_closing_scales

        return blink_closing_scales(self)

    def blend_scales(self, identity: np.ndarray) -> np.ndarray:
        """(..., E) what each unit's blend shape is multiplied by at ``identity`` (I,) or (..., I):
        offset_k + gain_k . identity."""
        offset, gain = self.blend_scale_terms
        return offset + np.asarray(identity, np.float64) @ gain.T

    def blend_weights(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """(..., E) the weights the expression blend shapes act with, for ``expression`` (..., E)
        at ``identity`` (I,) or (..., I)."""
        return np.asarray(expression, np.float64) * self.blend_scales(identity)

    @property
    def opposing_expressions(self) -> np.ndarray:
        """(K, 2) int: pairs of bounded channels that should not be on together: they move the
        same vertices in opposite directions (eyeBlink and eyeWide, jawOpen and mouthClose, ...),
        or one hides the other (eyeBlink and the eyeLook units)."""
        return self._expression_pairs(OPPOSING_EXPRESSIONS)

    @property
    def conjugate_expressions(self) -> np.ndarray:
        """(K, 2) int: pairs of channels, one per eye, that one gaze moves alike (the eyeLook units)."""
        return self._expression_pairs(CONJUGATE_EXPRESSIONS)

    @property
    def steady_expressions(self) -> np.ndarray:
        """(K,) int: the ARKit channels E_temporal holds steady (all but the fast ones: the lids'
        and eyes' units, jawOpen and mouthClose); none on heads without ARKit channels (FLAME's
        components each mix fast and slow motion)."""
        names = self.expression_names
        if "jawOpen" not in names:
            return np.zeros(0, int)
        return np.array([i for i, name in enumerate(names)
                         if not name.startswith(FAST_EXPRESSION_PREFIXES) and name not in FAST_EXPRESSIONS], int)

    def _expression_pairs(self, named: tuple[tuple[str, str], ...]) -> np.ndarray:
        """(K, 2) channel indices of the pairs in ``named`` that this head has both of."""
        names = self.expression_names
        pairs = [(names.index(a), names.index(b)) for a, b in named if a in names and b in names]
        return np.array(pairs, int).reshape(-1, 2)

    def joint_index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise HeadModelError(f"head model {self.name!r} has no joint {name!r}; joints: {list(self.joint_names)}") from None

    def truncated(self, num_identity: int | None = None, num_expression: int | None = None) -> "HeadModel":
        """The same head with only the first identity/expression components."""
        ni = self.num_identity if num_identity is None else num_identity
        ne = self.num_expression if num_expression is None else num_expression
        if not (0 <= ni <= self.num_identity and 0 <= ne <= self.num_expression):
            raise HeadModelError(
                f"head model {self.name!r} has {self.num_identity} identity and {self.num_expression} "
                f"expression components; asked for {ni} and {ne}")
        return dataclasses.replace(
            self,
            identity_basis=self.identity_basis[:, :, :ni],
            expression_basis=self.expression_basis[:, :, :ne],
            expression_names=self.expression_names[:ne],
            identity_prior_means=self.identity_prior_means[:, :ni],
            identity_prior_stds=self.identity_prior_stds[:, :ni],
        )

    # -- validation ------------------------------------------------------------------
    def validate(self, source: str | Path = "") -> "HeadModel":
        """Check shapes, index ranges and finiteness; raise HeadModelError naming ``source``."""
        where = f" in {source}" if source else ""

        def fail(message: str) -> None:
            raise HeadModelError(f"invalid head model {self.name!r}{where}: {message}")

        def expect_shape(field: str, shape: tuple) -> None:
            actual = getattr(self, field).shape
            if len(actual) != len(shape) or any(e is not None and a != e for a, e in zip(actual, shape)):
                fail(f"{field} has shape {actual}, expected {tuple('*' if e is None else e for e in shape)}")

        # Kinds first: a float index or a complex vertex would pass the shape checks and break later.
        integer_fields = ("triangles", "joint_parents", "eyeball_joints")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, np.ndarray):
                continue
            if field.name in integer_fields and value.dtype.kind not in "iu":
                fail(f"{field.name} must hold integers, got {value.dtype}")
            if field.name not in integer_fields and value.dtype.kind != "f":
                fail(f"{field.name} must hold real numbers, got {value.dtype}")
        if self.semantic_points.triangle.dtype.kind not in "iu":
            fail(f"semantic point triangles must hold integers, got {self.semantic_points.triangle.dtype}")
        v, j = self.template.shape[0] if self.template.ndim == 2 else -1, self.joint_parents.shape[0]
        expect_shape("template", (None, 3))
        expect_shape("identity_basis", (v, 3, None))
        expect_shape("expression_basis", (v, 3, None))
        expect_shape("pose_correctives", (v, 3, None))
        expect_shape("joint_regressor", (j, v))
        expect_shape("skin_weights", (v, j))
        expect_shape("triangles", (None, 3))
        expect_shape("eyeball_joints", (2,))
        expect_shape("eyeball_radii_m", (2,))
        m = self.identity_prior_weights.shape[0]
        expect_shape("identity_prior_means", (m, self.num_identity))
        expect_shape("identity_prior_stds", (m, self.num_identity))
        p = self.pose_correctives.shape[2]
        if p not in (0, 9 * (j - 1)):
            fail(f"pose_correctives has {p} inputs, expected 0 or 9 * (J - 1) = {9 * (j - 1)}")
        if len(self.expression_names) != self.num_expression:
            fail(f"{len(self.expression_names)} expression names for {self.num_expression} channels")
        if len(self.joint_names) != j:
            fail(f"{len(self.joint_names)} joint names for {j} joints")
        parents = self.joint_parents
        if parents[0] != -1 or any(not (0 <= parents[k] < k) for k in range(1, j)):
            fail(f"joint_parents {parents.tolist()} must start with -1 and list each parent before its child")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= v):
            fail("triangle indices out of range")
        if np.any((self.eyeball_joints < 0) | (self.eyeball_joints >= j)):
            fail("eyeball_joints out of range")
        for name in REQUIRED_REGIONS:
            if name not in self.regions:
                fail(f"region mask {name!r} missing")
        for name, mask in self.regions.items():
            if mask.shape != (v,) or mask.dtype != np.bool_:
                fail(f"region {name!r} must be a ({v},) bool mask")
        sp = self.semantic_points
        if sp.triangle.shape != (len(sp),) or sp.barycentric.shape != (len(sp), 3):
            fail("semantic_points arrays do not match their names")
        if len(sp) and (sp.triangle.min() < 0 or sp.triangle.max() >= len(self.triangles)):
            fail("semantic point triangle index out of range")
        missing = [f"ibug_{k:02d}" for k in range(68) if f"ibug_{k:02d}" not in sp.names]
        if missing:
            fail(f"semantic points miss the iBUG-68 points {missing[:4]}...")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                fail(f"{field.name} contains NaN or infinite values")
        if not np.allclose(self.skin_weights.sum(1), 1.0, atol=1e-3):
            fail("skin_weights rows must sum to 1")
        if not np.allclose(self.joint_regressor.sum(1), 1.0, atol=1e-3):
            fail("joint_regressor rows must sum to 1")
        if np.any(self.identity_prior_stds <= 0) or not np.isclose(self.identity_prior_weights.sum(), 1.0, atol=1e-4):
            fail("identity prior needs positive stds and weights summing to 1")
        return self

    # -- storage ---------------------------------------------------------------------
    def save_npz(self, path: str | Path) -> Path:
        """Write the model as an uncompressed-pickle-free ``.npz`` (atomic rename)."""
        path = Path(path)
        arrays = {
            "template": self.template, "identity_basis": self.identity_basis,
            "expression_basis": self.expression_basis, "pose_correctives": self.pose_correctives,
            "joint_regressor": self.joint_regressor, "joint_parents": self.joint_parents,
            "skin_weights": self.skin_weights, "triangles": self.triangles,
            "eyeball_joints": self.eyeball_joints, "eyeball_radii_m": self.eyeball_radii_m,
            "semantic_triangle": self.semantic_points.triangle,
            "semantic_barycentric": self.semantic_points.barycentric,
            "identity_prior_weights": self.identity_prior_weights,
            "identity_prior_means": self.identity_prior_means,
            "identity_prior_stds": self.identity_prior_stds,
        }
        for name, mask in self.regions.items():
            arrays[f"region__{name}"] = mask
        meta = {
            "format": "facecap-head-model", "format_version": FORMAT_VERSION, "name": self.name,
            "expression_names": list(self.expression_names), "joint_names": list(self.joint_names),
            "semantic_names": list(self.semantic_points.names), "attribution": self.attribution,
        }
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> "HeadModel":
        """Read and validate a model written by :meth:`save_npz` (no pickles are loaded)."""
        path = Path(path)
        expected = "a facecap head-model .npz (written by 'python -m fitter_backend head-model')"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise HeadModelError(f"head model file not found: {path}") from None
        except Exception as exc:  # zip errors, truncated files, object arrays
            raise HeadModelError(f"cannot read {path}: expected {expected} ({exc})") from None
        if "meta_json" not in arrays:
            raise HeadModelError(f"{path} is not {expected}: it has no 'meta_json' entry")
        try:
            meta = json.loads(arrays.pop("meta_json").tobytes().decode())
        except (ValueError, RecursionError):
            raise HeadModelError(f"{path} is not {expected}: its metadata is not JSON") from None
        if not isinstance(meta, dict):
            raise HeadModelError(f"{path} is not {expected}: its metadata must be a JSON object")
        for key in ("name", "attribution"):
            if not isinstance(meta.get(key, ""), str):
                raise HeadModelError(f"{path} is not {expected}: metadata {key!r} must be a string")
        for key in ("expression_names", "joint_names", "semantic_names"):
            names = meta.get(key)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise HeadModelError(f"{path} is not {expected}: metadata {key!r} must be a list of names")
        if meta.get("format") != "facecap-head-model" or meta.get("format_version") != FORMAT_VERSION:
            raise HeadModelError(
                f"{path} is not {expected} of format version {FORMAT_VERSION} (found {meta.get('format_version')})")
        regions = {key.split("__", 1)[1]: arrays.pop(key).astype(bool)
                   for key in list(arrays) if key.startswith("region__")}
        try:
            model = cls(
                name=str(meta["name"]),
                template=arrays["template"], identity_basis=arrays["identity_basis"],
                expression_basis=arrays["expression_basis"],
                expression_names=tuple(meta["expression_names"]),
                pose_correctives=arrays["pose_correctives"], joint_regressor=arrays["joint_regressor"],
                joint_parents=arrays["joint_parents"], joint_names=tuple(meta["joint_names"]),
                skin_weights=arrays["skin_weights"], triangles=arrays["triangles"],
                eyeball_joints=arrays["eyeball_joints"], eyeball_radii_m=arrays["eyeball_radii_m"],
                regions=regions,
                semantic_points=SurfacePoints(arrays["semantic_triangle"], arrays["semantic_barycentric"],
                                              tuple(meta["semantic_names"])),
                identity_prior_weights=arrays["identity_prior_weights"],
                identity_prior_means=arrays["identity_prior_means"],
                identity_prior_stds=arrays["identity_prior_stds"],
                attribution=str(meta.get("attribution", "")),
            )
        except KeyError as exc:
            raise HeadModelError(f"{path} is not {expected}: entry {exc} is missing") from None
        return model.validate(path)
