"""From the runs table to an order: per-pair verdicts, the DAG, cycles, topological orders.

Decisions use the validation split (accuracy and BitOpsCR of the validation samples); test
figures are reported beside them. Per pair {A, B}: each order's Pareto front in
(accuracy, log BitOpsCR); hypervolume above the reference point (baseline val accuracy minus
`max_drop` points, log BitOpsCR 0); the margin (HV_AB − HV_BA) / max(HV); best BitOpsCR at
each accuracy-drop budget; a bootstrap confidence over the paired (sample, seed) units; a tie
when |margin| < the study's threshold or the fronts cross (each order wins some budget by more
than the threshold).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import pandas as pd

from seqsearch.search.pareto import best_within, hypervolume, pareto_front

MAX_ORDERS = 120


@dataclass(frozen=True)
class Criteria:
    baseline_accuracy: float  # validation accuracy of the baseline, fraction
    max_drop: float = 5.0  # points
    tie_threshold: float = 0.05
    budgets: tuple[float, ...] = (0.2, 0.6, 1.0, 2.0)
    bootstrap: int = 200
    seed: int = 0

    @property
    def reference(self) -> tuple[float, float]:
        return (self.baseline_accuracy - self.max_drop / 100.0, 0.0)


def _points(df: pd.DataFrame, split: str = "val") -> list[tuple[float, float]]:
    acc = df[f"{split}_accuracy" if split == "val" else "test_accuracy"]
    cr = df["val_bitops_cr" if split == "val" else "bitops_cr"]
    return [(float(a), math.log(float(c))) for a, c in zip(acc, cr, strict=True) if c > 0]


def pick_within_budget(rows: pd.DataFrame, base_val: float, budget: float) -> pd.Series | None:
    """The row with the best validation BitOpsCR whose validation accuracy drop (points) is
    within the budget — chosen on validation, so its test figures can be reported honestly."""
    ok = rows[100 * (base_val - rows["val_accuracy"]) <= budget + 1e-9]
    return None if ok.empty else ok.loc[ok["val_bitops_cr"].idxmax()]


def _margin(hv_ab: float, hv_ba: float) -> float:
    top = max(hv_ab, hv_ba)
    return 0.0 if top <= 0 else (hv_ab - hv_ba) / top


def compare(ab: pd.DataFrame, ba: pd.DataFrame, crit: Criteria, *, first: str = "AB",
            second: str = "BA") -> dict[str, Any]:
    """Verdict for two orders of one pair, from their rows."""
    ref = crit.reference
    pa, pb = _points(ab), _points(ba)
    hv_a, hv_b = hypervolume(pa, ref), hypervolume(pb, ref)
    margin = _margin(hv_a, hv_b)
    budgets = {}
    wins = {first: 0, second: 0}
    for b in crit.budgets:
        floor = crit.baseline_accuracy - b / 100.0
        ya, yb = best_within(pa, floor), best_within(pb, floor)
        budgets[f"{b:g}"] = {first: None if ya is None else math.exp(ya),
                             second: None if yb is None else math.exp(yb)}
        if ya is not None and yb is not None:
            if ya - yb > crit.tie_threshold:
                wins[first] += 1
            elif yb - ya > crit.tie_threshold:
                wins[second] += 1
    crosses = wins[first] > 0 and wins[second] > 0
    confidence = _bootstrap(ab, ba, crit, margin)
    tie = abs(margin) < crit.tie_threshold or crosses or (hv_a == 0 and hv_b == 0)
    winner = None if tie else (first if margin > 0 else second)
    test_ref = (ref[0], 0.0)
    return {
        "orders": [first, second],
        "winner": winner,
        "tie": tie,
        "crosses": crosses,
        "margin": margin,
        "confidence": confidence,
        "hypervolume": {first: hv_a, second: hv_b},
        "test_hypervolume": {first: hypervolume(_points(ab, "test"), test_ref),
                             second: hypervolume(_points(ba, "test"), test_ref)},
        "budgets": budgets,
        "front": {first: pareto_front(pa), second: pareto_front(pb)},
        "points": {first: len(pa), second: len(pb)},
    }


def _bootstrap(ab: pd.DataFrame, ba: pd.DataFrame, crit: Criteria, margin: float) -> float:
    """Share of paired resamples of (sample, seed) units whose margin has the same sign."""
    if crit.bootstrap == 0 or margin == 0:
        return 0.5 if margin == 0 else 1.0
    units = sorted(set(zip(ab["sample"], ab["seed"], strict=True))
                   & set(zip(ba["sample"], ba["seed"], strict=True)))
    if not units:
        return 0.5
    rng = random.Random(crit.seed)
    ga = {u: _points(g) for u, g in ab.groupby(["sample", "seed"])}
    gb = {u: _points(g) for u, g in ba.groupby(["sample", "seed"])}
    agree = 0
    for _ in range(crit.bootstrap):
        pick = [units[rng.randrange(len(units))] for _ in units]
        pa = [p for u in pick for p in ga.get(u, [])]
        pb = [p for u in pick for p in gb.get(u, [])]
        m = _margin(hypervolume(pa, crit.reference), hypervolume(pb, crit.reference))
        agree += (m > 0) == (margin > 0) and m != 0
    return agree / crit.bootstrap


def pair_verdicts(table: pd.DataFrame, letters: Sequence[str], crit: Criteria,
                  kind: str = "pair") -> list[dict[str, Any]]:
    rows = table[table["kind"] == kind] if "kind" in table else table
    out = []
    for a, b in itertools.combinations(letters, 2):
        ab, ba = rows[rows["order"] == a + b], rows[rows["order"] == b + a]
        if ab.empty or ba.empty:
            continue
        out.append({"pair": a + b, **compare(ab, ba, crit, first=a + b, second=b + a)})
    return out


def build_graph(letters: Sequence[str], verdicts: Sequence[dict[str, Any]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(letters)
    for v in verdicts:
        if v["winner"]:
            a, b = v["winner"][0], v["winner"][1]
            g.add_edge(a, b, margin=abs(v["margin"]), confidence=v["confidence"])
    return g


def break_cycles(g: nx.DiGraph) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Report every cycle, then remove the weakest edge (lowest confidence, then margin) of a
    remaining cycle until the graph is acyclic."""
    cycles = [list(c) for c in nx.simple_cycles(g)]
    broken = []
    while True:
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            break
        u, v = min(((e[0], e[1]) for e in cycle),
                   key=lambda e: (g.edges[e]["confidence"], g.edges[e]["margin"]))
        broken.append({"edge": u + v, **g.edges[u, v]})
        g.remove_edge(u, v)
    return cycles, broken


