"""Cached synthetic datasets in the user data folder (``<data_dir>/synthetic/``, never the repo).

Training and validation use disjoint identity ids (validation identities start at
``VALIDATION_IDENTITY_START``), so validation measures held-out faces: shape and look.

``python -m onnx_models.dataset --set dense_320 --size 128 --train 8000 --val 500 --workers 2``
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np

from fitter_backend import paths
from fitter_backend.errors import FacecapError
from onnx_models.synthetic import GENERATOR_VERSION, SynthConfig, generate

VALIDATION_IDENTITY_START = 1_000_000
TRAIN_SEED, VALIDATION_SEED = 10_000_000, 20_000_000
SAMPLES_PER_IDENTITY = 12


CHUNK = 250


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """``count`` samples of one split, stored as chunks of CHUNK samples (a stopped build
    keeps its finished chunks and continues from them)."""

    landmark_set: str = "dense_320"
    size_px: int = 128
    count: int = 8000
    split: str = "train"   # "train" or "val"
    roi: str = "affine"    # the crop: SynthConfig.roi

    @property
    def folder(self) -> Path:
        return paths.data_dir() / "synthetic" / f"{self.landmark_set}-{self.size_px}px-{self.roi}-v{GENERATOR_VERSION}-{self.split}"

    def chunk_path(self, chunk: int) -> Path:
        return self.folder / f"chunk{chunk:04d}.npz"

    def chunks(self) -> range:
        return range((self.count + CHUNK - 1) // CHUNK)

    def jobs(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(seeds, identity ids) of the samples of one chunk."""
        index = np.arange(chunk * CHUNK, min((chunk + 1) * CHUNK, self.count))
        identities = index // SAMPLES_PER_IDENTITY
        if self.split == "val":
            return VALIDATION_SEED + index, VALIDATION_IDENTITY_START + identities
        return TRAIN_SEED + index, identities


def build(spec: DatasetSpec, workers: int = 1, progress=print) -> Path:
    """Render the chunks of the dataset that are not cached yet; returns its folder."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    for chunk in spec.chunks():
        path = spec.chunk_path(chunk)
        seeds, identities = spec.jobs(chunk)
        if path.is_file():
            with np.load(path) as cached:
                if len(cached["identity_ids"]) == len(seeds):
                    continue
        started = time.perf_counter()
        data = generate(spec.landmark_set, seeds, identities, SynthConfig(size_px=spec.size_px, roi=spec.roi), workers)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, **data)
        partial.replace(path)
        elapsed = time.perf_counter() - started
        progress(f"{path}: {len(seeds)} samples in {elapsed:.0f} s ({len(seeds) / elapsed:.1f} images/s, "
                 f"{workers} workers)")
    return spec.folder


def load(spec: DatasetSpec) -> dict[str, np.ndarray]:
    """All samples of the dataset as arrays (every chunk must be there)."""
    parts = []
    for chunk in spec.chunks():
        try:
            with np.load(spec.chunk_path(chunk), allow_pickle=False) as data:
                parts.append({key: data[key] for key in data.files})
        except FileNotFoundError:
            raise FacecapError(f"synthetic dataset chunk {spec.chunk_path(chunk)} does not exist; build it with "
                               f"python -m onnx_models.dataset --set {spec.landmark_set} --size {spec.size_px}") from None
    data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return {key: value[:spec.count] for key, value in data.items()}


def resized(data: dict, size_px: int) -> dict:
    """Samples rendered at another size, resized to ``size_px`` (labels scale exactly: pixel
    j spans [j, j + 1), so coordinates scale about the crop corner)."""
    side = data["images"].shape[1]
    if side == size_px:
        return data
    images = np.stack([cv2.resize(image, (size_px, size_px), interpolation=cv2.INTER_AREA)
                       for image in data["images"]])
    return {**data, "images": images, "landmarks_px": data["landmarks_px"] * np.float32(size_px / side)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_models.dataset", description="Render cached datasets.")
    parser.add_argument("--set", default="dense_320")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--roi", default="affine", choices=("affine", "square"), help="the crop (SynthConfig.roi)")
    args = parser.parse_args(argv)
    for split, count in (("val", args.val), ("train", args.train)):
        print(build(DatasetSpec(args.set, args.size, count, split, args.roi), args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
