"""The matched-compression accuracy gap between two runs (the probe's default statistic).

A run's points are (accuracy, log BitOpsCR) pairs: one for a chain without E, one per τ for an
E chain. Its attainment curve f(x) is the best accuracy among its points with log BitOpsCR ≥ x,
defined up to the run's largest log BitOpsCR. The gap of run A over run B is the mean of
f_A − f_B over the compression range both cover: from the larger of the two runs' smallest
log BitOpsCR to the smaller of their largest. Where those ranges do not overlap (a chain
without E has one point, so any two such runs that do not compress exactly alike), the range is
the single point x = the smaller largest log BitOpsCR: the accuracy of the run that compresses
less against the best accuracy the other reaches at that compression or more. Either way both
curves are compared only where both are defined: no run is credited for compression the other
did not reach, and none is censored by a reference accuracy (a run far below the baseline still
counts by how far it is below the other). In accuracy points, positive when A is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]  # (accuracy as a fraction, log BitOpsCR)


def _clean(points: Sequence[Point]) -> list[Point]:
    return [(float(a), float(x)) for a, x in points if math.isfinite(a) and math.isfinite(x)]


def attainment(points: Sequence[Point], x: float) -> float:
    """Best accuracy among the points with log BitOpsCR ≥ x (−inf where none reaches x)."""
    return max((a for a, px in points if px >= x - 1e-12), default=-math.inf)


def matched_gap(a: Sequence[Point], b: Sequence[Point]) -> float | None:
    """Mean of f_A − f_B (points) over the range both runs cover (module docstring); None
    when either run has no finite point."""
    pa, pb = _clean(a), _clean(b)
    if not pa or not pb:
        return None
    lo = max(min(x for _, x in pa), min(x for _, x in pb))
    hi = min(max(x for _, x in pa), max(x for _, x in pb))
    if hi <= lo:
        return 100.0 * (attainment(pa, hi) - attainment(pb, hi))
    # both curves are steps that change only at the runs' own log BitOpsCR: integrate exactly
    cuts = sorted({lo, hi, *(x for _, x in pa + pb if lo < x < hi)})
    area = 0.0
    for left, right in zip(cuts, cuts[1:], strict=False):
        # on (left, right] each curve is its value at `right`
        area += (attainment(pa, right) - attainment(pb, right)) * (right - left)
    return 100.0 * area / (hi - lo)


def normalised_hypervolume_gap(hv_a: float, hv_b: float, span: float) -> float:
    """The hypervolume statistic in points: (HV_A − HV_B) over the unit's log BitOpsCR span,
    i.e. the difference of the mean accuracy above the reference across that span, so one unit
    that reaches 1,000x does not outweigh the rest by its width alone."""
    return 0.0 if span <= 0 else 100.0 * (hv_a - hv_b) / span
