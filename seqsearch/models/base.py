"""The small contract every built-in model shares."""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channel count after a width multiplier; never below one channel."""
    return max(1, int(round(channels * width)))


class ExitPointsMixin:
    """Built-in models list the module names after which an exit head may be attached.

    The names are in execution order; the output of each named module is the feature map an
    exit head reads. A user model without the attribute gets points found automatically.
    """

    exit_points: tuple[str, ...] = ()


def exit_points_of(model: nn.Module) -> tuple[str, ...]:
    """Declared exit points, or, for any other model, the direct children that hold a conv."""
    declared = getattr(model, "exit_points", None)
    if declared:
        # A derived model (e.g. a shallower student) may have lost some declared points.
        present = {name for name, _ in model.named_modules()}
        return tuple(p for p in declared if p in present)
    points = []
    children = list(model.named_children())
    for name, child in children[:-1]:
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            points.append(name)
    return tuple(points)
