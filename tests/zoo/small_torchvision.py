"""Small members of torchvision families whose full-size builders are too slow for CPU tests.

Used as user model specs (`path/to/small_torchvision.py:resnext_small`), so the test also goes
through the file-spec path a user takes.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import Bottleneck, ResNet


def resnext_small(**kwargs: Any) -> nn.Module:
    """ResNeXt: bottlenecks with 8 groups of 4 channels, one block per stage."""
    return ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, **kwargs)


def densenet_small(**kwargs: Any) -> nn.Module:
    """DenseNet: dense blocks (concatenations) and transitions, growth 8."""
    return DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16, bn_size=2,
                    **kwargs)
