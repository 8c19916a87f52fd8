"""The data behind every report figure and table, as pandas frames (tested, then plotted)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch.config import DEFAULT_BUDGETS
from seqsearch.search.order import pick_within_budget
from seqsearch.search.pareto import pareto_front, within_budget
from seqsearch.search.points import point_rows, tau_value

BUDGETS = DEFAULT_BUDGETS


def pairs_table(order: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for p in order["pairs"]:
        a, b = p["orders"]
        pw = p.get("power") or {}
        hv = p.get("hypervolume") or {}
        rows.append({"pair": p["pair"], "winner": p["winner"] or "undecided",
                     "outcome": p.get("outcome", "order" if p["decided"] else "undecided"),
                     "decided": p["decided"], "p_value": p["p_value"],
                     "level": p.get("alpha"), "equivalence_p": p.get("equivalence_p"),
                     "units": p["units"], "seeds": len(p["seeds"]),
                     "fronts_cross": p["crosses"], "effect": p.get("effect", p["margin"]),
                     "margin": p["margin"], "confidence": p["confidence"],
                     "detectable": pw.get("detectable"), "units_needed": pw.get("units_needed"),
                     "hv_first": hv.get(a), "hv_second": hv.get(b), "first": a, "second": b})
    return pd.DataFrame(rows)


def orders_text(orders: Sequence[str], limit: int = 6) -> str:
    """A list of orders for a sentence, cut after `limit` with the total."""
    if not orders:
        return "none"
    shown = ", ".join(orders[:limit])
    return shown + (f", … ({len(orders)} in all)" if len(orders) > limit else "")


def brute_sentence(brute: dict[str, Any], bold: str = "**") -> str:
    """What a brute-force sweep says about the best order and the pairwise proposal, in one
    sentence (markdown bold by default; the page passes "" and adds its own)."""
    n = len(brute.get("ranking", []))
    proposed = brute.get("pairwise_orders", [])
    if not brute.get("informative", True):
        return (f"The brute force over {n} orders cannot rank them: "
                f"{brute.get('note') or 'no order has a point above the reference'}; the "
                f"pairwise method proposed {orders_text(proposed)}.")
    best = brute.get("best_tied") or [brute.get("best")]
    top, inside = brute.get("top_set", []), brute.get("pairwise_in_top_set", [])
    return (f"Brute force's best order: {bold}{orders_text(best)}{bold}"
            + (" (tied)" if len(best) > 1 else "") + f"; pairwise proposal: "
            f"{orders_text(proposed)} — {bold}"
            + ("exact match" if brute.get("pairwise_matches") else "no exact match")
            + f"{bold}; {len(top)} orders are not distinguishable from the best (paired test at "
            f"alpha {brute.get('alpha', 0.1):g}), "
            + (f"and the proposal is among them ({orders_text(inside)})." if inside
               else "and no proposed order is among them."))


def edges_table(order: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(order["edges"], columns=["from", "to", "margin", "confidence",
                                                 "p_value"])


def pareto_points(runs: pd.DataFrame, orders: Sequence[str], kind: str = "pair"
                  ) -> pd.DataFrame:
    """Every evaluated point of the given orders, flagged when on its order's front
    (validation accuracy vs log BitOpsCR, the decision split)."""
    part = runs[(runs["kind"] == kind) & (runs["order"].isin(list(orders)))].copy()
    part["on_front"] = False
    for _, group in part.groupby("order"):
        pts = list(zip(group["val_accuracy"], group["val_bitops_cr"].map(math.log), strict=True))
        front = set(pareto_front(pts))
        for idx, p in zip(group.index, pts, strict=True):
            part.loc[idx, "on_front"] = (float(p[0]), float(p[1])) in front
    cols = ["order", "sample", "seed", "tau", "val_accuracy", "val_bitops_cr",
            "test_accuracy", "bitops_cr", "cr", "on_front"]
    return part[[c for c in cols if c in part.columns]].reset_index(drop=True)


def budget_table(runs: pd.DataFrame, base_val: float, base_test: float,
                 budgets: Sequence[float] = BUDGETS, extra: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
    """Like the paper's Table 1: for every order evaluated, the best BitOpsCR within each
    accuracy-loss budget. The point is chosen on validation (best val BitOpsCR with val drop
    ≤ budget) and its test BitOpsCR and test drop are reported."""
    frames = [runs]
    if extra is not None and not extra.empty:
        frames.append(extra)
    allrows = pd.concat(frames, ignore_index=True)
    out = []
    for (kind, order), group in allrows.groupby(["kind", "order"], sort=False):
        row: dict[str, Any] = {"order": order, "kind": kind, "points": len(group)}
        for b in budgets:
            pick = pick_within_budget(group, base_val, b)
            if pick is None:
                row[f"bitops_cr@{b:g}"] = None
                row[f"test_drop@{b:g}"] = None
                continue
            row[f"bitops_cr@{b:g}"] = float(pick["bitops_cr"])
            row[f"test_drop@{b:g}"] = 100 * (base_test - float(pick["test_accuracy"]))
        out.append(row)
    rank = {k: i for i, k in enumerate(("single", "pair", "tuned", "insert", "repeat",
                                        "stronger"))}
    out.sort(key=lambda r: (rank.get(r["kind"], 99), r["order"]))
    return pd.DataFrame(out)


SEED_MEAN_KINDS = (("single", "best single stage"), ("pair", "best pair"),
                   ("brute", "best full order"))


def seed_mean_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Every probe point (kind, order, sample, τ) measured on two or more seeds, with the mean
    of each figure over its seeds (one run per seed: the first, as the export's candidates)."""
    cols = ["val_accuracy", "val_bitops_cr", "test_accuracy", "bitops_cr"]
    if runs.empty or not set(cols) <= set(runs.columns):
        return pd.DataFrame()
    rows = point_rows(runs[runs["kind"].isin([k for k, _ in SEED_MEAN_KINDS])],
                      ("kind", "order", "sample"))
    means = rows.groupby("_point", sort=False)[cols].mean()
    seeds = rows.groupby("_point", sort=False)["seed"].nunique().rename("seeds")
    out = means.join(seeds)
    out = out[out["seeds"] >= 2]
    keys = pd.DataFrame([{"kind": k, "order": o, "sample": n, "tau": tau_value(t)}
                         for k, o, n, t in out.index], columns=["kind", "order", "sample", "tau"])
    return pd.concat([keys, out.reset_index(drop=True)], axis=1)


