"""A tiny CNN for tests: two conv blocks and a classifier, milliseconds per batch."""

from __future__ import annotations

import torch
from torch import nn

from seqsearch.models.base import ExitPointsMixin, scaled


class TinyCNN(ExitPointsMixin, nn.Module):
    exit_points = ("block1",)

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = scaled(8, width), scaled(16, width)
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny(in_channels: int = 1, num_classes: int = 10, width: float = 1.0) -> TinyCNN:
    return TinyCNN(in_channels, num_classes, width)
