"""From the runs table to an order: per-pair verdicts, the DAG, cycles, topological orders.

Decisions use the validation split (accuracy and BitOpsCR of the validation samples); test
figures are reported beside them. The unit of evidence is a parameter sample; its seeds are
repeats inside it. Per pair {A, B}, per unit and per seed both orders ran, a statistic in
accuracy points, positive when AB is better (`probe.statistic`):

- `gap` (default): the matched-compression accuracy gap of AB's run over BA's (`search.gap`):
  every run counts, however far below the baseline it lands;
- `hypervolume`: each run's hypervolume in (accuracy, log BitOpsCR) above the reference point
  (baseline accuracy minus the largest budget, log BitOpsCR 0), their difference divided by the
  unit's log BitOpsCR span. Runs below the reference count as zero, so a unit whose runs all
  fall below it says nothing (it is not counted as decidable).

A unit's statistic is the mean over its seeds. A paired sign-flip test across units
(`stats.sign_flip_p`) gives each pair's p-value; the pairs of a study are one family, corrected
by Holm's step-down at alpha / looks (`probe.alpha`, looks planned by the sequential design), so
the chance of any false edge in the DAG is at most alpha. A pair is

- **decided** (an edge) when Holm rejects "no order effect" and the mean statistic is at least
  `probe.min_effect` points;
- **equivalent** ("either order is fine", no edge by evidence) when two one-sided tests put the
  mean inside ±`probe.min_effect` at the Bonferroni level alpha / (looks × pairs);
- **undecided** otherwise, with a power line: the smallest effect its units could detect with
  80 % power and the units it would need for the effect it saw.

`confidence` is the share of bootstrap resamples of the units whose mean keeps the observed
sign. Best BitOpsCR at each budget and whether the pooled fronts cross are reported beside.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import pandas as pd

from seqsearch.config import DEFAULT_BUDGETS, DEFAULT_MIN_EFFECT
from seqsearch.errors import SeqsearchError
from seqsearch.search.gap import matched_gap, normalised_hypervolume_gap
from seqsearch.search.null import label_swap_null
from seqsearch.search.pareto import (
    Point,
    best_within,
    hypervolume,
    pareto_front,
    within_budget,
)
from seqsearch.search.points import model_of, point_rows
from seqsearch.search.stats import (
    bootstrap_sign,
    detectable_effect,
    equivalence_p,
    holm,
    look_alpha,
    percentile,
    power_line,
    sign_flip_p,
    smallest_p,
)
from seqsearch.stages import get_stage

MAX_ORDERS = 120
NULL_DRAWS = 20_000  # drawn studies of the label-swap null: its rate to about ±0.002


@dataclass(frozen=True)
class Criteria:
    baseline_accuracy: float  # validation accuracy of the baseline, fraction
    max_drop: float | None = None  # points; None: the largest budget
    tie_threshold: float = 0.05  # log BitOpsCR: budget wins closer than this are ties
    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    bootstrap: int = 200
    seed: int = 0
    alpha: float = 0.1
    looks: int = 1  # looks the sequential design plans: each tests at alpha / looks
    val_images: int | None = None  # size of the validation split, for its standard error
    statistic: str = "gap"  # gap | hypervolume
    min_effect: float = DEFAULT_MIN_EFFECT  # points: the practical size of an order effect
    test_baseline_accuracy: float | None = None  # the test split's reference (None: validation)
    max_samples: int | None = None  # the most units the design lets a pair reach
    # looks that get alpha for edges (`stats.edge_looks`): None, every look (alpha / looks);
    # else alpha / edge_looks at looks where a pair has at least `edge_units` units, none below
    edge_looks: int | None = None
    edge_units: int = 0
    pairs: tuple[str, ...] | None = None  # the pairs probed (`probe.pairs`); None: every pair

    @property
    def drop(self) -> float:
        return max(self.budgets) if self.max_drop is None else self.max_drop

    @property
    def reference(self) -> tuple[float, float]:
        return (self.baseline_accuracy - self.drop / 100.0, 0.0)

    @property
    def test_reference(self) -> tuple[float, float]:
        base = self.baseline_accuracy if self.test_baseline_accuracy is None \
            else self.test_baseline_accuracy
        return (base - self.drop / 100.0, 0.0)

    @property
    def level(self) -> float:
        return look_alpha(self.alpha, self.looks)

    @property
    def edge_level(self) -> float:
        """The level a look with alpha for edges tests at (Holm over the pairs below it)."""
        return self.level if self.edge_looks is None else look_alpha(self.alpha, self.edge_looks)


def _points(df: pd.DataFrame, split: str = "val") -> list[tuple[float, float]]:
    acc = df[f"{split}_accuracy" if split == "val" else "test_accuracy"]
    cr = df["val_bitops_cr" if split == "val" else "bitops_cr"]
    return [(float(a), math.log(float(c))) for a, c in zip(acc, cr, strict=True) if c > 0]


def pick_within_budget(rows: pd.DataFrame, base_val: float, budget: float) -> pd.Series | None:
    """The row with the best validation BitOpsCR whose validation accuracy drop (points) is
    within the budget — chosen on validation, so its test figures can be reported honestly."""
    ok = rows[[within_budget(base_val, a, budget) for a in rows["val_accuracy"]]]
    return None if ok.empty else ok.loc[ok["val_bitops_cr"].idxmax()]


def run_hypervolumes(rows: pd.DataFrame, ref: tuple[float, float], split: str = "val"
                     ) -> dict[int, dict[int, float]]:
    """{sample: {seed: hypervolume of that run's points}} (an E chain's run is its τ sweep)."""
    out: dict[int, dict[int, float]] = {}
    for (sample, seed), g in rows.groupby(["sample", "seed"]):
        out.setdefault(int(sample), {})[int(seed)] = hypervolume(_points(g, split), ref)
    return out


def run_points(rows: pd.DataFrame, split: str = "val") -> dict[int, dict[int, list[Point]]]:
    """{sample: {seed: that run's (accuracy, log BitOpsCR) points}} (an E run: its τ sweep)."""
    out: dict[int, dict[int, list[Point]]] = {}
    for (sample, seed), g in rows.groupby(["sample", "seed"]):
        out.setdefault(int(sample), {})[int(seed)] = _points(g, split)
    return out


def unit_statistics(ab: pd.DataFrame, ba: pd.DataFrame, crit: Criteria, split: str = "val"
                    ) -> dict[int, dict[str, Any]]:
    """Per sample both orders ran on a common seed: the statistic (points, positive when AB is
    better; mean over those seeds), the per-seed values, and whether it is informative (can be
    non-zero: the gap always is; a hypervolume only where a run has a point above the
    reference)."""
    ref = crit.reference if split == "val" else crit.test_reference
    pa, pb = run_points(ab, split), run_points(ba, split)
    out: dict[int, dict[str, Any]] = {}
    for sample in sorted(set(pa) & set(pb)):
        per_seed: dict[int, float] = {}
        informative = False
        hv: list[tuple[float, float]] = []
        for seed in sorted(set(pa[sample]) & set(pb[sample])):
            a, b = pa[sample][seed], pb[sample][seed]
            if crit.statistic == "hypervolume":
                ha, hb = hypervolume(a, ref), hypervolume(b, ref)
                span = max((x for _, x in a + b), default=0.0)
                per_seed[seed] = normalised_hypervolume_gap(ha, hb, span)
                informative = informative or ha > 0 or hb > 0
                hv.append((ha, hb))
            else:
                gap = matched_gap(a, b)
                if gap is None:
                    continue
                per_seed[seed] = gap
                informative = True
        if per_seed:
            out[sample] = {"value": sum(per_seed.values()) / len(per_seed),
                           "seeds": per_seed, "informative": informative,
                           "hypervolume": [sum(h[0] for h in hv) / len(hv),
                                           sum(h[1] for h in hv) / len(hv)] if hv else None}
    return out


def seed_spread(units: dict[int, dict[str, Any]]) -> float | None:
    """The standard deviation of one seed's statistic around its unit's mean, from the units
    with two or more seeds (None where none has): the seed part of the noise."""
    sq, dof = 0.0, 0
    for u in units.values():
        vals = list(u["seeds"].values())
        if len(vals) >= 2:
            m = sum(vals) / len(vals)
            sq += sum((v - m) ** 2 for v in vals)
            dof += len(vals) - 1
    return math.sqrt(sq / dof) if dof else None


def compare(ab: pd.DataFrame, ba: pd.DataFrame, crit: Criteria, *, first: str = "AB",
            second: str = "BA") -> dict[str, Any]:
    """Verdict for two orders of one pair, from their rows, tested alone at `crit.level`
    (`decide` then corrects a study's pairs together; see the module docstring)."""
    units = unit_statistics(ab, ba, crit)
    diffs = [u["value"] for u in units.values()]
    n = len(units)
    effect = sum(diffs) / n if n else 0.0
    p_value = sign_flip_p(diffs, seed=crit.seed)
    # equivalence needs evidence: a censored unit's zero (hypervolume) is not a measured tie
    eq_p = equivalence_p([u["value"] for u in units.values() if u["informative"]],
                         crit.min_effect, seed=crit.seed)
    informative = sum(1 for u in units.values() if u["informative"])
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
    test_units = unit_statistics(ab, ba, crit, "test")
    seeds = sorted({s for u in units.values() for s in u["seeds"]})
    spread = seed_spread(units)
    verdict = {
        "orders": [first, second],
        "statistic": crit.statistic,
        "p_value": p_value,
        "equivalence_p": eq_p,
        "min_effect": crit.min_effect,
        "units": n,
        # the samples the pair ran (either order): the look it reached, whatever failed in it
        "samples": len({int(x) for rows in (ab, ba) if len(rows) for x in rows["sample"]}),
        "informative_units": informative,
        "seeds": seeds,
        "crosses": wins[first] > 0 and wins[second] > 0,
        "effect": effect,
        "margin": effect,
        "interval": _interval(diffs, crit),
        "confidence": bootstrap_sign(diffs, draws=crit.bootstrap, seed=crit.seed),
        "test_effect": _mean(u["value"] for u in test_units.values()),
        "noise": {"unit_sd": power_line(diffs, crit.level)["sd"], "seed_sd": spread},
        "unit_statistic": {str(k): {"value": u["value"], "seeds": len(u["seeds"]),
                                    **({first: u["hypervolume"][0], second: u["hypervolume"][1]}
                                       if u["hypervolume"] else {})}
                           for k, u in units.items()},
        "budgets": budgets,
        "front": {first: pareto_front(pa), second: pareto_front(pb)},
        "points": {first: len(pa), second: len(pb)},
    }
    if crit.statistic == "hypervolume":
        verdict["hypervolume"] = {first: _mean(u["hypervolume"][0] for u in units.values()),
                                  second: _mean(u["hypervolume"][1] for u in units.values())}
    return settle(verdict, crit.level, crit.level, crit)


def settle(v: dict[str, Any], level: float, eq_level: float, crit: Criteria,
           power_level: float | None = None) -> dict[str, Any]:
    """The verdict's outcome at a level: `order` (a winner), `equivalent` or `undecided`, with
    its reason and power line. `level` is the pair's test level (Holm's, in a study),
    `eq_level` its equivalence level, `power_level` the level its power line is stated at
    (default `level`; in a study Holm's first step, the level a pair must meet when no other
    pair is decided: its own Holm level assumes the pairs before it were)."""
    first, second = v["orders"]
    significant = v.get("rejected", v["p_value"] <= level)
    big = abs(v["effect"]) >= crit.min_effect and v["effect"] != 0
    decided = bool(significant and big)
    equivalent = not decided and v["equivalence_p"] <= eq_level
    if decided:
        reason = f"p = {v['p_value']:.3g} <= {level:.3g}, effect {v['effect']:+.2f} pts"
    elif equivalent:
        reason = (f"equivalent: mean {v['effect']:+.2f} pts inside ±{crit.min_effect:g} "
                  f"(TOST p = {v['equivalence_p']:.3g} <= {eq_level:.3g})")
    elif significant:
        reason = (f"p = {v['p_value']:.3g}, but |effect| {abs(v['effect']):.2f} pts "
                  f"< min_effect {crit.min_effect:g}")
    else:
        reason = f"p = {v['p_value']:.3g} > {level:.3g}"
    diffs = [u["value"] for u in v["unit_statistic"].values()]
    at = level if power_level is None else power_level
    power = power_line(diffs, at)
    power["level"] = at
    at_min = power_line(diffs, at, crit.min_effect)
    power["min_effect_units_needed"] = at_min["units_needed"]
    if "units_needed_over" in at_min:
        power["min_effect_units_needed_over"] = at_min["units_needed_over"]
    if crit.max_samples and power["detectable"] is not None and v["units"]:
        # what the design's largest K could detect at this noise
        power["max_samples"] = crit.max_samples
        power["detectable_at_max_samples"] = detectable_effect(
            crit.max_samples, float(power["sd"] or 0.0), at)
    v.update({
        "winner": (first if v["effect"] > 0 else second) if decided else None,
        "decided": decided,
        "equivalent": equivalent,
        "outcome": "order" if decided else ("equivalent" if equivalent else "undecided"),
        "tie": not decided,
        "alpha": level,
        "equivalence_alpha": eq_level,
        "reason": reason,
        "decidable": smallest_p(v["informative_units"]) <= level,
        "power": power,
    })
    return v


def _interval(diffs: Sequence[float], crit: Criteria) -> list[float] | None:
    """A 90 % bootstrap interval (5th–95th percentile) of the mean statistic over units."""
    if len(diffs) < 2 or crit.bootstrap == 0:
        return None
    rng = random.Random(crit.seed)
    means = [sum(diffs[rng.randrange(len(diffs))] for _ in diffs) / len(diffs)
             for _ in range(crit.bootstrap)]
    return [percentile(means, 0.05), percentile(means, 0.95)]


def _mean(values: Any) -> float:
    v = list(values)
    return sum(v) / len(v) if v else 0.0


def pair_verdicts(table: pd.DataFrame, letters: Sequence[str], crit: Criteria,
                  kind: str = "pair", kept: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> list[dict[str, Any]]:
    """Every pair's verdict, the pairs corrected together (`family`); `kept`: the edges an
    interim look decided."""
    rows = table[table["kind"] == kind] if "kind" in table else table
    out = []
    for a, b in itertools.combinations(letters, 2):
        if crit.pairs is not None and a + b not in crit.pairs:
            continue  # not probed by this study (rows from another probe may be there)
        ab, ba = rows[rows["order"] == a + b], rows[rows["order"] == b + a]
        if ab.empty or ba.empty:
            continue
        out.append({"pair": a + b, **compare(ab, ba, crit, first=a + b, second=b + a)})
    return family(out, crit, kept)


def family(verdicts: list[dict[str, Any]], crit: Criteria,
           kept: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The pairs that build one DAG as one family: Holm's step-down over their p-values at
    alpha / looks, so the chance of any false edge is at most alpha; equivalence at the
    Bonferroni level alpha / (looks × pairs). Each verdict gets the level it met or missed.

    `kept`: pairs an interim look decided ({pair: {"look", "alpha", ...}}). They stopped
    getting data there; their rejection stands at the level it met, and the later Holm runs
    over the other pairs only (a rejected hypothesis leaves the family, as in Holm's own step
    down). Recomputing them with the rest could un-decide an edge: a pair ranked before it
    that was significant but too small to be an edge gets more data, its p rises, and the
    kept pair's Holm level falls."""
    kept = kept or {}
    m = len(verdicts)
    eq_level = crit.level / max(1, m)
    rest = [v for v in verdicts if v["pair"] not in kept]

    def spent(v: dict[str, Any]) -> bool:  # is the pair at a look with alpha for edges?
        # the look is the samples it ran: a unit lost to failed runs (a diverged or collapsed
        # fit, no common seed left) must not keep a pair from its final look's alpha forever
        return int(v.get("samples", v["units"])) >= crit.edge_units

    levels = dict(zip((id(v) for v in rest),
                      holm([v["p_value"] if spent(v) else 1.0 for v in rest],
                           crit.edge_level), strict=True))
    for v in verdicts:
        k = kept.get(v["pair"])
        level, rejected = (float(k["alpha"]), True) if k else levels[id(v)]
        if not k and not spent(v):
            level = 0.0  # its look has no alpha for edges: it cannot reject there
        v["rejected"] = rejected
        settle(v, level, eq_level, crit, power_level=crit.edge_level / max(1, m))
        del v["rejected"]
        v["family"] = {"pairs": m, "looks": crit.looks, "alpha": crit.alpha,
                       "edge_looks": crit.edge_looks or crit.looks,
                       "method": "Holm over pairs at alpha / looks with alpha for edges"}
        if k:
            v["family"]["decided_at_look"] = int(k["look"])
    return verdicts


def build_graph(letters: Sequence[str], verdicts: Sequence[dict[str, Any]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(letters)
    for v in verdicts:
        if v["winner"]:
            a, b = v["winner"][0], v["winner"][1]
            g.add_edge(a, b, margin=abs(v["effect"]), confidence=v["confidence"],
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
                   key=lambda e: (-g.edges[e]["p_value"], _known(g.edges[e]["confidence"]),
                                  g.edges[e]["margin"]))
        broken.append({"edge": u + v, **g.edges[u, v]})
        g.remove_edge(u, v)
    return cycles, broken


def _known(confidence: float | None) -> float:
    return 0.5 if confidence is None else confidence


def topological_orders(g: nx.DiGraph) -> list[str]:
    return ["".join(o) for o in itertools.islice(nx.all_topological_sorts(g), MAX_ORDERS)]


def noise(table: pd.DataFrame, crit: Criteria) -> dict[str, Any]:
    """What a verdict sits in: the validation split's binomial standard error at the baseline
    accuracy, and how far two seeds of the same chain and sample land apart: over all pair
    models (an E model's τ rows are one model: its gap is their mean), per order, and split
    into chains with a student (a stage whose registry entry says it trains a new network,
    adding its own seed noise) and chains without one."""
    p = crit.baseline_accuracy
    se = None if not crit.val_images else 100 * math.sqrt(p * (1 - p) / crit.val_images)
    rows = table[table["kind"] == "pair"] if "kind" in table else table
    per_model: dict[tuple[Any, ...], list[float]] = {}
    if not rows.empty and rows["seed"].nunique() > 1:
        for point, g in point_rows(rows).groupby("_point", sort=False):
            by_seed = g["val_accuracy"].tolist()  # one row per seed, seeds ascending
            if len(by_seed) >= 2:
                per_model.setdefault(model_of(point), []).append(
                    100 * abs(by_seed[0] - by_seed[1]))
    gaps: dict[str, list[float]] = {}
    for (order, _), values in per_model.items():
        gaps.setdefault(str(order), []).append(sum(values) / len(values))

    def mean(orders: Sequence[str]) -> tuple[float | None, int]:
        values = [g for o in orders for g in gaps[o]]
        return (sum(values) / len(values) if values else None), len(values)

    letters = {c for o in gaps for c in o}
    students = sorted(c for c in letters if _is_student(c))

    def taught(order: str) -> bool:
        return any(c in order for c in students)

    every, n = mean(list(gaps))
    plain, n_plain = mean([o for o in gaps if not taught(o)])
    with_student, n_taught = mean([o for o in gaps if taught(o)])
    return {"val_images": crit.val_images,
            "val_standard_error_points": se,
            "seed_gap_points": every,
            "seed_gap_runs": n,  # models: one per chain and sample, whatever its τ rows
            "seed_gap_unit": "model",
            "seed_gap_points_without_student": plain,
            "seed_gap_runs_without_student": n_plain,
            "seed_gap_points_with_student": with_student,
            "seed_gap_runs_with_student": n_taught,
            "students": students,
            "seed_gap_by_order": {o: {"points": sum(v) / len(v), "runs": len(v)}
                                  for o, v in sorted(gaps.items())},
            "about": "standard error: binomial, at the baseline's validation accuracy; seed "
                     "gap: mean |seed a - seed b| of validation accuracy over the pair models "
                     "run with two seeds (an E model's τ rows averaged into one); 'with "
                     f"student': chains holding {', '.join(students) or 'no'} student stage"}


def _is_student(letter: str) -> bool:
    """Whether the registry says the stage trains a new network (False for a letter it does
    not hold: planted tables use A, B, ...)."""
    try:
        return get_stage(letter).info.student
    except SeqsearchError:
        return False


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
    ran one seed; `replayed: False` with the reason when the fixed allocation did not run)."""
    rows = table[table["kind"].isin(["single", "pair"])] if "kind" in table else table
    seeds = sorted(rows["seed"].unique().tolist()) if not rows.empty else []
    if len(seeds) < 2:
        return None
    pairs = rows[rows["kind"] == "pair"] if "kind" in rows else rows
    ran = {(str(o), int(k), int(s)) for o, k, s in zip(pairs["order"], pairs["sample"],
                                                       pairs["seed"], strict=True)}
    design = {(o, k, s) for o, k, _ in ran for s in seeds}
    if ran != design:
        # An adaptive probe (or one stopped part-way): the fixed allocation never ran, so
        # neither its cost nor what the rule would have saved on it is measured.
        return {"replayed": False,
                "why": f"the probe did not run every seed on every pair ({len(ran)} of "
                       f"{len(design)} pair runs): the fixed allocation never ran, so there "
                       "is nothing to replay and no saving to claim"}
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
    return {"replayed": True, "looks": looks, "stage_trainings": _trainings(keep),
            "fixed_allocation_stage_trainings": _trainings(rows),
            "winners": {p["pair"]: p["winner"] for p in final}}


def decide(table: pd.DataFrame, letters: Sequence[str], crit: Criteria,
           kept: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The content of order.json; `kept`: the edges interim looks decided (`family`)."""
    verdicts = pair_verdicts(table, letters, crit, kept=kept)
    g = build_graph(letters, verdicts)
    cycles, broken = break_cycles(g)
    return {
        "letters": list(letters),
        "criteria": {"baseline_val_accuracy": crit.baseline_accuracy, "max_drop": crit.drop,
                     "tie_threshold": crit.tie_threshold, "budgets": list(crit.budgets),
                     "reference_point": list(crit.reference), "bootstrap": crit.bootstrap,
                     "alpha": crit.alpha, "looks": crit.looks, "level_per_look": crit.level,
                     "edge_looks": crit.edge_looks or crit.looks,
                     "edge_level_per_look": crit.edge_level, "edge_units": crit.edge_units,
                     "statistic": crit.statistic, "min_effect": crit.min_effect,
                     "pairs": len(verdicts),
                     "family_levels": {p["pair"]: p["alpha"] for p in verdicts},
                     "equivalence_level": crit.level / max(1, len(verdicts)),
                     "test": f"paired sign-flip test over parameter samples (units) of the "
                             f"per-unit {STATISTICS[crit.statistic]}, seeds averaged inside a "
                             f"unit; Holm over the {len(verdicts)} pairs at alpha / looks; "
                             f"equivalence: two one-sided tests at ±min_effect",
                     "decided_on": "validation split"},
        "noise": noise(table, crit),
        "adaptive_replay": adaptive_replay(table, letters, crit),
        "null_check": label_swap_null(verdicts, crit.edge_level, crit.min_effect,
                                      draws=NULL_DRAWS, seed=crit.seed),
        "pairs": [{k: v for k, v in p.items() if k != "front"} for p in verdicts],
        "decided": [p["pair"] for p in verdicts if p["outcome"] == "order"],
        "equivalent": [p["pair"] for p in verdicts if p["outcome"] == "equivalent"],
        "undecided": [p["pair"] for p in verdicts if p["outcome"] == "undecided"],
        "fronts": {p["pair"]: p["front"] for p in verdicts},
        "edges": [{"from": u, "to": v, **d} for u, v, d in g.edges(data=True)],
        "cycles": ["".join(c) for c in cycles],
        "broken_edges": broken,
        "orders": topological_orders(g),
    }


STATISTICS = {"gap": "matched-compression accuracy gap (points)",
              "hypervolume": "hypervolume difference over the unit's log BitOpsCR span (points)"}


def one_look(crit: Criteria) -> Criteria:
    """The criteria of a check that runs once on the probe's first samples and seeds (§4's
    insertions, §6's repetitions): its own family at the full alpha, not split over the pair
    probe's looks (with six checks at alpha / 3 looks, 8 units could never decide one)."""
    return replace(crit, looks=1, max_samples=None, edge_looks=None, edge_units=0)


def check_insertions(table: pd.DataFrame, winners: Sequence[str], letters: Sequence[str],
                     crit: Criteria) -> list[dict[str, Any]]:
    """Paper §4: does A→B still win with C inserted (ACB against BCA)? The checks are one
    family (Holm, as the pairs are), run once (`one_look`)."""
    crit = one_look(crit)
    rows = table[table["kind"] == "insert"]
    found: list[tuple[str, str, dict[str, Any]]] = []
    for ab in winners:
        a, b = ab[0], ab[1]
        for c in letters:
            if c in (a, b):
                continue
            acb, bca = rows[rows["order"] == a + c + b], rows[rows["order"] == b + c + a]
            if acb.empty or bca.empty:
                continue
            found.append((ab, c, compare(acb, bca, crit, first=a + c + b,
                                         second=b + c + a)))
    checked = family([dict(v, pair=ab) for ab, _, v in found], crit)
    return [{"pair": ab, "inserted": c, "holds": v["winner"] == ab[0] + c + ab[1],
             "winner": v["winner"], "tie": v["tie"], "decided": v["decided"],
             "outcome": v["outcome"], "p_value": v["p_value"], "alpha": v["alpha"],
             "units": v["units"], "margin": v["margin"], "effect": v["effect"],
             "confidence": v["confidence"]}
            for (ab, c, _), v in zip(found, checked, strict=True)]


def check_repeats(table: pd.DataFrame, crit: Criteria) -> list[dict[str, Any]]:
    """Paper §6: AA against A once with params as strong as two applications (every stage
    the table has repeat runs of). The checks are one family (Holm, as the pairs are), run
    once (`one_look`)."""
    crit = one_look(crit)
    found: list[tuple[str, dict[str, Any]]] = []
    repeated = table[table["kind"] == "repeat"]["order"] if "kind" in table else []
    for a in sorted({str(o)[0] for o in repeated}):
        aa = table[(table["kind"] == "repeat") & (table["order"] == a + a)]
        one = table[(table["kind"] == "stronger") & (table["order"] == a)]
        if aa.empty or one.empty:
            continue
        found.append((a, compare(aa, one, crit, first=a + a, second=a + "+")))
    checked = family([dict(v, pair=a + a) for a, v in found], crit)
    return [{"stage": a, "repeat_helps": v["winner"] == a + a, "winner": v["winner"],
             "tie": v["tie"], "decided": v["decided"], "outcome": v["outcome"],
             "p_value": v["p_value"], "alpha": v["alpha"], "units": v["units"],
             "margin": v["margin"], "confidence": v["confidence"], "effect": v["effect"],
             "hypervolume": v.get("hypervolume")}
            for (a, _), v in zip(found, checked, strict=True)]


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
        # the best is picked from the same data: the per-look level keeps the set wide enough
        r["in_top_set"] = r["p_vs_best"] > crit.level
    return ranked
