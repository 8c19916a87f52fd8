"""Paired tests over units (parameter samples), and the error-rate rule for adding seeds.

The unit of evidence is a parameter sample: both orders of a pair ran it, each seed is a repeat
inside it. A verdict compares the two orders unit by unit (one difference per unit) and asks
whether those differences could be noise: a two-sided paired sign-flip (randomisation) test on
their mean. Under "no order effect" each difference is as likely positive as negative, so the
p-value is the share of the 2^n sign patterns whose |mean| reaches the observed one — exact
for up to 16 non-zero differences, a seeded Monte Carlo estimate beyond.

Seeds and samples are spent sequentially: a pair gets its next seed, then further batches of
parameter samples, only while it is undecided. Each look tests at alpha / (number of looks
planned) (Bonferroni over looks), and the pairs of one look are corrected together by Holm's
step-down (`holm`), so the chance that any pair of a study gets a false edge stays at most alpha
however many looks it takes.

"Either order is fine" is tested too: two one-sided sign-flip tests (`equivalence_p`) on the
differences shifted by the practical size; both below the level means the mean difference lies
inside ±that size. `power_line` says what a test of K units could detect.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

EXACT_UP_TO = 16
MONTE_CARLO = 20_000
UNITS_CAP = 100_000  # power_line searches no further: "over 100,000 units" is answer enough


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


def one_sided_p(diffs: Sequence[float], *, seed: int = 0) -> float:
    """One-sided p-value of the sign-flip test that the mean of `diffs` is above zero (the
    share of sign patterns whose sum reaches the observed one; 1.0 with no non-zero value)."""
    d = [float(x) for x in diffs if x != 0 and math.isfinite(x)]
    n = len(d)
    if n == 0:
        return 1.0
    observed = sum(d) - 1e-12 * max(1.0, abs(sum(d)))
    values = np.asarray(d)
    if n <= EXACT_UP_TO:
        patterns = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :] & 1
        sums = (1 - 2 * patterns) @ values
        return int((sums >= observed).sum()) / 2 ** n
    rng = np.random.default_rng(seed)
    sums = rng.choice(np.array([-1.0, 1.0]), size=(MONTE_CARLO, n)) @ values
    return (int((sums >= observed).sum()) + 1) / (MONTE_CARLO + 1)


def equivalence_p(diffs: Sequence[float], bound: float, *, seed: int = 0) -> float:
    """p-value of "the mean difference lies inside ±bound" (two one-sided tests, TOST): the
    larger of the one-sided p-values that mean > −bound and mean < +bound, each a sign-flip
    test of the differences shifted by the bound (valid where each unit's difference is
    symmetric about the true mean). 1.0 with no units or no bound."""
    d = [float(x) for x in diffs if math.isfinite(x)]
    if not d or bound <= 0:
        return 1.0
    above = one_sided_p([x + bound for x in d], seed=seed)
    below = one_sided_p([bound - x for x in d], seed=seed)
    return max(above, below)


def holm(p_values: Sequence[float], alpha: float) -> list[tuple[float, bool]]:
    """Holm's step-down over a family: per test, the level it was compared to and whether it
    is rejected. The i-th smallest p meets alpha / (m − i + 1); after the first one that does
    not, none is rejected. The chance of any false rejection in the family is at most alpha."""
    m = len(p_values)
    out: list[tuple[float, bool]] = [(alpha, False)] * m
    going = True
    for i, k in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        level = alpha / (m - i)
        going = going and p_values[k] <= level
        out[k] = (level, going)
    return out


POWER = 0.8  # the power a power line states
# The sign-flip test is a little less powerful than the t-test it approximates (it can only
# reject on whole sign patterns): solving the noncentral t for this much power puts the exact
# test's power at the stated effect at 0.8 or above (tests/test_decision_rule.py simulates it).
T_POWER = 0.83


def attainable_level(units: int, level: float) -> float:
    """The largest level the sign-flip test with `units` non-zero differences can reject at
    without exceeding `level`: a whole number of its 2^units sign patterns."""
    if units <= 0:
        return 0.0
    if units > 60:  # a pattern is below 1e-18 of the level: nothing to round
        return level
    return math.floor(level * 2 ** units + 1e-9) / 2 ** units


def detectable_effect(units: int, sd: float, level: float, power: float = POWER
                      ) -> float | None:
    """The smallest mean difference the two-sided sign-flip test of `units` units at `level`
    finds with probability `power`, for units spread with `sd` (normal noise). Where only the
    all-same-sign patterns reject (two patterns), power is exactly the chance every difference
    has the mean's sign; otherwise the noncentral t at the attainable level, solved for
    `T_POWER`. None where the test cannot reject at all."""
    from scipy import stats

    a = attainable_level(units, level)
    if units < 2 or a <= 0:
        return None
    if sd == 0:
        return 0.0
    root = math.sqrt(units)
    if units <= 60 and a * 2 ** units <= 2:  # only the two patterns of one sign reject
        x = stats.norm.ppf(power ** (1 / units))
        return float(x * sd)
    df, crit = units - 1, float(stats.t.ppf(1 - a / 2, units - 1))

    def power_at(effect: float) -> float:
        nc = effect * root / sd
        return float(1 - stats.nct.cdf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))

    lo, hi = 0.0, sd
    while power_at(hi) < T_POWER:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_at(mid) < T_POWER else (lo, mid)
    return hi


def power_line(diffs: Sequence[float], level: float, effect: float | None = None
               ) -> dict[str, float | int | None]:
    """What a paired sign-flip test of these units could detect: the smallest mean difference
    found with 80 % power at two-sided `level` with this many units (`detectable_effect`), and
    the units needed to find `effect` (default: the observed mean) so. None where the spread
    is unknown (fewer than 2 units) or no effect is seen; where more than UNITS_CAP units
    would be needed, `units_needed` is None and `units_needed_over` is UNITS_CAP."""
    d = [float(x) for x in diffs if math.isfinite(x)]
    n = len(d)
    if n < 2:
        return {"units": n, "sd": None, "detectable": None, "units_needed": None}
    from statistics import NormalDist, stdev

    sd = stdev(d)
    target = abs(sum(d) / n) if effect is None else abs(effect)
    need: int | None = None
    over: int | None = None
    if sd == 0:
        need = min_units_for(level)
    elif target > 0:
        # the normal approximation undershoots: start there and step up until the test holds
        z = NormalDist().inv_cdf(1 - level / 2) + NormalDist().inv_cdf(POWER)
        start = (z * sd / target) ** 2
        need = max(min_units_for(level), math.ceil(start)) if start < UNITS_CAP else UNITS_CAP
        while need < UNITS_CAP:
            found = detectable_effect(need, sd, level)
            if found is not None and found <= target:
                break
            need += max(1, need // 20)
        if need >= UNITS_CAP:
            need, over = None, UNITS_CAP
    line: dict[str, float | int | None] = {
        "units": n, "sd": sd, "detectable": detectable_effect(n, sd, level), "power": POWER,
        "units_needed": need}
    if over is not None:
        line["units_needed_over"] = over
    return line


def units_needed_text(power: dict[str, object]) -> str | None:
    """How power_line's units needed read: a count, "over 100,000" (also for an older
    order.json that stored the uncapped normal approximation), or None where none applies."""
    need, over = power.get("units_needed"), power.get("units_needed_over")
    if isinstance(need, (int, float)) and need >= UNITS_CAP:
        over = UNITS_CAP
    elif isinstance(need, (int, float)):
        return f"{int(need):,}"
    return f"over {int(over):,}" if isinstance(over, (int, float)) else None


def min_units_for(level: float) -> int:
    """The fewest non-zero units with which the two-sided sign-flip test reaches `level`."""
    n = 1
    while smallest_p(n) > level:
        n += 1
    return n


def smallest_p(units: int) -> float:
    """The smallest p-value the sign-flip test can reach with `units` non-zero differences."""
    return 1.0 if units == 0 else min(1.0, 2.0 / 2 ** units)


def edge_looks(alpha: float, look_units: Sequence[int], pairs: int
               ) -> tuple[int, int] | None:
    """Which looks get alpha for edges: those whose units can reject at Holm's first step of
    the even split (alpha / looks / pairs); a look that cannot reject spends nothing, and the
    others share alpha. Returns (looks with alpha, the fewest units among them), or None where
    every look can reject (or none can): the even split stands."""
    looks = max(1, len(look_units))
    can = [u for u in look_units if smallest_p(u) <= alpha / looks / max(1, pairs)]
    if not can or len(can) == len(look_units):
        return None
    return len(can), min(can)


def look_alpha(alpha: float, looks: int) -> float:
    """The level each sequential look tests at (Bonferroni over the looks allowed)."""
    return alpha / max(1, looks)


def bootstrap_sign(diffs: Sequence[float], *, draws: int, seed: int = 0) -> float | None:
    """Share of resamples of the units (with replacement) whose mean difference has the sign
    of the observed mean: how often the same direction comes back (0.5 for no direction or no
    units; None when no resample was drawn, since nothing was measured)."""
    d = [float(x) for x in diffs]
    total = sum(d)
    if draws == 0:
        return None
    if not d or total == 0:
        return 0.5
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
