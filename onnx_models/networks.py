"""The landmark networks in plain PyTorch (no torchvision or timm): ResNet-101 for offline
use and MobileNetV2 for real time. Both end in one linear layer with three numbers per
landmark: x, y (normalised, [-1, 1] across the crop) and log sigma (same units).

Input: (B, 3, S, S) float, already normalised as the model's metadata says.
Output: ``mu`` (B, 2N) as x0, y0, x1, y1, ... and ``log_sigma`` (B, N).
"""
from __future__ import annotations

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


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


#: (expansion, channels, repeats, first stride) of MobileNetV2's bottleneck stages.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2Landmarks(nn.Module):
    """MobileNetV2 backbone (width multiplier ``width``) with a landmark head.
    ``last_channels`` is the final 1x1 convolution's width (1280 in the original)."""

    def __init__(self, num_landmarks: int, width: float = 1.0, last_channels: int = 1280):
        super().__init__()
        channels = _divisible(32 * width)
        layers = [_conv_bn(3, channels, 3, 2)]
        for expand, cout, repeats, stride in MOBILENET_V2_STAGES:
            cout = _divisible(cout * width)
            for k in range(repeats):
                layers.append(InvertedResidual(channels, cout, stride if k == 0 else 1, expand))
                channels = cout
        layers.append(_conv_bn(channels, last_channels, 1, 1))
        self.features = nn.Sequential(*layers)
        self.head = LandmarkHead(last_channels, num_landmarks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


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


ARCHITECTURES = ("mobilenet_v2", "resnet101", "resnet50")


def build_network(arch: str, num_landmarks: int, width: float = 1.0, last_channels: int = 1280) -> nn.Module:
    if arch == "mobilenet_v2":
        return MobileNetV2Landmarks(num_landmarks, width, last_channels)
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
