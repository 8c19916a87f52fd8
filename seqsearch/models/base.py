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


def _holds_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _candidates(module: nn.Module, prefix: str) -> list[str]:
    """Children that hold a conv, the last child (the classifier side) left out."""
    children = list(module.named_children())[:-1]
    return [f"{prefix}{name}" for name, child in children if _holds_conv(child)]


def exit_points_of(model: nn.Module, *, wanted: int = 3) -> tuple[str, ...]:
    """Declared exit points, or, for any other model, the children that hold a conv.

    When the top level has fewer than `wanted` such children (torchvision keeps most of a
    network in one `features` or `trunk_output` Sequential), the child with the most convs is
    replaced by its own children, until there are enough points or nothing left to open. A
    point's output must be a feature map (N, C, H, W); `early_exit` checks that.
    """
    declared = getattr(model, "exit_points", None)
    if declared:
        # A derived model (e.g. a shallower student) may have lost some declared points.
        present = {name for name, _ in model.named_modules()}
        return tuple(p for p in declared if p in present)
    points = _candidates(model, "")
    modules = dict(model.named_modules())
    opened: set[str] = set()
    while len(points) < wanted:
        closed = [p for p in points if p not in opened]
        if not closed:
            break
        widest = max(closed, key=lambda p: sum(isinstance(m, nn.Conv2d)
                                                for m in modules[p].modules()))
        opened.add(widest)
        inner = [f"{widest}.{name}" for name, child in modules[widest].named_children()
                 if _holds_conv(child)]
        if len(inner) < 2:
            continue
        i = points.index(widest)
        points[i:i + 1] = inner
    return tuple(points)
