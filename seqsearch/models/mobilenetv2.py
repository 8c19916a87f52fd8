"""MobileNetV2, CIFAR layout: stride-1 stem and the first stride-2 stage changed to stride 1."""

from __future__ import annotations

import torch
from torch import nn

from seqsearch.models.base import ExitPointsMixin, scaled

# (expansion, out_planes, num_blocks, stride)
_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
        (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        planes = expansion * in_planes
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(ExitPointsMixin, nn.Module):
    def __init__(self, *, in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        stem = scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        stages = []
        in_planes = stem
        for expansion, out, n, stride in _CFG:
            out = scaled(out, width)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(in_planes, out, expansion, stride if j == 0 else 1))
                in_planes = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        last = scaled(1280, width) if width > 1.0 else 1280
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last, num_classes)
        # Exits may follow any stage but the last.
        self.exit_points = tuple(f"stages.{i}" for i in range(len(_CFG) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        x = self.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(self.pool(x), 1))


def mobilenetv2(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> MobileNetV2:
    return MobileNetV2(in_channels=in_channels, num_classes=num_classes, width=width)
