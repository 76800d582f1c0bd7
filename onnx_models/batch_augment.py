"""Training-time augmentation: every epoch sees each cached render anew.

The cached renders are fixed, so without this the network sees the same pixels every epoch
and learns them (training loss falls while validation stalls). Each sample gets a random
similarity warp (labels follow exactly), a random occluding patch, and the renderer's own
photometric augmentation drawn again.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from onnx_models.appearance import augment


@dataclasses.dataclass(frozen=True)
class BatchAugment:
    """Ranges of the per-sample jitter (0 turns a part off)."""

    rotation_deg: float = 8.0      # uniform +-
    scale: float = 0.08            # log-uniform, +- this fraction
    shift: float = 0.04            # uniform +- this fraction of the crop side
    cutout: float = 0.25           # chance of one occluding patch
    photometric: float = 0.5       # chance of redrawing colour, blur, noise, JPEG


def similarity_warp(size_px: int, rotation_deg: float, scale: float, shift_px: np.ndarray) -> np.ndarray:
    """(2, 3) matrix: rotate and scale about the crop centre, then shift (pixel j spans [j, j + 1))."""
    centre = size_px / 2
    matrix = cv2.getRotationMatrix2D((centre, centre), rotation_deg, scale)
    matrix[:, 2] += shift_px
    return matrix


def warp_sample(image: np.ndarray, landmarks_px: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """image (S, S, 3), landmarks_px (N, 2) -> both moved by the (2, 3) matrix. OpenCV maps
    pixel centres, so labels (corner convention) go through the half-pixel offset."""
    size = image.shape[0]
    warped = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    centres = landmarks_px - 0.5
    moved = centres @ matrix[:, :2].T + matrix[:, 2] + 0.5
    return warped, moved.astype(landmarks_px.dtype)


def cutout(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One rectangle of flat colour or noise, 10-40 % of the side: a stand-in for occluders
    the renderer does not draw (microphones, cups, hands at the edge of the frame)."""
    size = image.shape[0]
    h, w = (rng.uniform(0.1, 0.4, 2) * size).astype(int) + 1
    y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    out = image.copy()
    if rng.random() < 0.5:
        out[y:y + h, x:x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    else:
        out[y:y + h, x:x + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return out


def augment_batch(images: np.ndarray, landmarks_px: np.ndarray, rng: np.random.Generator, chance: float = 1.0,
                  settings: BatchAugment = BatchAugment()) -> tuple[np.ndarray, np.ndarray]:
    """images (B, S, S, 3) uint8 RGB, landmarks_px (B, N, 2) -> new arrays; each sample is
    jittered with probability ``chance``, the rest are kept as rendered."""
    size = images.shape[1]
    out_images, out_landmarks = images.copy(), landmarks_px.copy()
    for b in np.flatnonzero(rng.random(len(images)) < chance):
        matrix = similarity_warp(size, rng.uniform(-1, 1) * settings.rotation_deg,
                                 float(np.exp(rng.uniform(-1, 1) * np.log1p(settings.scale))),
                                 rng.uniform(-1, 1, 2) * settings.shift * size)
        image, points = warp_sample(images[b], landmarks_px[b], matrix)
        if rng.random() < settings.cutout:
            image = cutout(image, rng)
        if rng.random() < settings.photometric:
            image = augment(image, rng)
        out_images[b], out_landmarks[b] = image, points
    return out_images, out_landmarks
