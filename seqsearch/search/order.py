"""From the runs table to an order: per-pair verdicts, the DAG, cycles, topological orders.

Decisions use the validation split (accuracy and BitOpsCR of the validation samples); test
figures are reported beside them. The unit of evidence is a parameter sample; its seeds are
repeats inside it. Per pair {A, B} and per unit: each order's hypervolume in
(accuracy, log BitOpsCR) above the reference point (baseline val accuracy minus the largest
budget in `probe.budgets`, log BitOpsCR 0), averaged over the seeds both orders ran; the unit's
statistic is HV_AB − HV_BA. A paired sign-flip test across units (`stats.sign_flip_p`) decides
the pair when p ≤ alpha / looks (`probe.alpha`, looks = len(probe.seeds); see `stats`) and the
relative margin (mean HV_AB − mean HV_BA) / max is at least the tie threshold; otherwise the pair
is undecided, its winner null, and it adds no DAG edge. `confidence` is the share of bootstrap
resamples of the units whose mean difference keeps the observed sign. Best BitOpsCR at each
budget and whether the pooled fronts cross are reported beside the verdict.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import pandas as pd

from seqsearch.config import DEFAULT_BUDGETS
from seqsearch.search.pareto import best_within, hypervolume, pareto_front, within_budget
from seqsearch.search.stats import (
    bootstrap_sign,
    look_alpha,
    percentile,
    sign_flip_p,
    smallest_p,
)

MAX_ORDERS = 120


@dataclass(frozen=True)
class Criteria:
    baseline_accuracy: float  # validation accuracy of the baseline, fraction
    max_drop: float | None = None  # points; None: the largest budget
    tie_threshold: float = 0.05
    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    bootstrap: int = 200
    seed: int = 0
    alpha: float = 0.1
    looks: int = 1  # seeds a pair may use: each look tests at alpha / looks
    val_images: int | None = None  # size of the validation split, for its standard error

    @property
    def drop(self) -> float:
        return max(self.budgets) if self.max_drop is None else self.max_drop

    @property
    def reference(self) -> tuple[float, float]:
        return (self.baseline_accuracy - self.drop / 100.0, 0.0)

    @property
    def level(self) -> float:
        return look_alpha(self.alpha, self.looks)


def _points(df: pd.DataFrame, split: str = "val") -> list[tuple[float, float]]:
    acc = df[f"{split}_accuracy" if split == "val" else "test_accuracy"]
    cr = df["val_bitops_cr" if split == "val" else "bitops_cr"]
    return [(float(a), math.log(float(c))) for a, c in zip(acc, cr, strict=True) if c > 0]


def pick_within_budget(rows: pd.DataFrame, base_val: float, budget: float) -> pd.Series | None:
    """The row with the best validation BitOpsCR whose validation accuracy drop (points) is
    within the budget — chosen on validation, so its test figures can be reported honestly."""
    ok = rows[[within_budget(base_val, a, budget) for a in rows["val_accuracy"]]]
    return None if ok.empty else ok.loc[ok["val_bitops_cr"].idxmax()]


def _margin(hv_ab: float, hv_ba: float) -> float:
    top = max(hv_ab, hv_ba)
    return 0.0 if top <= 0 else (hv_ab - hv_ba) / top


def run_hypervolumes(rows: pd.DataFrame, ref: tuple[float, float], split: str = "val"
                     ) -> dict[int, dict[int, float]]:
    """{sample: {seed: hypervolume of that run's points}} (an E chain's run is its τ sweep)."""
    out: dict[int, dict[int, float]] = {}
    for (sample, seed), g in rows.groupby(["sample", "seed"]):
        out.setdefault(int(sample), {})[int(seed)] = hypervolume(_points(g, split), ref)
    return out


def paired_units(a: dict[int, dict[int, float]], b: dict[int, dict[int, float]]
                 ) -> dict[int, tuple[float, float, list[int]]]:
    """Per sample both orders ran: (mean HV of A, mean HV of B, seeds both ran)."""
    out = {}
    for sample in sorted(set(a) & set(b)):
        seeds = sorted(set(a[sample]) & set(b[sample]))
        if seeds:
            out[sample] = (sum(a[sample][s] for s in seeds) / len(seeds),
                           sum(b[sample][s] for s in seeds) / len(seeds), seeds)
    return out


def compare(ab: pd.DataFrame, ba: pd.DataFrame, crit: Criteria, *, first: str = "AB",
            second: str = "BA") -> dict[str, Any]:
    """Verdict for two orders of one pair, from their rows (see the module docstring)."""
    ref = crit.reference
    units = paired_units(run_hypervolumes(ab, ref), run_hypervolumes(ba, ref))
    diffs = [ua - ub for ua, ub, _ in units.values()]
    n = len(units)
    hv_a = sum(u[0] for u in units.values()) / n if n else 0.0
    hv_b = sum(u[1] for u in units.values()) / n if n else 0.0
    margin = _margin(hv_a, hv_b)
    p_value = sign_flip_p(diffs, seed=crit.seed)
    significant = p_value <= crit.level
    decided = significant and abs(margin) >= crit.tie_threshold and margin != 0
    if decided:
        reason = f"p = {p_value:.3g} <= {crit.level:.3g}"
    elif significant:
        reason = f"p = {p_value:.3g}, but |margin| {abs(margin):.3f} < tie threshold"
    else:
        reason = f"p = {p_value:.3g} > {crit.level:.3g}"
    pa, pb = _points(ab), _points(ba)
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
    test_units = paired_units(run_hypervolumes(ab, ref, "test"), run_hypervolumes(ba, ref, "test"))
    seeds = sorted({s for _, _, ss in units.values() for s in ss})
    return {
        "orders": [first, second],
        "winner": (first if margin > 0 else second) if decided else None,
        "decided": decided,
        "tie": not decided,
        "p_value": p_value,
        "alpha": crit.level,
        "reason": reason,
        "units": n,
        "seeds": seeds,
        "decidable": smallest_p(n) <= crit.level,
        "crosses": wins[first] > 0 and wins[second] > 0,
        "margin": margin,
        "confidence": bootstrap_sign(diffs, draws=crit.bootstrap, seed=crit.seed),
        "hypervolume": {first: hv_a, second: hv_b},
        "test_hypervolume": {first: _mean(u[0] for u in test_units.values()),
                             second: _mean(u[1] for u in test_units.values())},
        "unit_statistic": {str(k): {first: ua, second: ub, "seeds": len(ss)}
                           for k, (ua, ub, ss) in units.items()},
        "budgets": budgets,
        "front": {first: pareto_front(pa), second: pareto_front(pb)},
        "points": {first: len(pa), second: len(pb)},
    }


def _mean(values: Any) -> float:
    v = list(values)
    return sum(v) / len(v) if v else 0.0


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
            g.add_edge(a, b, margin=abs(v["margin"]), confidence=v["confidence"],
                       p_value=v["p_value"])
    return g


def break_cycles(g: nx.DiGraph) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Report every cycle, then remove the weakest edge (highest p-value, then lowest
    confidence and margin) of a remaining cycle until the graph is acyclic."""
    cycles = [list(c) for c in nx.simple_cycles(g)]
    broken = []
    while True:
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            break
        u, v = min(((e[0], e[1]) for e in cycle),
                   key=lambda e: (-g.edges[e]["p_value"], g.edges[e]["confidence"],
                                  g.edges[e]["margin"]))
        broken.append({"edge": u + v, **g.edges[u, v]})
        g.remove_edge(u, v)
    return cycles, broken


def topological_orders(g: nx.DiGraph) -> list[str]:
    return ["".join(o) for o in itertools.islice(nx.all_topological_sorts(g), MAX_ORDERS)]


def noise(table: pd.DataFrame, crit: Criteria) -> dict[str, Any]:
    """What a verdict sits in: the validation split's binomial standard error at the baseline
    accuracy, and how far two seeds of the same chain and sample land apart."""
    p = crit.baseline_accuracy
    se = None if not crit.val_images else 100 * math.sqrt(p * (1 - p) / crit.val_images)
    rows = table[table["kind"] == "pair"] if "kind" in table else table
    gaps = []
    if not rows.empty and rows["seed"].nunique() > 1:
        tau = rows["tau"].astype(str) if "tau" in rows else ""
        for _, g in rows.assign(_tau=tau).groupby(["order", "sample", "_tau"]):
            by_seed = g.groupby("seed")["val_accuracy"].mean().tolist()
            if len(by_seed) >= 2:
                gaps.append(100 * abs(by_seed[0] - by_seed[1]))
    return {"val_images": crit.val_images,
            "val_standard_error_points": se,
            "seed_gap_points": sum(gaps) / len(gaps) if gaps else None,
            "seed_gap_runs": len(gaps),
            "about": "standard error: binomial, at the baseline's validation accuracy; seed "
                     "gap: mean |seed a - seed b| of validation accuracy over the pair chains "
                     "(and τ) run with two seeds"}


def _trainings(rows: pd.DataFrame) -> int:
    if rows.empty or "trained" not in rows:
        return 0
    units = rows.groupby(["kind", "order", "sample", "seed"])["trained"].first()
    return int(units.sum())


def adaptive_replay(table: pd.DataFrame, letters: Sequence[str], crit: Criteria
                    ) -> dict[str, Any] | None:
    """Replays the adaptive-seed rule on a probe that ran every seed on every pair: which
    pairs would have got each further seed, the verdicts it would have reached and the stage
    trainings it would have used against those the fixed allocation used (None when the pairs
    ran one seed)."""
    rows = table[table["kind"].isin(["single", "pair"])] if "kind" in table else table
    seeds = sorted(rows["seed"].unique().tolist()) if not rows.empty else []
    if len(seeds) < 2:
        return None
    keep = rows[rows["seed"] == seeds[0]]
    looks = [{"seed": int(seeds[0]), "pairs": [a + b for a, b in
                                               itertools.combinations(letters, 2)]}]
    for seed in seeds[1:]:
        verdicts = pair_verdicts(keep, letters, crit)
        still = [p["pair"] for p in verdicts if not p["decided"] and p["decidable"]]
        if not still:
            break
        orders = set(still) | {p[::-1] for p in still}
        used = {c for p in still for c in p}
        add = rows[(rows["seed"] == seed)
                   & (((rows["kind"] == "pair") & rows["order"].isin(orders))
                      | ((rows["kind"] == "single") & rows["order"].isin(used)))]
        keep = pd.concat([keep, add])
        looks.append({"seed": int(seed), "pairs": still})
    final = pair_verdicts(keep, letters, crit)
    return {"looks": looks, "stage_trainings": _trainings(keep),
            "fixed_allocation_stage_trainings": _trainings(rows),
            "winners": {p["pair"]: p["winner"] for p in final}}


def decide(table: pd.DataFrame, letters: Sequence[str], crit: Criteria) -> dict[str, Any]:
    """The content of order.json."""
    verdicts = pair_verdicts(table, letters, crit)
    g = build_graph(letters, verdicts)
    cycles, broken = break_cycles(g)
    return {
        "letters": list(letters),
        "criteria": {"baseline_val_accuracy": crit.baseline_accuracy, "max_drop": crit.drop,
                     "tie_threshold": crit.tie_threshold, "budgets": list(crit.budgets),
                     "reference_point": list(crit.reference), "bootstrap": crit.bootstrap,
                     "alpha": crit.alpha, "looks": crit.looks, "level_per_look": crit.level,
                     "test": "paired sign-flip test over parameter samples (units) of the "
                             "per-unit hypervolume difference; seeds averaged inside a unit",
                     "decided_on": "validation split"},
        "noise": noise(table, crit),
        "adaptive_replay": adaptive_replay(table, letters, crit),
        "pairs": [{k: v for k, v in p.items() if k != "front"} for p in verdicts],
        "undecided": [p["pair"] for p in verdicts if not p["decided"]],
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
                        "winner": v["winner"], "tie": v["tie"], "decided": v["decided"],
                        "p_value": v["p_value"], "units": v["units"], "margin": v["margin"],
                        "confidence": v["confidence"]})
    return out


