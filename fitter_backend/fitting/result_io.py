"""Fit results on disk: per-frame parameters as .npz and a JSON summary beside them.

``fit.npz`` keys: identity (I,), expression (N, E), joint_rotations (N, J, 3) axis-angle,
translation_m (N, 3), focal_px (C,), camera_rotation (C, 3), camera_translation_m (C, 3),
image_size_px (C, 2), frame_rms (N,), frame_flags (N,) comma-joined flags, expression_names,
joint_names. ``fit.json`` holds the report, names and per-frame flags for people and tools.
Both are written to temporary names and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.fitting.sequence import FitResult
from fitter_backend.head_models.head_model import HeadModel


PER_FRAME = ("expression", "joint_rotations", "translation_m")


def _check_finite(arrays: dict[str, np.ndarray]) -> None:
    """A result the add-on cannot import (an inf translation from an absurd focal) is an error,
    never written. frame_rms is NaN for frames without landmarks, by design."""
    for name, values in arrays.items():
        if values.dtype.kind != "f" or name == "frame_rms" or np.isfinite(values).all():
            continue
        where = ""
        if name in PER_FRAME:
            frames = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
            where = f" (frame {', '.join(map(str, frames[:5]))})"
        raise FitError(f"the fit is not finite: {name}{where}; check the camera's focal length and the landmarks")


def save_fit_result(result: FitResult, model: HeadModel, folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = result.params
    arrays = dict(
        identity=params.identity, expression=params.expression, joint_rotations=params.rotations,
        translation_m=params.translation_m, focal_px=params.cameras.focal_px,
        camera_rotation=params.cameras.rotation, camera_translation_m=params.cameras.translation_m,
        image_size_px=params.cameras.image_size_px, frame_rms=result.frame_rms,
        frame_flags=np.array([",".join(f) for f in result.flags]),
        expression_names=np.array(model.expression_names), joint_names=np.array(model.joint_names),
    )
    _check_finite(arrays)
    npz_path, json_path = folder / "fit.npz", folder / "fit.json"
    partial = folder / "fit.npz.partial"
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    partial.replace(npz_path)
    summary = {"format": "facecap-fit", "format_version": 1, "head_model": model.name,
               "expression_names": list(model.expression_names), "joint_names": list(model.joint_names),
               "frame_flags": result.flags, "report": result.report}
    partial_json = folder / "fit.json.partial"
    partial_json.write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
    partial_json.replace(json_path)
    return npz_path, json_path
