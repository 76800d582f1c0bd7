"""Face detection with BlazeFace (MediaPipe's short-range detector) converted to ONNX.

The detector sees 128x128 squares: the whole image letterboxed first, then, only when that
finds nothing, overlapping windows of half, quarter, ... the image's longer side (faces too
small for the whole-image pass). Boxes come back in image pixels (project convention, see
:mod:`fitter_backend.roi.crop`) with six keypoints and a score; overlapping boxes merge by
MediaPipe's weighted non-maximum suppression. Metadata format: docs/landmark_models.md.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from fitter_backend.models.contract import JsonFields
from fitter_backend.models.errors import LandmarkModelError
from fitter_backend.models.onnx_session import create_session
from fitter_backend.roi.regions import SquareRoi

FORMAT = "facecap-face-detector"
MIN_WINDOW_PX = 256  # BlazeFace wants faces >= ~20% of its input: ~50 px faces at this window size
WINDOW_BATCH = 32
#: Most windows one frame's search may run: the search stops before a level that would pass it.
#: Frames up to 1920x1080 search every level down to MIN_WINDOW_PX (32 windows); a 4K frame
#: stops at 960 px windows (faces from ~190 px), a 20000 px one at 5000 px: without the bound a
#: 4K frame without a face ran 155 windows and a 20000x20000 image ~16,000.
MAX_WINDOWS_PER_FRAME = 64


@dataclasses.dataclass(frozen=True)
class FaceCandidate:
    """box_px (x0, y0, x1, y1) image pixels; score in [0, 1]; keypoints_px (K, 2) in the
    detector's keypoint order (``FaceDetector.keypoint_names``)."""

    box_px: np.ndarray
    score: float
    keypoints_px: np.ndarray

    @property
    def size_px(self) -> float:
        return float(max(self.box_px[2] - self.box_px[0], self.box_px[3] - self.box_px[1]))

    @property
    def centre_px(self) -> np.ndarray:
        return (self.box_px[:2] + self.box_px[2:]) / 2


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (4,) box a with (M, 4) boxes b -> (M,)."""
    width = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = width * height
    area = lambda box: (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float) -> list[FaceCandidate]:
    """MediaPipe's WEIGHTED suppression: each cluster of boxes overlapping the best remaining
    one by more than ``iou`` merges into their score-weighted mean, keeping the best score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), bool)
    merged = []
    for best in range(len(scores)):
        if not remaining[best]:
            continue
        cluster = remaining & (box_iou(boxes[best], boxes) > iou)
        cluster[best] = True
        weights = scores[cluster] / scores[cluster].sum()
        merged.append(FaceCandidate((boxes[cluster] * weights[:, None]).sum(0), float(scores[best]),
                                    (keypoints[cluster] * weights[:, None, None]).sum(0)))
        remaining &= ~cluster
    return merged


