"""VGG with batch norm, CIFAR layout: 3x3 convs, five max-pools, one Linear 512 -> classes."""

from __future__ import annotations

import torch
from torch import nn

from seqsearch.models.base import ExitPointsMixin, scaled

_CFG: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(ExitPointsMixin, nn.Module):
    """Blocks `block1`..`block5`, each ending in a max-pool; exits may follow blocks 1-4."""

    def __init__(
        self, cfg: list[int | str], *, in_channels: int = 3, num_classes: int = 10,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        c = in_channels
        block: list[nn.Module] = []
        n_blocks = 0
        for v in cfg:
            if v == "M":
                block.append(nn.MaxPool2d(2, 2))
                n_blocks += 1
                setattr(self, f"block{n_blocks}", nn.Sequential(*block))
                block = []
            else:
                out = scaled(int(v), width)
                # Conv bias kept as in the CIFAR reference layout (REFERENCE.md parameter counts).
                block += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
                c = out
        self.num_blocks = n_blocks
        self.classifier = nn.Linear(c, num_classes)
        self.exit_points = tuple(f"block{i}" for i in range(1, n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        return self.classifier(torch.flatten(x, 1))


def _make(name: str):
    def build(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> VGG:
        return VGG(_CFG[name], in_channels=in_channels, num_classes=num_classes, width=width)

    build.__name__ = name
    return build


vgg11 = _make("vgg11")
vgg16 = _make("vgg16")
vgg19 = _make("vgg19")
