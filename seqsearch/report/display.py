"""The report's tables as people read them: named columns with their units, thousands
separators, compression ratios as "1,779×", p-values without exponents.

`tables/*.csv` keep the raw figures and column names (the overview and scripts read them); the
page (index.html) and summary.md show these frames instead. Every function takes the raw frame
(or order.json) and returns a frame of strings, so tests assert on what a reader sees.

What the page leaves out: the bootstrap `confidence` of a pair (the share of resamples of its
units whose mean keeps the observed sign) says less than the p-value and the effect beside it
and is no part of the decision rule; it stays in order.json and the CSVs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from seqsearch.report.verdicts import effect, verdict_word
from seqsearch.search.stats import units_needed_text

MISSING = "–"


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def plain(v: Any, digits: int = 3) -> str:
    """`digits` significant digits, never in exponent notation (0.00027, 6350, 1.5)."""
    if _missing(v):
        return MISSING
    x = float(v)
    if x != 0 and abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return str(np.format_float_positional(x, precision=digits, unique=False, fractional=False,
                                          trim="-"))


def p_value(v: Any) -> str:
    """A p-value or a test level: two significant digits, '< 0.0001' below that."""
    if _missing(v):
        return MISSING
    return "< 0.0001" if float(v) < 1e-4 else plain(v, 2)


def ratio(v: Any) -> str:
    """A compression ratio: '1,779×' from 10 up, '4.46×' below."""
    if _missing(v):
        return MISSING
    x = float(v)
    return f"{x:,.0f}×" if x >= 10 else f"{x:.2f}×"


def points(v: Any) -> str:
    """Accuracy points, signed: '+0.26', '-0.64'."""
    return MISSING if _missing(v) else f"{float(v):+.2f}"


def count(v: Any) -> str:
    return MISSING if _missing(v) else f"{int(v):,}"


def seconds(v: Any) -> str:
    return MISSING if _missing(v) else f"{float(v):,.0f}"


def share(v: Any) -> str:
    """A fraction as a percentage: '58.9 %'."""
    return MISSING if _missing(v) else f"{100 * float(v):.1f} %"


def accuracy(v: Any) -> str:
    """An accuracy in [0, 1] as a percentage: '97.61 %'."""
    return MISSING if _missing(v) else f"{100 * float(v):.2f} %"


def _frame(rows: list[dict[str, str]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


VERDICT_COLUMNS = ["pair", "verdict", "effect (points)", "p-value", "Holm level", "units",
                   "seeds", "detectable (points)", "units needed"]


def verdicts(order: dict[str, Any]) -> pd.DataFrame:
    """One row per pair: its verdict, effect and test, what its units could detect."""
    rows = []
    for p in order["pairs"]:
        pw = p.get("power") or {}
        rows.append(dict(zip(VERDICT_COLUMNS, [
            p["pair"], verdict_word(p), points(effect(p)), p_value(p["p_value"]),
            p_value(p.get("alpha")), count(p["units"]), count(len(p["seeds"])),
            MISSING if _missing(pw.get("detectable")) else f"{float(pw['detectable']):.2f}",
            units_needed_text(pw) or MISSING], strict=True)))
    return _frame(rows, VERDICT_COLUMNS)


COST_COLUMNS = {
    "search": "search",
    "stage_trainings": "stage trainings",
    "train_seconds": "training time (s)",
    "wall_seconds": "wall time (s)",
    "share_of_brute_trainings": "trainings, share of the brute force's",
    "share_of_brute_seconds": "training time, share of the brute force's",
}
_COST_FORMAT: dict[str, Callable[[Any], str]] = {
    "search": str, "stage_trainings": count, "train_seconds": seconds,
    "wall_seconds": seconds, "share_of_brute_trainings": share,
    "share_of_brute_seconds": share}


def cost(raw: pd.DataFrame) -> pd.DataFrame:
    """tables/cost.csv for people: probe and tune against the brute force over every order."""
    cols = [c for c in COST_COLUMNS if c in raw.columns]
    rows = [{COST_COLUMNS[c]: _COST_FORMAT[c](r[c]) for c in cols} for _, r in raw.iterrows()]
    return _frame(rows, [COST_COLUMNS[c] for c in cols])


def _budget_label(col: str) -> str:
    return f"≤ {col.split('@', 1)[1]} pt"


def budgets(raw: pd.DataFrame) -> pd.DataFrame:
    """tables/budgets.csv (or table1.csv): per order, the test BitOpsCR of the point picked
    on validation within each accuracy-drop budget."""
    if raw.empty:
        return pd.DataFrame()
    crs = [c for c in raw.columns if c.startswith("bitops_cr@")]
    head = [c for c in ("order", "kind", "points") if c in raw.columns]
    names = {"order": "order", "kind": "kind", "points": "points evaluated"}
    rows = []
    for _, r in raw.iterrows():
        row = {names[c]: count(r[c]) if c == "points" else str(r[c]) for c in head}
        row.update({_budget_label(c): ratio(r[c]) for c in crs})
        rows.append(row)
    return _frame(rows, [names[c] for c in head] + [_budget_label(c) for c in crs])


CLAIM_COLUMNS = ["claim", "paper", "ours", "verdict", "p-value"]


def claims(raw: pd.DataFrame) -> pd.DataFrame:
    """tables/claims.csv for people: each claim, the paper's answer, ours and the verdict.
    Effect sizes are in the verdict table; the CSV keeps `margin` and `confidence`."""
    rows = [dict(zip(CLAIM_COLUMNS, [str(r["claim"]), str(r["paper"]), str(r["ours"]),
                                     str(r["verdict"]), p_value(r.get("p_value"))],
                     strict=True)) for _, r in raw.iterrows()]
    return _frame(rows, CLAIM_COLUMNS)


def goals(raw: pd.DataFrame) -> pd.DataFrame:
    """tables/goals.csv for people: per goal budget, the tuned chain, the best pair and full
    order (with the order in brackets) and every single stage, as test BitOpsCR."""
    if raw.empty:
        return pd.DataFrame()
    kinds = [c for c in ("tuned", "best pair", "best full order") if c in raw.columns]
    singles = [c for c in raw.columns if c.startswith("single ")]
    rows = []
    for _, r in raw.iterrows():
        row = {"budget (points)": f"≤ {float(r['budget']):g}"}
        for c in kinds:
            which = r.get(f"{c} order")
            row[c] = ratio(r[c]) + ("" if _missing(which) else f" ({which})")
        row.update({c: ratio(r[c]) for c in singles})
        rows.append(row)
    return _frame(rows, ["budget (points)"] + kinds + singles)


SEED_MEAN_COLUMNS = ["kind", "chain", "seeds", "val BitOpsCR", "val drop (points)",
                     "test BitOpsCR", "test drop (points)"]


def seed_means(raw: pd.DataFrame) -> pd.DataFrame:
    """tables/seed_means.csv for people: the export's rule on seed-averaged probe points."""
    rows = []
    for _, r in raw.iterrows():
        if _missing(r.get("order")):
            rows.append(dict(zip(SEED_MEAN_COLUMNS, [str(r["label"]), (
                "nothing within budget" if r["points"] else "no point on two seeds")]
                + [MISSING] * 5, strict=True)))
            continue
        tau = "" if _missing(r.get("tau")) else f", τ {float(r['tau']):g}"
        rows.append(dict(zip(SEED_MEAN_COLUMNS, [
            str(r["label"]), f"{r['order']} (sample {int(r['sample'])}{tau})",
            count(r["seeds"]), ratio(r["val_bitops_cr"]), points(r["val_drop"]),
            ratio(r["bitops_cr"]), points(r["test_drop"])], strict=True)))
    return _frame(rows, SEED_MEAN_COLUMNS)


