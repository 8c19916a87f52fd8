"""A label-swap null for a study's verdicts: what the decision rule does when order does not
matter, on the study's own units.

Swapping AB and BA inside a unit negates its statistic, so under "no order effect" every sign
pattern of a pair's units is as likely as the observed one. Per pair, the share of the 2^K
patterns the rule decides (p at the pair's level and |mean| ≥ min_effect) is its false-edge
rate, exact for K ≤ 16 (a seeded Monte Carlo reference beyond). Per study, random patterns are
drawn for every pair at once and the whole family rule (Holm over pairs) applied: the share of
drawn studies with any edge is the study's false-edge rate, to be at most alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seqsearch.search.stats import EXACT_UP_TO, MONTE_CARLO


def _patterns(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signed sums of every sign pattern (exact) or of a Monte Carlo reference set."""
    n = len(values)
    if n <= EXACT_UP_TO:
        bits = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :] & 1
        return (1 - 2 * bits) @ values
    return rng.choice(np.array([-1.0, 1.0]), size=(MONTE_CARLO, n)) @ values


def _p_of(sums: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Two-sided sign-flip p-value of each observed sum against the reference sums."""
    ref = np.sort(np.abs(sums))
    hits = len(ref) - np.searchsorted(ref, np.abs(observed) * (1 - 1e-12), side="left")
    return hits / len(ref)


def _holm_any(p: np.ndarray, big: np.ndarray, alpha: float) -> np.ndarray:
    """Per row (a drawn study): does Holm's step-down at alpha reject a pair whose effect is
    big enough to be an edge?"""
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    ps = np.take_along_axis(p, order, axis=1)
    levels = alpha / (m - np.arange(m))
    rejected = np.cumprod(ps <= levels, axis=1).astype(bool)
    return (rejected & np.take_along_axis(big, order, axis=1)).any(axis=1)


def label_swap_null(verdicts: Sequence[dict[str, Any]], alpha: float, min_effect: float, *,
                    draws: int = 2000, seed: int = 0, holm: bool = True) -> dict[str, Any]:
    """The false-edge rates of the decision rule on these verdicts' own units (module
    docstring). `alpha` is the family's level (alpha / looks); `holm=False` replays the rule
    without the family correction (each pair at `alpha`), to show what the correction buys."""
    rng = np.random.default_rng(seed)
    pairs, sums, values = [], [], []
    for v in verdicts:
        vals = np.array([u["value"] for u in v["unit_statistic"].values()], dtype=float)
        vals = vals[np.isfinite(vals) & (vals != 0)]
        if len(vals) == 0:
            continue
        pairs.append(v["pair"])
        values.append(vals)
        sums.append(_patterns(vals, rng))
    if not pairs:
        return {"pairs": {}, "study_false_edge_rate": 0.0, "draws": 0, "alpha": alpha}
    m = len(pairs)
    per_pair: dict[str, dict[str, float]] = {}
    for name, vals, s in zip(pairs, values, sums, strict=True):
        p = _p_of(s, s)
        level = alpha / m if holm else alpha  # Holm's first (strictest) step
        big = np.abs(s) / len(vals) >= min_effect
        per_pair[name] = {"level": level, "false_edge_rate": float(((p <= level) & big).mean()),
                          "largest_level": alpha,
                          "false_edge_rate_at_largest": float(((p <= alpha) & big).mean()),
                          "exact": len(vals) <= EXACT_UP_TO, "units": len(vals)}
    p_draws = np.empty((draws, m))
    big_draws = np.empty((draws, m), dtype=bool)
    for j, (vals, s) in enumerate(zip(values, sums, strict=True)):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(draws, len(vals)))
        drawn = signs @ vals
        p_draws[:, j] = _p_of(s, drawn)
        big_draws[:, j] = np.abs(drawn) / len(vals) >= min_effect
    any_edge: np.ndarray
    if holm:
        any_edge = _holm_any(p_draws, big_draws, alpha)
    else:
        any_edge = np.asarray(((p_draws <= alpha) & big_draws).any(axis=1))
    return {"pairs": per_pair, "study_false_edge_rate": float(any_edge.mean()),
            "draws": draws, "alpha": alpha, "holm": holm}
