"""The landmark-model contract: what the JSON sidecar next to an ONNX model must say.

The format is documented in ``docs/landmark_models.md``; this module parses and validates
it strictly (JSON only, every field checked, one message naming the file and the field).
Coordinates in a crop use OpenCV's convention: integer coordinates are pixel centres.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fitter_backend.models.errors import LandmarkModelError

FORMAT = "facecap-landmark-model"
FORMAT_VERSION = 1
MU_UNITS = ("input_px", "normalised")
ORIGINS = ("pixel_corner", "pixel_centre")
AFFINE_ANCHORS = ("right_eye", "left_eye", "mouth")
ROI_CROPS = ("square", "affine")
#: Named contours a model may declare, each ordered from the subject's right corner to the left:
#: the inner edges of the upper and lower lip (set-up places them on the head's inner-lip edge,
#: landmarks/embedding.py).
CONTOURS = ("inner_lip_upper", "inner_lip_lower")


class JsonFields:
    """Typed access to a parsed JSON object with messages naming the file and field path."""

    def __init__(self, data: Any, source: str, path: str = ""):
        self.data, self.source, self.path = data, source, path
        if not isinstance(data, dict):
            self.fail(f"expected a JSON object, got {type(data).__name__}")

    def fail(self, message: str, key: str = "") -> None:
        where = ".".join(p for p in (self.path, key) if p) or "top level"
        raise LandmarkModelError(f"{self.source}: {where}: {message}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                self.fail("missing required field", key)
            return default
        return self.data[key]

    def obj(self, key: str) -> "JsonFields":
        return JsonFields(self.raw(key), self.source, ".".join(p for p in (self.path, key) if p))

    def str(self, key: str, choices: tuple[str, ...] | None = None, default: Any = ...) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or (choices and value not in choices):
            self.fail(f"expected {'one of ' + str(choices) if choices else 'a string'}, got {value!r}", key)
        return value

    def int(self, key: str, minimum: int = 1, default: Any = ...) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"expected an integer >= {minimum}, got {value!r}", key)
        return value

    def float(self, key: str, minimum: float = -math.inf, default: Any = ...) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < minimum:
            self.fail(f"expected a finite number >= {minimum}, got {value!r}", key)
        return float(value)

    def floats(self, key: str, length: int | None = None) -> tuple[float, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or (length is not None and len(value) != length) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            self.fail(f"expected a list of {length or 'some'} finite numbers, got {str(value)[:60]}", key)
        return tuple(float(v) for v in value)

    def indices(self, key: str, count: int, value: Any = ...) -> tuple[int, ...]:
        value = self.raw(key) if value is ... else value
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < count for v in value):
            self.fail(f"expected a non-empty list of landmark indices in [0, {count}), got {str(value)[:60]}", key)
        return tuple(value)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The image tensor: ``value = (pixel / white_level - mean) / std`` per RGB channel."""

    name: str
    layout: str                      # "NHWC" or "NCHW"
    size_px: int                     # square side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def tensor(self, crops: np.ndarray, white_level: float | None = None) -> np.ndarray:
        """crops (B, S, S, 3) uint8 / uint16 (white level 255 / 65535 unless given) or float
        in [0, 1] -> float32 tensor in the model's layout."""
        if crops.ndim != 4 or crops.shape[1:] != (self.size_px, self.size_px, 3):
            raise LandmarkModelError(
                f"model input {self.name!r} expects crops (B, {self.size_px}, {self.size_px}, 3), got {crops.shape}")
        if white_level is None:
            white_level = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(crops.dtype, 1.0)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        scale = 1.0 / (np.float32(white_level) * std)
        tensor = crops.astype(np.float32) * scale - mean / std
        return np.ascontiguousarray(tensor.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else tensor


@dataclasses.dataclass(frozen=True)
class MuSpec:
    """Landmark positions: ``values_per_point`` numbers per landmark, x and y first."""

    name: str
    values_per_point: int
    units: str     # "input_px" (pixels of the model input) or "normalised" ([-1, 1] across the crop)
    origin: str    # for input_px: "pixel_corner" (0 = left edge of pixel 0) or "pixel_centre"


@dataclasses.dataclass(frozen=True)
class LogSigmaSpec:
    """Per-landmark log sigma (natural log, isotropic, one value per landmark)."""

    name: str
    units: str     # same choices as MuSpec.units


@dataclasses.dataclass(frozen=True)
class PresenceSpec:
    name: str
    activation: str  # "sigmoid" (output is a logit) or "none" (already a probability)


@dataclasses.dataclass(frozen=True)
class RoiSpec:
    """What crop the model expects.

    scale_from_detection: square side / max(face box width, height) of the face detector.
    scale_from_landmarks: square side / max(extent of this model's landmarks).
    affine_targets: where the real-time affine ROI puts the anchor points, as fractions of
    the crop side (x, y); keys ``right_eye``, ``left_eye``, ``mouth``.
    crop: "square" (offline squares; affine only in real-time mode) or "affine": the model was
    trained on affine crops only, so every crop is affine, from the detector's eye and mouth
    keypoints after a detection.
    """

    scale_from_detection: float
    scale_from_landmarks: float
    affine_targets: dict[str, tuple[float, float]]
    crop: str = "square"


@dataclasses.dataclass(frozen=True)
class LandmarkMetadata:
    source: str
    name: str
    landmark_set: str
    num_landmarks: int
    input: InputSpec
    mu: MuSpec
    log_sigma: LogSigmaSpec | None
    presence: PresenceSpec | None
    presence_threshold: float
    sigma_roi_fraction: np.ndarray | None    # (N,) when sigma is derived, not predicted
    regions: dict[str, tuple[int, ...]]
    semantic_points: dict[str, int]
    anchors: dict[str, tuple[int, ...]]      # landmark indices averaged for each affine anchor
    roi: RoiSpec
    embeddings: dict[str, Any]
    provenance: dict[str, Any]
    #: Ordered landmark contours by name (:data:`CONTOURS`), corner to corner.
    contours: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkMetadata":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LandmarkModelError(f"landmark model metadata {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise LandmarkModelError(f"landmark model metadata {path} is unreadable: {error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise LandmarkModelError(f"landmark model metadata {path} is not valid JSON: {error}") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: Any, source: str) -> "LandmarkMetadata":
        top = JsonFields(data, source)
        if top.raw("format") != FORMAT:
            top.fail(f"expected {FORMAT!r}, got {top.raw('format')!r}", "format")
        if top.raw("format_version") != FORMAT_VERSION:
            top.fail(f"this backend reads version {FORMAT_VERSION}, got {top.raw('format_version')!r}",
                     "format_version")
        count = top.int("num_landmarks")

        spec = top.obj("input")
        layout = spec.str("layout", ("NHWC", "NCHW"))
        input_spec = InputSpec(spec.str("name"), layout, spec.int("size_px", 8),
                               spec.floats("mean", 3), spec.floats("std", 3))
        if min(input_spec.std) <= 0:
            spec.fail("std must be positive", "std")

        outputs = top.obj("outputs")
        mu = outputs.obj("mu")
        mu_spec = MuSpec(mu.str("name"), mu.int("values_per_point", 2), mu.str("units", MU_UNITS),
                         mu.str("origin", ORIGINS, default="pixel_centre"))
        log_sigma = None
        if outputs.has("log_sigma"):
            ls = outputs.obj("log_sigma")
            log_sigma = LogSigmaSpec(ls.str("name"), ls.str("units", MU_UNITS))
        presence = None
        if outputs.has("presence"):
            pr = outputs.obj("presence")
            presence = PresenceSpec(pr.str("name"), pr.str("activation", ("sigmoid", "none")))

        regions = {}
        if top.has("regions"):
            region_fields = top.obj("regions")
            regions = {name: region_fields.indices(name, count) for name in region_fields.data}

        sigma_fraction = None
        sigma = top.obj("sigma")
        sigma_source = sigma.str("source", ("output", "derived"))
        if sigma_source == "output" and log_sigma is None:
            sigma.fail("source 'output' needs outputs.log_sigma", "source")
        if sigma_source == "derived":
            if log_sigma is not None:
                sigma.fail("a model with a log_sigma output must use source 'output'", "source")
            sigma.str("unit", ("roi_fraction",))
            default = sigma.float("default", 1e-6)
            sigma_fraction = np.full(count, default, np.float32)
            per_region = sigma.obj("per_region")
            # Later regions win where regions overlap; the order is the JSON order.
            for region in per_region.data:
                if region not in regions:
                    per_region.fail(f"no region {region!r} in 'regions'", region)
                sigma_fraction[list(regions[region])] = per_region.float(region, 1e-6)

        semantic = {}
        if top.has("semantic_points"):
            sem = top.obj("semantic_points")
            semantic = {name: sem.indices(name, count, [sem.raw(name)])[0] for name in sem.data}

        anchor_fields = top.obj("anchors")
        anchors = {name: anchor_fields.indices(name, count) for name in AFFINE_ANCHORS}

        roi = top.obj("roi")
        targets = roi.obj("affine_targets")
        roi_spec = RoiSpec(roi.float("scale_from_detection", 0.5), roi.float("scale_from_landmarks", 0.5),
                           {name: targets.floats(name, 2) for name in AFFINE_ANCHORS},
                           roi.str("crop", ROI_CROPS, default="square"))

        embeddings = top.raw("embeddings", {})
        if not isinstance(embeddings, dict):
            top.fail("expected an object keyed by head model name", "embeddings")
        emb_fields = top.obj("embeddings") if embeddings else None
        for head in embeddings:
            _check_embedding(emb_fields.obj(head), count)

        contours = {}
        if top.has("contours"):
            contour_fields = top.obj("contours")
            for name in contour_fields.data:
                if name not in CONTOURS:
                    contour_fields.fail(f"unknown contour {name!r} (known: {', '.join(CONTOURS)})", name)
                contours[name] = contour_fields.indices(name, count)
                if len(contours[name]) < 3:
                    contour_fields.fail("a contour needs at least 3 landmarks (two corners and one between)", name)

        provenance = top.raw("provenance", {})
        if not isinstance(provenance, dict):
            top.fail("expected an object", "provenance")
        return cls(source, top.str("name"), top.str("landmark_set"), count, input_spec, mu_spec, log_sigma,
                   presence, top.float("presence_threshold", 0.0, default=0.5), sigma_fraction, regions,
                   semantic, anchors, roi_spec, embeddings, provenance, contours)

    def mu_values(self) -> int:
        """Numbers per sample in the mu output."""
        return self.num_landmarks * self.mu.values_per_point


def _check_embedding(fields: JsonFields, count: int) -> None:
    """An embedding is either explicit (triangle + barycentric per landmark) or computed."""
    if fields.has("computed_by"):
        fields.str("computed_by")
        return
    triangle = fields.raw("triangle")
    barycentric = fields.raw("barycentric")
    if not (isinstance(triangle, list) and len(triangle) == count
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in triangle)):
        fields.fail(f"expected {count} non-negative triangle indices", "triangle")
    try:
        weights = np.asarray(barycentric, dtype=float)
    except (TypeError, ValueError):
        weights = None
    if weights is None or weights.shape != (count, 3) or not np.all(np.isfinite(weights)) \
            or np.abs(weights.sum(1) - 1).max() > 1e-4:
        fields.fail(f"expected ({count}, 3) barycentric weights with rows summing to 1", "barycentric")