def topological_orders(g: nx.DiGraph) -> list[str]:
    return ["".join(o) for o in itertools.islice(nx.all_topological_sorts(g), MAX_ORDERS)]


def decide(table: pd.DataFrame, letters: Sequence[str], crit: Criteria) -> dict[str, Any]:
    """The content of order.json."""
    verdicts = pair_verdicts(table, letters, crit)
    g = build_graph(letters, verdicts)
    cycles, broken = break_cycles(g)
    return {
        "letters": list(letters),
        "criteria": {"baseline_val_accuracy": crit.baseline_accuracy, "max_drop": crit.max_drop,
                     "tie_threshold": crit.tie_threshold, "budgets": list(crit.budgets),
                     "reference_point": list(crit.reference), "bootstrap": crit.bootstrap,
                     "decided_on": "validation split"},
        "pairs": [{k: v for k, v in p.items() if k != "front"} for p in verdicts],
        "fronts": {p["pair"]: p["front"] for p in verdicts},
        "edges": [{"from": u, "to": v, **d} for u, v, d in g.edges(data=True)],
        "cycles": ["".join(c) for c in cycles],
        "broken_edges": broken,
        "orders": topological_orders(g),
    }


def check_insertions(table: pd.DataFrame, winners: Sequence[str], letters: Sequence[str],
                     crit: Criteria) -> list[dict[str, Any]]:
    """Paper §4: does A→B still win with C inserted (ACB against BCA)?"""
    rows = table[table["kind"] == "insert"]
    out = []
    for ab in winners:
        a, b = ab[0], ab[1]
        for c in letters:
            if c in (a, b):
                continue
            acb, bca = rows[rows["order"] == a + c + b], rows[rows["order"] == b + c + a]
            if acb.empty or bca.empty:
                continue
            v = compare(acb, bca, crit, first=a + c + b, second=b + c + a)
            out.append({"pair": ab, "inserted": c, "holds": v["winner"] == a + c + b,
                        "winner": v["winner"], "tie": v["tie"], "margin": v["margin"],
                        "confidence": v["confidence"]})
    return out


def check_repeats(table: pd.DataFrame, crit: Criteria) -> list[dict[str, Any]]:
    """Paper §6: AA against A once with params as strong as two applications."""
    out = []
    for a in ("D", "P", "Q"):
        aa = table[(table["kind"] == "repeat") & (table["order"] == a + a)]
        one = table[(table["kind"] == "stronger") & (table["order"] == a)]
        if aa.empty or one.empty:
            continue
        v = compare(aa, one, crit, first=a + a, second=a + "+")
        out.append({"stage": a, "repeat_helps": v["winner"] == a + a, "winner": v["winner"],
                    "tie": v["tie"], "margin": v["margin"], "confidence": v["confidence"],
                    "hypervolume": v["hypervolume"]})
    return out


def rank_orders(table: pd.DataFrame, crit: Criteria, kind: str = "brute") -> list[dict[str, Any]]:
    """Every full order of a brute-force sweep, best first by validation hypervolume, with its
    best test BitOpsCR (chosen on validation) at each budget."""
    rows = table[table["kind"] == kind]
    out = []
    for order, group in rows.groupby("order"):
        pts = _points(group)
        budgets = {}
        for b in crit.budgets:
            pick = pick_within_budget(group, crit.baseline_accuracy, b)
            budgets[f"{b:g}"] = None if pick is None else float(pick["bitops_cr"])
        out.append({"order": order, "hypervolume": hypervolume(pts, crit.reference),
                    "points": len(pts), "test_bitops_cr_at": budgets})
    return sorted(out, key=lambda r: -r["hypervolume"])
