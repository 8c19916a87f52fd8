"""A user model with a grouped 1x1 convolution, dense concatenations and squeeze-excitation."""

from __future__ import annotations

import torch
from torch import nn


def _cbr(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Dense(nn.Module):
    """DenseNet-style: the input and 16 new channels, concatenated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _cbr(channels, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], 1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // 4, 1)
        self.fc2 = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * s


class GroupedDense(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 32, 3)
        self.group = _cbr(32, 32, 1, groups=2)
        self.dense1 = Dense(32)
        self.dense2 = Dense(48)
        self.trans = nn.Sequential(_cbr(64, 32, 1), SqueezeExcite(32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans(self.dense2(self.dense1(self.group(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def grouped_dense(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return GroupedDense(in_channels, num_classes)
