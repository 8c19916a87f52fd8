"""Pareto fronts and 2-D hypervolume in (accuracy, log BitOpsCR), both maximised."""

from __future__ import annotations

import math
from collections.abc import Iterable

Point = tuple[float, float]


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """Non-dominated points (maximising both coordinates), sorted by accuracy descending."""
    pts = sorted({(float(x), float(y)) for x, y in points if math.isfinite(x) and
                  math.isfinite(y)}, key=lambda p: (-p[0], -p[1]))
    front: list[Point] = []
    best_y = -math.inf
    for x, y in pts:
        if y > best_y:
            front.append((x, y))
            best_y = y
    return front


def hypervolume(points: Iterable[Point], ref: Point) -> float:
    """Area dominated by the points and bounded below by `ref` (points not above it ignored)."""
    front = [p for p in pareto_front(points) if p[0] > ref[0] and p[1] > ref[1]]
    area = 0.0
    prev_y = ref[1]
    for x, y in front:  # accuracy descending, so log CR ascending
        area += (x - ref[0]) * (y - prev_y)
        prev_y = y
    return area


BUDGET_TOLERANCE = 1e-4  # points: float32 accuracies (0.97 is 0.9700000286) must not tip a
# drop of exactly the budget over it; one image of 10,000 is 0.01 point


def within_budget(base_accuracy: float, accuracy: float, budget: float) -> bool:
    """True when the drop from the baseline (fractions in, `budget` in points) is within it."""
    return 100 * (base_accuracy - accuracy) <= budget + BUDGET_TOLERANCE


def best_within(points: Iterable[Point], min_accuracy: float) -> float | None:
    """Highest second coordinate among points whose accuracy is at least `min_accuracy`."""
    ys = [y for x, y in points if x >= min_accuracy - 1e-12]
    return max(ys) if ys else None