class FaceDetector:
    """BlazeFace ONNX model plus its metadata (anchors, decoding, thresholds)."""

    def __init__(self, session, metadata: dict, source: str):
        fields = JsonFields(metadata, source)
        if fields.raw("format") != FORMAT or fields.raw("format_version") != 1:
            fields.fail(f"expected format {FORMAT!r} version 1", "format")
        spec = fields.obj("input")
        self.input_name = spec.str("name")
        self.size_px = spec.int("size_px", 8)
        if spec.str("layout", ("NHWC",)) != "NHWC":
            spec.fail("only NHWC is supported", "layout")
        self.mean = np.asarray(spec.floats("mean", 3), np.float32)
        self.std = np.asarray(spec.floats("std", 3), np.float32)
        outputs = fields.obj("outputs")
        self.boxes_name = outputs.obj("boxes").str("name")
        self.values_per_anchor = outputs.obj("boxes").int("values_per_anchor", 4)
        self.scores_name = outputs.obj("scores").str("name")
        self.score_clip = outputs.obj("scores").float("clip", 0.0)
        self.keypoint_names = tuple(fields.raw("keypoints"))
        if 4 + 2 * len(self.keypoint_names) != self.values_per_anchor:
            fields.fail(f"{len(self.keypoint_names)} keypoints do not fill {self.values_per_anchor} values", "keypoints")
        anchors = fields.obj("anchors")
        self.anchors = ssd_anchors(self.size_px, anchors.raw("strides"), anchors.raw("per_cell"),
                                   anchors.float("offset", 0.0))
        self.box_scale = fields.float("box_scale_px", 1e-6)
        self.min_score = fields.float("min_score", 0.0)
        self.nms_iou = fields.float("nms_iou", 0.0)
        self.session, self.source = session, source
        graph_inputs = {i.name: i.shape for i in session.get_inputs()}
        graph_outputs = {o.name: o.shape for o in session.get_outputs()}
        if self.input_name not in graph_inputs or list(graph_inputs[self.input_name][1:]) != [self.size_px] * 2 + [3]:
            raise LandmarkModelError(f"{source}: the ONNX graph's inputs {graph_inputs} do not match input "
                                     f"{self.input_name!r} (batch, {self.size_px}, {self.size_px}, 3)")
        expected = {self.boxes_name: [len(self.anchors), self.values_per_anchor], self.scores_name: [len(self.anchors), 1]}
        for name, shape in expected.items():
            if name not in graph_outputs or list(graph_outputs[name][1:]) != shape:
                raise LandmarkModelError(f"{source}: output {name!r} should be (batch, {shape[0]}, {shape[1]}); "
                                         f"the ONNX graph has {graph_outputs}")

    @classmethod
    def load(cls, onnx_path: str | Path, metadata_path: str | Path | None = None, device: str = "cpu") -> "FaceDetector":
        onnx_path = Path(onnx_path)
        metadata_path = Path(metadata_path) if metadata_path else onnx_path.with_suffix(".json")
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LandmarkModelError(f"face detector metadata {metadata_path} does not exist") from None
        except (OSError, ValueError) as error:
            raise LandmarkModelError(f"face detector metadata {metadata_path} is unreadable JSON: {error}") from None
        return cls(create_session(onnx_path, device), metadata, str(metadata_path))

    def _run(self, squares: list[tuple[np.ndarray, SquareRoi]], white_level: float) -> list[FaceCandidate]:
        """Detect in the given (image, square) windows at once; merge in image pixels."""
        crops, transforms = [], []
        for image, square in squares:
            crop, transform = square.crop(image, self.size_px)
            crops.append(crop)
            transforms.append(transform)
        tensor = (np.stack(crops).astype(np.float32) / (white_level * self.std) - self.mean / self.std)
        raw_boxes, raw_scores = self.session.run([self.boxes_name, self.scores_name], {self.input_name: tensor})
        logits = np.clip(raw_scores[..., 0], -self.score_clip, self.score_clip) if self.score_clip else raw_scores[..., 0]
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        boxes, keypoints, kept = [], [], []
        for window, transform in enumerate(transforms):
            hits = np.flatnonzero(scores[window] >= self.min_score)
            if not hits.size:
                continue
            raw = raw_boxes[window, hits] / self.box_scale
            anchor = self.anchors[hits]
            centre = (raw[:, :2] + anchor) * self.size_px  # crop pixels
            half = raw[:, 2:4] * self.size_px / 2
            corners = transform.to_image(np.stack([centre - half, centre + half], 1))
            points = transform.to_image((raw[:, 4:].reshape(len(hits), -1, 2) + anchor[:, None]) * self.size_px)
            boxes.append(corners.reshape(-1, 4))
            keypoints.append(points)
            kept.append(scores[window, hits])
        if not boxes:
            return []
        return weighted_nms(np.concatenate(boxes), np.concatenate(keypoints), np.concatenate(kept), self.nms_iou)

    def detect(self, image: np.ndarray, white_level: float | None = None) -> list[FaceCandidate]:
        """Faces in an (H, W, 3) RGB image, best score first; [] when there are none."""
        if white_level is None:
            white_level = 65535.0 if image.dtype == np.uint16 else 255.0
        height, width = image.shape[:2]
        side = max(width, height)
        found = self._run([(image, SquareRoi((width / 2, height / 2), side))], white_level)
        window, budget = side / 2, MAX_WINDOWS_PER_FRAME - 1
        while not found and window >= MIN_WINDOW_PX:
            squares = sliding_windows(width, height, window)
            budget -= len(squares)
            if budget < 0:
                break
            for start in range(0, len(squares), WINDOW_BATCH):
                found += self._run([(image, square) for square in squares[start:start + WINDOW_BATCH]], white_level)
            if found:  # merge faces seen by several overlapping windows
                found = weighted_nms(np.array([c.box_px for c in found]), np.array([c.keypoints_px for c in found]),
                                     np.array([c.score for c in found]), self.nms_iou)
            window /= 2
        return sorted(found, key=lambda c: -c.score)


def sliding_windows(width: int, height: int, side: float) -> list[SquareRoi]:
    """Squares of ``side`` covering the image with half-window overlap."""
    def centres(length: float) -> np.ndarray:
        if length <= side:
            return np.array([length / 2])
        count = math.ceil((length - side) / (side / 2)) + 1
        return np.linspace(side / 2, length - side / 2, count)
    return [SquareRoi((float(x), float(y)), side) for y in centres(height) for x in centres(width)]


def ssd_anchors(input_px: int, strides, per_cell, offset: float) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1] for fixed-size SSD anchors, layer by layer, cells in
    row-major order, ``per_cell`` identical anchors per cell."""
    if not (isinstance(strides, list) and isinstance(per_cell, list) and len(strides) == len(per_cell) and strides):
        raise LandmarkModelError(f"detector anchors: strides {strides!r} and per_cell {per_cell!r} must be equal-length lists")
    layers = []
    for stride, count in zip(strides, per_cell):
        cells = math.ceil(input_px / stride)
        y, x = np.mgrid[0:cells, 0:cells]
        centres = (np.stack([x, y], -1).reshape(-1, 2) + offset) / cells
        layers.append(np.repeat(centres, count, axis=0))
    return np.concatenate(layers)
