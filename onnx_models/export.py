"""Export a trained checkpoint to ONNX plus the landmark-model JSON sidecar of the landmark
stage (``docs/landmark_models.md``), and check that onnxruntime matches PyTorch.

    python -m onnx_models.export --checkpoint <data_dir>/training/realtime/best.pt \
        --out onnx_models/models/dense_320_mobilenet_v2.onnx

The graph takes ``image`` (B, 3, S, S) normalised RGB and returns ``mu`` (B, 2N) in [-1, 1]
crop coordinates, ``log_sigma`` (B, N) in the same units and ``presence`` (B, 1), a logit;
the batch is dynamic.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from fitter_backend.head_models.open_head import load_open_head
from fitter_backend.models.contract import AFFINE_ANCHORS
from onnx_models.dataset import DatasetSpec, load, resized
from onnx_models.landmark_sets import load_landmark_set
from onnx_models.networks import IMAGENET_WEIGHTS
from onnx_models.synthetic import SynthConfig
from onnx_models.train import MEAN, STD, TrainConfig, load_checkpoint, to_tensor

MAX_DIFFERENCE = 1e-4
OUTPUTS = ("mu", "log_sigma", "presence")
#: Square ROI side / longer side of the face detector's box (BlazeFace covers the face, the
#: dense sets the whole head and neck): the median over held-out synthetic crops, measured by
#: ``python -m onnx_models.evaluate --detection-scale`` (2.07, quartiles 1.88-2.31, 156 of 200 found).
SCALE_FROM_DETECTION = 2.07


def affine_targets(landmark_set, val: dict, size_px: int) -> dict[str, list[float]]:
    """Mean anchor positions (fractions of the crop side) on near-frontal validation samples
    with both eyes visible: where the real-time affine ROI should put them."""
    anchors = landmark_set.anchors()
    points = val["landmarks_px"] / size_px
    frontal = val["visible"][:, anchors["right_eye"] + anchors["left_eye"]].all(axis=1)
    chosen = points[frontal] if frontal.sum() >= 10 else points
    targets = {name: chosen[:, idx].mean(axis=(0, 1)) for name, idx in anchors.items()}
    # Symmetric about the vertical centre line of the crop.
    mid = (targets["right_eye"][0] + targets["left_eye"][0]) / 2
    targets = {k: np.array([v[0] - mid + 0.5, v[1]]) for k, v in targets.items()}
    eye_y = (targets["right_eye"][1] + targets["left_eye"][1]) / 2
    targets["right_eye"][1] = targets["left_eye"][1] = eye_y
    targets["mouth"][0] = 0.5
    return {k: [round(float(c), 4) for c in v] for k, v in targets.items()}


def metadata(net_name: str, landmark_set, size_px: int, targets: dict, provenance: dict, crop: str = "square") -> dict:
    return {
        "format": "facecap-landmark-model", "format_version": 1,
        "name": net_name, "landmark_set": landmark_set.name, "num_landmarks": len(landmark_set),
        "input": {"name": "image", "layout": "NCHW", "size_px": size_px, "mean": list(MEAN), "std": list(STD)},
        "outputs": {"mu": {"name": "mu", "values_per_point": 2, "units": "normalised"},
                    "log_sigma": {"name": "log_sigma", "units": "normalised"},
                    "presence": {"name": "presence", "activation": "sigmoid"}},
        "presence_threshold": 0.5,
        "sigma": {"source": "output"},
        "regions": {k: v.tolist() for k, v in landmark_set.regions.items()},
        "semantic_points": landmark_set.semantic,
        "anchors": landmark_set.anchors(),
        "roi": {"scale_from_detection": SCALE_FROM_DETECTION, "scale_from_landmarks": 1.15,
                "affine_targets": targets, "crop": crop},
        "embeddings": {"open_head": {"triangle": landmark_set.points.triangle.tolist(),
                                     "barycentric": np.round(landmark_set.points.barycentric.astype(float), 6).tolist()}},
        "provenance": provenance,
    }


class _Export(torch.nn.Module):
    """Names the three outputs for the exporter."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net(image)


