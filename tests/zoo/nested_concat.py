"""A user model whose stem output feeds two nested dense concatenations, then a grouped 1x1
transition: `cat([cat([x, a(x)]), b(cat([x, a(x)]))])` into a conv with groups=2.

torch-pruning 1.6 cannot cut the stem's channel group of this model (its concatenation index
mapping runs out of bounds): the stem must be kept whole, while every other layer prunes.
"""

from __future__ import annotations

import torch
from torch import nn


def _cbr(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Dense(nn.Module):
    """DenseNet-style: the input and `growth` new channels, concatenated."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.conv = _cbr(channels, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], 1)


class NestedConcat(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 16, 3)
        self.dense1 = Dense(16, 8)
        self.dense2 = Dense(24, 8)
        self.trans = _cbr(32, 32, 1, groups=2)
        self.head = _cbr(32, 32, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.trans(self.dense2(self.dense1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def nested_concat(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return NestedConcat(in_channels, num_classes)
