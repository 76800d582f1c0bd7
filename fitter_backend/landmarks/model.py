"""A probabilistic landmark model: ONNX graph plus its metadata contract.

``predict`` turns a batch of square crops into per-landmark positions mu (crop pixels,
project convention: pixel j spans [j, j + 1)), isotropic sigma (crop pixels) and a face
presence probability. Models that predict log sigma (the dense networks) use it; models that
do not (MediaPipe's mesh) get sigma = measured fraction of the crop side per landmark.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fitter_backend.models.contract import LandmarkMetadata
from fitter_backend.models.errors import LandmarkModelError
from fitter_backend.models.onnx_session import create_session, session_device


def _per_sample(shape) -> int | None:
    """Values per batch item of a graph output shape, None when some dimension is symbolic."""
    dims = shape[1:]
    return math.prod(dims) if all(isinstance(d, int) for d in dims) else None


class LandmarkModel:
    def __init__(self, session, metadata: LandmarkMetadata, onnx_path: Path):
        self.session, self.metadata, self.onnx_path = session, metadata, onnx_path
        self.device = session_device(session)
        self._check_graph()
        self._outputs = [metadata.mu.name] + [spec.name for spec in (metadata.log_sigma, metadata.presence) if spec]

    @classmethod
    def load(cls, onnx_path: str | Path, metadata_path: str | Path | None = None, device: str = "cpu") -> "LandmarkModel":
        """Load and cross-check ``onnx_path`` with its metadata (default: same name, .json).
        device: "cpu" (default), "gpu" or "auto" (see :func:`create_session`)."""
        onnx_path = Path(onnx_path)
        metadata = LandmarkMetadata.load(metadata_path or onnx_path.with_suffix(".json"))
        return cls(create_session(onnx_path, device), metadata, onnx_path)

    @property
    def input_size(self) -> int:
        return self.metadata.input.size_px

    @property
    def num_landmarks(self) -> int:
        return self.metadata.num_landmarks

    def _fail(self, message: str) -> None:
        raise LandmarkModelError(f"{self.onnx_path} does not match its metadata {self.metadata.source}: {message}")

    def _check_graph(self) -> None:
        meta = self.metadata
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if meta.input.name not in inputs:
            self._fail(f"no input {meta.input.name!r} (the graph has {list(inputs)})")
        size = meta.input.size_px
        expected = [size, size, 3] if meta.input.layout == "NHWC" else [3, size, size]
        shape = inputs[meta.input.name]
        if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
            self._fail(f"input {meta.input.name!r} has shape {shape}, metadata says (batch, {', '.join(map(str, expected))})")
        wanted = {meta.mu.name: meta.mu_values()}
        if meta.log_sigma:
            wanted[meta.log_sigma.name] = meta.num_landmarks
        if meta.presence:
            wanted[meta.presence.name] = 1
        for name, values in wanted.items():
            if name not in outputs:
                self._fail(f"no output {name!r} (the graph has {list(outputs)})")
            have = _per_sample(outputs[name])
            if have is not None and have != values:
                self._fail(f"output {name!r} has shape {outputs[name]} = {have} values per crop, metadata "
                           f"needs {values}")

    def predict(self, crops: np.ndarray, white_level: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """crops (B, S, S, 3) RGB (uint8, uint16 or float in [0, 1]; S = input_size) ->
        mu_px (B, N, 2) and sigma_px (B, N) in crop pixels, presence (B,) in [0, 1]."""
        meta = self.metadata
        tensor = meta.input.tensor(np.asarray(crops), white_level)
        batch = len(tensor)
        results = dict(zip(self._outputs, self.session.run(self._outputs, {meta.input.name: tensor})))
        for name, values in [(meta.mu.name, meta.mu_values())] + (
                [(meta.log_sigma.name, meta.num_landmarks)] if meta.log_sigma else []) + (
                [(meta.presence.name, 1)] if meta.presence else []):
            if results[name].size != batch * values:
                self._fail(f"output {name!r} returned shape {results[name].shape} for {batch} crops, "
                           f"expected {values} values per crop")
        size = meta.input.size_px
        raw = results[meta.mu.name].reshape(batch, meta.num_landmarks, meta.mu.values_per_point)[..., :2]
        if meta.mu.units == "normalised":
            mu = (raw + 1.0) * (size / 2)
        else:
            mu = raw + (0.5 if meta.mu.origin == "pixel_centre" else 0.0)
        if meta.log_sigma:
            sigma = np.exp(results[meta.log_sigma.name].reshape(batch, meta.num_landmarks))
            if meta.log_sigma.units == "normalised":
                sigma = sigma * (size / 2)
        else:
            sigma = np.broadcast_to(meta.sigma_roi_fraction * size, (batch, meta.num_landmarks))
        if meta.presence:
            presence = results[meta.presence.name].reshape(batch).astype(np.float64)
            if meta.presence.activation == "sigmoid":
                presence = 1.0 / (1.0 + np.exp(-np.clip(presence, -60, 60)))
        else:
            presence = np.ones(batch)
        return mu.astype(np.float32), np.array(sigma, dtype=np.float32), presence.astype(np.float32)