def best_seed_means(runs: pd.DataFrame, base_val: float, base_test: float, budget: float
                    ) -> pd.DataFrame:
    """The export's rule on seed-averaged probe points, per kind (single stage, pair, full
    order): of the points whose mean validation drop is within `budget`, the one with the best
    mean validation BitOpsCR (then accuracy), with its mean test BitOpsCR and test drop."""
    points = seed_mean_points(runs)
    out = []
    for kind, label in SEED_MEAN_KINDS:
        part = points[points["kind"] == kind] if not points.empty else points
        row: dict[str, Any] = {"kind": kind, "label": label, "budget": budget,
                               "points": len(part)}
        ok = part[[within_budget(base_val, a, budget) for a in part["val_accuracy"]]] \
            if len(part) else part
        if len(ok):
            top = ok.sort_values(["val_bitops_cr", "val_accuracy"], ascending=False).iloc[0]
            row.update({"order": top["order"], "sample": int(top["sample"]), "tau": top["tau"],
                        "seeds": int(top["seeds"]), "val_bitops_cr": float(top["val_bitops_cr"]),
                        "val_drop": 100 * (base_val - float(top["val_accuracy"])),
                        "bitops_cr": float(top["bitops_cr"]),
                        "test_drop": 100 * (base_test - float(top["test_accuracy"]))})
        out.append(row)
    return pd.DataFrame(out)


def tuning_table(trials_csv: Path) -> pd.DataFrame:
    if not trials_csv.is_file():
        return pd.DataFrame()
    df = pd.read_csv(trials_csv)
    if "constraint" in df:
        df["feasible"] = (df["state"] == "COMPLETE") & (df["constraint"] <= 0)
    else:
        df["feasible"] = False
    best, track = -math.inf, []
    for _, r in df.sort_values("number").iterrows():
        if r["feasible"]:
            best = max(best, float(r["val_bitops_cr"]))
        track.append(best if math.isfinite(best) else None)
    df = df.sort_values("number").reset_index(drop=True)
    df["best_feasible_so_far"] = track
    return df


def tuning_rows_as_runs(tuning: pd.DataFrame) -> pd.DataFrame:
    """Completed tuning trials as runs-table rows (kind `tuned`), for the budget table."""
    if tuning.empty or "val_accuracy" not in tuning or "chain" not in tuning:
        return pd.DataFrame()
    done = tuning[tuning["state"] == "COMPLETE"]
    return pd.DataFrame({"kind": "tuned", "order": done["chain"],
                         "val_accuracy": done["val_accuracy"],
                         "val_bitops_cr": done["val_bitops_cr"],
                         "test_accuracy": done["test_accuracy"],
                         "bitops_cr": done["bitops_cr"]})


def trajectory_table(records: Sequence[dict[str, Any]], baseline: dict[str, Any]
                     ) -> pd.DataFrame:
    rows = [{"step": 0, "stage": "baseline", "order": "", "val_accuracy":
             baseline["val_accuracy"], "test_accuracy": baseline["test_accuracy"],
             "bitops_cr": 1.0, "cr": 1.0}]
    for i, r in enumerate(records, start=1):
        rows.append({"step": i, "stage": r["stage"], "order": r["order"],
                     "val_accuracy": r["val_accuracy"], "test_accuracy": r["test_accuracy"],
                     "bitops_cr": r["bitops_cr"], "cr": r["cr"]})
    return pd.DataFrame(rows)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None