def check_repeats(table: pd.DataFrame, crit: Criteria) -> list[dict[str, Any]]:
    """Paper §6: AA against A once with params as strong as two applications (every stage
    the table has repeat runs of)."""
    out = []
    repeated = table[table["kind"] == "repeat"]["order"] if "kind" in table else []
    for a in sorted({str(o)[0] for o in repeated}):
        aa = table[(table["kind"] == "repeat") & (table["order"] == a + a)]
        one = table[(table["kind"] == "stronger") & (table["order"] == a)]
        if aa.empty or one.empty:
            continue
        v = compare(aa, one, crit, first=a + a, second=a + "+")
        out.append({"stage": a, "repeat_helps": v["winner"] == a + a, "winner": v["winner"],
                    "tie": v["tie"], "decided": v["decided"], "p_value": v["p_value"],
                    "units": v["units"], "margin": v["margin"], "confidence": v["confidence"],
                    "hypervolume": v["hypervolume"]})
    return out


def complete_seeds(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """The rows of the seeds that every (order, sample) of a sweep has finished, and those
    seeds. A sweep runs seed by seed, so one stopped part-way through a later seed is still
    ranked on equal terms (every order on the same seeds), not on a mix of one and two."""
    def units(frame: pd.DataFrame) -> set[tuple[str, int]]:
        return {(str(o), int(s)) for o, s in zip(frame["order"], frame["sample"], strict=True)}

    keys = units(rows)
    done = [int(seed) for seed, group in rows.groupby("seed") if units(group) == keys]
    if not done:  # no seed is complete: rank on what there is
        return rows, sorted(int(x) for x in set(rows["seed"]))
    return rows[rows["seed"].isin(done)], sorted(done)


def _rank(value: float, values: Iterable[float]) -> int:
    """Competition rank: 1 + how many score strictly higher, so tied orders share a rank
    (24 orders at zero hypervolume are all first, not 1st to 24th by name)."""
    return 1 + sum(1 for v in values if v > value + 1e-12)


def rank_orders(table: pd.DataFrame, crit: Criteria, kind: str = "brute") -> list[dict[str, Any]]:
    """Every full order of a brute-force sweep, best first by its mean per-unit validation
    hypervolume, with its best test BitOpsCR (chosen on validation) at each budget, its rank's
    bootstrap interval over units (5th–95th percentile), and whether it is distinguishable from
    the best (paired sign-flip test against the best order at `alpha`, no multiplicity
    correction: the set of orders not distinguishable from the best is, if anything, small)."""
    rows = table[table["kind"] == kind] if "kind" in table else table
    if rows.empty:
        return []
    rows, seeds = complete_seeds(rows)
    ref = crit.reference
    per: dict[str, dict[int, float]] = {}
    out: dict[str, dict[str, Any]] = {}
    for order, group in rows.groupby("order"):
        hv = run_hypervolumes(group, ref)
        per[str(order)] = {k: sum(v.values()) / len(v) for k, v in hv.items()}
        budgets = {}
        for b in crit.budgets:
            pick = pick_within_budget(group, crit.baseline_accuracy, b)
            budgets[f"{b:g}"] = None if pick is None else float(pick["bitops_cr"])
        out[str(order)] = {"order": str(order), "points": len(_points(group)),
                           "seeds": seeds, "test_bitops_cr_at": budgets}
    samples = sorted(set.intersection(*(set(v) for v in per.values())))
    for order, units in per.items():
        out[order]["hypervolume"] = _mean(units[k] for k in samples)
        out[order]["units"] = len(samples)
    ranked = sorted(out.values(), key=lambda r: (-r["hypervolume"], r["order"]))
    best = ranked[0]["order"]
    names = [r["order"] for r in ranked]
    ranks: dict[str, list[int]] = {o: [] for o in names}
    rng = random.Random(crit.seed)
    for _ in range(crit.bootstrap if samples else 0):
        pick = [samples[rng.randrange(len(samples))] for _ in samples]
        score = {o: sum(per[o][k] for k in pick) for o in names}
        for o in names:
            ranks[o].append(_rank(score[o], score.values()))
    for r in ranked:
        o = r["order"]
        r["rank"] = _rank(r["hypervolume"], [x["hypervolume"] for x in ranked])
        r["rank_interval"] = ([percentile(ranks[o], 0.05), percentile(ranks[o], 0.95)]
                              if ranks[o] else None)
        r["p_vs_best"] = 1.0 if o == best else sign_flip_p(
            [per[best][k] - per[o][k] for k in samples], seed=crit.seed)
        r["in_top_set"] = r["p_vs_best"] > crit.alpha
    return ranked