def export_onnx(net: torch.nn.Module, size_px: int, path: Path) -> None:
    example = torch.zeros(1, 3, size_px, size_px)
    torch.onnx.export(_Export(net).eval(), (example,), str(path), input_names=["image"],
                      output_names=list(OUTPUTS), opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUTS}})


def compare(net: torch.nn.Module, path: Path, images: np.ndarray) -> float:
    """Max |onnxruntime - PyTorch| over all outputs for a batch of uint8 images."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = to_tensor(images)
    with torch.no_grad():
        reference = [t.numpy() for t in net.eval()(x)]
    got = session.run(list(OUTPUTS), {"image": x.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(reference, got)))


def train_command(config: TrainConfig) -> str:
    """The training command line of one run."""
    return "python -m onnx_models.train " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
        for k, v in config.__dict__.items() if v is not None and v is not False)


def export(checkpoint: Path, out: Path, val: dict | None = None, progress=print) -> Path:
    """Write ``out`` (.onnx) and its .json sidecar; ``val``: validation arrays (default: the
    cached validation set of the checkpoint's configuration) for the affine targets and the check."""
    net, config, history, lineage = load_checkpoint(checkpoint)
    landmark_set = load_landmark_set(config.landmark_set, load_open_head())
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(net, config.size_px, out)
    if val is None:
        val = resized(load(DatasetSpec(config.landmark_set, config.data_size_px, config.val_count, "val", config.roi)),
                      config.size_px)
    difference = compare(net, out, val["images"][:16])
    if difference > MAX_DIFFERENCE:
        raise RuntimeError(f"{out}: onnxruntime differs from PyTorch by {difference:.2e} (> {MAX_DIFFERENCE})")
    best = min(history, key=lambda r: r["val_nme_percent"]) if history else {}
    provenance = {
        "trained_by": train_command(config),
        "exported_by": f"python -m onnx_models.export --checkpoint {checkpoint.name} --out {out.name}",
        "architecture": config.arch, "width": config.width, "last_channels": config.last_channels,
        "training_data": f"synthetic renders of the open head (onnx_models.synthetic), {config.train_count} train / "
                         f"{config.val_count} held-out-identity validation images of {config.size_px} px",
        "best_epoch": best.get("epoch"), "val_nme_percent": best.get("val_nme_percent"),
        "val_presence_found_percent": best.get("val_presence_found_percent"),
        "val_presence_rejected_percent": best.get("val_presence_rejected_percent"),
        "onnx_vs_pytorch_max_abs": difference,
        "onnx_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "embedding_head_topology_sha256": landmark_set.topology,
        "licence": "weights trained by this project on CC0 MakeHuman-derived synthetic data",
    }
    if lineage:  # each run continued from the one before (--init-from its best.pt)
        provenance["started_from"] = [train_command(c) for c in lineage]
    if any(c.pretrained for c in lineage + [config]):
        provenance["initial_weights"] = IMAGENET_WEIGHTS[config.arch].provenance()
        provenance["licence"] += f"; backbone fine-tuned from {IMAGENET_WEIGHTS[config.arch].licence} ImageNet weights"
    # Affine crops put the anchors where the generator put them; squares measure them.
    targets = dict(zip(AFFINE_ANCHORS, (list(t) for t in SynthConfig.affine_targets))) \
        if config.roi == "affine" else affine_targets(landmark_set, val, config.size_px)
    meta = metadata(out.stem, landmark_set, config.size_px, targets, provenance, config.roi)
    out.with_suffix(".json").write_text(json.dumps(meta, separators=(",", ":")) + "\n", encoding="utf-8")
    progress(f"{out}: {out.stat().st_size / 1e6:.1f} MB, onnxruntime vs PyTorch max |diff| {difference:.1e}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_models.export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    export(args.checkpoint, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