TRAJECTORY_COLUMNS = ["step", "stage", "chain so far", "val accuracy", "test accuracy",
                      "BitOpsCR", "CR"]


def trajectory(raw: pd.DataFrame) -> pd.DataFrame:
    """tables/trajectory.csv for people: the tuned chain stage by stage."""
    rows = [dict(zip(TRAJECTORY_COLUMNS, [
        count(r["step"]), str(r["stage"]), str(r["order"]) or MISSING,
        accuracy(r["val_accuracy"]), accuracy(r["test_accuracy"]), ratio(r["bitops_cr"]),
        ratio(r["cr"])], strict=True)) for _, r in raw.iterrows()]
    return _frame(rows, TRAJECTORY_COLUMNS)


RANKING_COLUMNS = ["rank", "order", "mean validation hypervolume", "rank interval",
                   "p-value against the best", "among the best"]


def ranking(brute: dict[str, Any]) -> pd.DataFrame:
    """brute.json's ranking of every full order (rank interval: 5th–95th percentile over
    bootstrap resamples of the units)."""
    rows = []
    for r in brute.get("ranking", []):
        interval = r.get("rank_interval")
        rows.append(dict(zip(RANKING_COLUMNS, [
            count(r["rank"]), str(r["order"]), plain(r["hypervolume"]),
            f"{interval[0]:.0f}–{interval[1]:.0f}" if interval else MISSING,
            p_value(r.get("p_vs_best")),
            MISSING if r.get("in_top_set") is None else ("yes" if r["in_top_set"] else "no")],
            strict=True)))
    return _frame(rows, RANKING_COLUMNS)


CHECK_COLUMNS = {"pair": "pair", "inserted": "inserted", "stage": "stage",
                 "winner": "winner", "outcome": "outcome", "effect": "effect (points)",
                 "p_value": "p-value", "alpha": "level", "units": "units"}


def checks(raw: list[dict[str, Any]]) -> pd.DataFrame:
    """insert.json or repeat.json for people: each check's outcome, effect and test."""
    rows = []
    for r in raw:
        row = {}
        for key, name in CHECK_COLUMNS.items():
            if key not in r:
                continue
            v = r[key]
            row[name] = (points(v) if key == "effect" else p_value(v) if key in (
                "p_value", "alpha") else count(v) if key == "units" else
                MISSING if _missing(v) else str(v))
        rows.append(row)
    return pd.DataFrame(rows)
