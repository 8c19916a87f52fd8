"""CIFAR-style ResNets: the 6n+2 family (8/14/20/32/56) and ResNet-18/34 with a 3x3 stem.

Shortcuts are option B (1x1 conv + BN when the shape changes), as in REFERENCE.md.
"""

from __future__ import annotations

import torch
from torch import nn

from seqsearch.models.base import ExitPointsMixin, scaled


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(ExitPointsMixin, nn.Module):
    """Stem conv, residual stages of BasicBlocks, global average pool, one Linear."""

    def __init__(
        self,
        blocks: tuple[int, ...],
        widths: tuple[int, ...],
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        chans = [scaled(w, width) for w in widths]
        self.conv1 = nn.Conv2d(in_channels, chans[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0])
        self.relu = nn.ReLU()
        in_planes = chans[0]
        stages = []
        for i, (n, planes) in enumerate(zip(blocks, chans, strict=True)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        for i, stage in enumerate(stages, start=1):
            setattr(self, f"layer{i}", stage)
        self.num_stages = len(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        # Every block output is a candidate exit point, except the last block (that is the head).
        points = [f"layer{i + 1}.{j}" for i, n in enumerate(blocks) for j in range(n)]
        self.exit_points = tuple(points[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _small(n: int):
    def build(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> CifarResNet:
        return CifarResNet(
            (n, n, n), (16, 32, 64), in_channels=in_channels, num_classes=num_classes, width=width
        )

    build.__name__ = f"resnet{6 * n + 2}"
    return build


resnet8 = _small(1)
resnet14 = _small(2)
resnet20 = _small(3)
resnet32 = _small(5)
resnet56 = _small(9)


def resnet18(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> CifarResNet:
    return CifarResNet(
        (2, 2, 2, 2), (64, 128, 256, 512),
        in_channels=in_channels, num_classes=num_classes, width=width,
    )


def resnet34(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> CifarResNet:
    return CifarResNet(
        (3, 4, 6, 3), (64, 128, 256, 512),
        in_channels=in_channels, num_classes=num_classes, width=width,
    )
