"""Paired tests over units (parameter samples), and the error-rate rule for adding seeds.

The unit of evidence is a parameter sample: both orders of a pair ran it, each seed is a repeat
inside it. A verdict compares the two orders unit by unit (one difference per unit) and asks
whether those differences could be noise: a two-sided paired sign-flip (randomisation) test on
their mean. Under "no order effect" each difference is as likely positive as negative, so the
p-value is the share of the 2^n sign patterns whose |mean| reaches the observed one — exact
for up to 16 non-zero differences, a seeded Monte Carlo estimate beyond.

Seeds are spent sequentially: a pair starts with its first seed and gets the next one only while
it is undecided and could still be decided. Each look tests at alpha / (number of looks allowed)
(Bonferroni over looks), so the chance of deciding a pair with no order effect stays at most
alpha however many looks it takes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

EXACT_UP_TO = 16
MONTE_CARLO = 20_000


def sign_flip_p(diffs: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip test on the mean of `diffs` (1.0 when every
    difference is zero or there are none)."""
    d = [float(x) for x in diffs if x != 0 and math.isfinite(x)]
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(sum(d)) * (1 - 1e-12)
    values = np.asarray(d)
    if n <= EXACT_UP_TO:
        patterns = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :] & 1
        signs = 1 - 2 * patterns  # every pattern of +1/-1 once
        hits = int((np.abs(signs @ values) >= observed).sum())
        return hits / 2 ** n
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(MONTE_CARLO, n))
    hits = int((np.abs(signs @ values) >= observed).sum())
    return (hits + 1) / (MONTE_CARLO + 1)


def smallest_p(units: int) -> float:
    """The smallest p-value the sign-flip test can reach with `units` non-zero differences."""
    return 1.0 if units == 0 else min(1.0, 2.0 / 2 ** units)


def look_alpha(alpha: float, looks: int) -> float:
    """The level each sequential look tests at (Bonferroni over the looks allowed)."""
    return alpha / max(1, looks)


def bootstrap_sign(diffs: Sequence[float], *, draws: int, seed: int = 0) -> float:
    """Share of resamples of the units (with replacement) whose mean difference has the sign
    of the observed mean: how often the same direction comes back (0.5 for no direction)."""
    d = [float(x) for x in diffs]
    total = sum(d)
    if not d or total == 0 or draws == 0:
        return 0.5 if total == 0 else 1.0
    rng = random.Random(seed)
    agree = 0
    for _ in range(draws):
        s = sum(d[rng.randrange(len(d))] for _ in d)
        agree += (s > 0) == (total > 0) and s != 0
    return agree / draws


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of values, linear between order statistics."""
    v = sorted(values)
    if not v:
        return math.nan
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)
