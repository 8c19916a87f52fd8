"""Confirm before export: every candidate is judged on the mean of two or more independent
seeds of its chain and params, so the exported chain is one whose figure is not one seed's luck.

Two kinds of candidate:

* Measured: a probe or brute-force point — the same chain, sample params and operating point
  (order, sample, τ) — that `runs.csv` already holds on two or more seeds is a candidate already
  run. Its runs are those rows, one per seed (validation and test accuracy, BitOpsCR, CR, as a
  confirmation run records them); it is judged by the rule below with no re-run and takes no
  confirmation slot.
* Re-run: the best points within the budget on validation that are measured on one seed only,
  from the probe and the brute force (`runs.csv`, their params from `samples.json`), and the
  feasible tuning trials — half from each source (the rest filled from the other), best
  validation BitOpsCR first, deduplicated by chain and params. Each is run at the study's seed
  (through the prefix cache: free where the probe or tune already trained it) and at a fresh
  seed (the study's + FRESH_SEED_OFFSET).

Every run of one chain and params counts: a tuning trial whose steps are a measured point (a
warm start is a probe point queued again) keeps the probe's other seeds beside its two
confirmation runs and is judged on the mean of all of them, never on the luckier two.

The rule: a candidate is confirmed when its mean validation drop over its seeds is within the
budget; the exported chain is the confirmed one with the best mean validation BitOpsCR. A
two-seed probe point and a confirmed tuning trial are compared on exactly that: both are means
over two independent trainings of the same chain and params from the same baseline. The seeds
differ — the probe's are the study's `probe.seeds`, the confirmation's the study seed and a
fresh one — and so does when the second seed was seen: a tuning trial is picked on its
study-seed run and meets the fresh seed afterwards, while a measured point is picked on the
mean that judges it, so at the budget's edge its mean is the more optimistic (its test drop,
never used to pick, shows by how much).

When none of a round of re-run candidates is confirmed (the picks sat at the budget's edge and
regressed), up to ROUNDS - 1 more rounds take the next best one-seed candidates whose
validation accuracy, lowered by the mean regression seen so far (the optimism), is still within
the budget and whose BitOpsCR could beat the best confirmed measured point. When none is
confirmed, or nothing was within the budget at all, the most accurate candidate (by the mean)
is exported, marked infeasible — never nothing.

The exported model is the study-seed run, first in the candidate's runs, so `seqsearch apply`
on the exported chain rebuilds it. A measured candidate gets it from the prefix cache when the
probe's seeds include the study seed (probe seed s trains with stage seeds s, s + 1, …, as the
study seed does); otherwise it is trained now, joins the candidate's runs, and the candidate is
judged again on the mean of all its seeds — the next best is taken if it no longer holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch.chain import ChainRunner, plan, with_policy_value
from seqsearch.progress import note
from seqsearch.search.pareto import within_budget
from seqsearch.search.tune import MEASURED_KINDS, measured_points
from seqsearch.stages import get_stage

FRESH_SEED_OFFSET = 7919  # the confirmation run's stage seeds start this far from the study's
ROUNDS = 3  # confirmation rounds at most: the first n candidates, then n more per round
RUN_FIGURES = ("val_accuracy", "val_bitops_cr", "test_accuracy", "bitops_cr", "cr")


@dataclass
class Candidate:
    source: str  # probe, brute or tune
    ident: str  # "sample 3 seed 0", "sample 3 seeds 0, 1" or "trial 17"
    chain: str
    steps: list[list[Any]]  # [[stage name, params]], the policy value (τ) filled in
    val_accuracy: float  # what it was picked on: one run's, or the seeds' mean when measured
    val_bitops_cr: float
    # one per seed, the study seed's first once run; `from`: confirm, export, probe or brute
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return json.dumps(self.steps, sort_keys=True, default=str)

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.runs]

    def mean(self, metric: str) -> float:
        return sum(float(r[metric]) for r in self.runs) / len(self.runs)

    def confirmed_by(self) -> str:
        """Which runs judge it, e.g. "probe seeds 0, 1" or "confirmation seeds 0, 7919; probe
        seed 1"."""
        by: dict[str, list[int]] = {}
        for r in self.runs:
            by.setdefault(str(r.get("from", "confirm")), []).append(int(r["seed"]))
        names = {"confirm": "confirmation", "export": "export run"}
        return "; ".join(f"{names.get(k, k)} seed{'s' if len(v) > 1 else ''} "
                         + ", ".join(str(s) for s in v) for k, v in by.items())


def _point_steps(r: Any, samples: dict[str, list[dict[str, Any]]]) -> list[list[Any]] | None:
    """A runs.csv row's chain as [stage, params] with its τ, or None for a sample that
    samples.json does not hold."""
    order, k = str(r["order"]), int(r["sample"])
    if any(k >= len(samples.get(get_stage(c).info.letter, [])) for c in order):
        return None
    steps = plan([(get_stage(c).info.name, samples[get_stage(c).info.letter][k]) for c in order])
    tau = _tau(r)
    return (with_policy_value(steps, tau) if tau is not None
            else [[s.stage, dict(s.params)] for s in steps])


def _tau(r: Any) -> float | None:
    tau = r.get("tau")
    return None if tau is None or pd.isna(tau) else float(tau)


def _source(kind: Any) -> str:
    return "brute" if kind == "brute" else "probe"


def probe_candidates(runs: pd.DataFrame, samples: dict[str, list[dict[str, Any]]],
                     base_val: float, budget: float | None) -> list[Candidate]:
    """Measured probe and brute-force points, one per row, within the budget (or all, for
    `None`), best validation BitOpsCR first (most accurate first when no budget)."""
    rows = measured_points(runs, base_val, budget)
    out = []
    for _, r in rows.iterrows():
        chosen = _point_steps(r, samples)
        if chosen is None:
            continue
        tau = _tau(r)
        ident = f"sample {int(r['sample'])} seed {int(r['seed'])}" + (
            f" tau {tau:g}" if tau is not None else "")
        out.append(Candidate(_source(r["kind"]), ident, str(r["order"]), chosen,
                             float(r["val_accuracy"]), float(r["val_bitops_cr"])))
    return out


def _row_run(r: Any) -> dict[str, Any]:
    """A runs.csv row as a confirmation run records it; it cost the confirmation nothing."""
    def figure(name: str) -> float | None:
        v = r.get(name)
        return None if v is None or pd.isna(v) else float(v)

    return {"seed": int(r["seed"]), **{m: figure(m) for m in RUN_FIGURES}, "trained": 0,
            "from": _source(r["kind"])}


def measured_candidates(runs: pd.DataFrame, samples: dict[str, list[dict[str, Any]]]
                        ) -> list[Candidate]:
    """Every probe and brute-force point (order, sample, τ) that `runs` holds on two or more
    seeds, as a candidate already run on them (one run per seed, seeds ascending), whatever
    its drop; best mean validation BitOpsCR first."""
    if not len(runs):
        return []
    rows = runs[runs["kind"].isin(MEASURED_KINDS)].sort_values("seed", kind="stable")
    points: dict[tuple[str, int, float | None], Candidate] = {}
    for _, r in rows.iterrows():
        point = (str(r["order"]), int(r["sample"]), _tau(r))
        c = points.get(point)
        if c is None:
            chosen = _point_steps(r, samples)
            if chosen is None:
                continue
            c = points[point] = Candidate(_source(r["kind"]), "", point[0], chosen, 0.0, 0.0)
        # a seed seen twice is one run listed twice (a pair is a full order of a two-stage
        # study, an insertion one of a three-stage study): the prefix cache ran it once
        if int(r["seed"]) not in c.seeds:
            c.runs.append(_row_run(r))
        if r["kind"] != "brute":
            c.source = "probe"
    out = []
    for (_, k, tau), c in points.items():
        if len(c.runs) < 2:
            continue
        c.ident = (f"sample {k} seeds " + ", ".join(map(str, c.seeds))
                   + (f" tau {tau:g}" if tau is not None else ""))
        c.val_accuracy, c.val_bitops_cr = c.mean("val_accuracy"), c.mean("val_bitops_cr")
        out.append(c)
    return sorted(out, key=lambda c: (-c.val_bitops_cr, -c.val_accuracy))


def tune_candidates(trials: Sequence[Any], budget: float | None) -> list[Candidate]:
    """Completed tuning trials (feasible ones for a budget), best first."""
    done = [t for t in trials if t.state.name == "COMPLETE" and "steps" in t.user_attrs]
    if budget is not None:
        done = [t for t in done if t.user_attrs.get("constraint", 1.0) <= 0]
        done.sort(key=lambda t: -float(t.user_attrs["val_bitops_cr"]))
    else:
        done.sort(key=lambda t: (-float(t.user_attrs["val_accuracy"]),
                                 -float(t.user_attrs["val_bitops_cr"])))
    return [Candidate("tune", f"trial {t.number}"
                      + (" (warm start)" if t.user_attrs.get("warm_start") else ""),
                      str(t.user_attrs["chain"]),
                      [list(s) for s in t.user_attrs["steps"]],
                      float(t.user_attrs["val_accuracy"]), float(t.user_attrs["val_bitops_cr"]))
            for t in done]


def pick(probe: list[Candidate], tune: list[Candidate], n: int) -> list[Candidate]:
    """Up to n distinct candidates: half from tuning, the rest from probe and brute force,
    then tuning again for what the probe could not fill."""
    out: dict[str, Candidate] = {}

    def take(source: list[Candidate], quota: int) -> None:
        for c in source:
            if quota <= 0 or len(out) >= n:
                return
            if c.key not in out:
                out[c.key] = c
                quota -= 1

    take(tune, math.ceil(n / 2))
    take(probe, n - len(out))
    take(tune, n - len(out))
    return list(out.values())


def pick_all(probe: list[Candidate], tune: list[Candidate]) -> list[Candidate]:
    """Every distinct candidate of both sources, best validation BitOpsCR first."""
    out: dict[str, Candidate] = {}
    for c in sorted(probe + tune, key=lambda c: -c.val_bitops_cr):
        out.setdefault(c.key, c)
    return list(out.values())


def optimism(confirmed: Sequence[Candidate]) -> float:
    """How much the picked validation accuracy exceeded the mean of its runs, on average (never
    below 0): the winner's curse of picking at the budget's edge."""
    gaps = [c.val_accuracy - c.mean("val_accuracy") for c in confirmed if c.runs]
    return max(0.0, sum(gaps) / len(gaps)) if gaps else 0.0


def run_candidate(c: Candidate, runners: Sequence[ChainRunner], *, label: str = "confirm"
                  ) -> list[Any]:
    """Each runner (study seed, fresh seed) runs the chain; returns the models."""
    models = []
    c.runs = []
    for runner in runners:
        result = runner.run(plan([(s, p) for s, p in c.steps]))
        final = result.records[-1]
        c.runs.append({"seed": runner.ctx.seed, "val_accuracy": final["val_accuracy"],
                       "val_bitops_cr": runner.reference.bitops / final["val_bitops"],
                       "test_accuracy": final["test_accuracy"],
                       "bitops_cr": final["bitops_cr"], "cr": final["cr"],
                       "trained": result.trained, "from": label})
        models.append(result.model)
    return models


def pool(c: Candidate, measured: Candidate | None) -> None:
    """Add the seeds a measured point of the same chain and params holds that `c`'s runs lack."""
    if measured is not None:
        c.runs += [r for r in measured.runs if int(r["seed"]) not in c.seeds]


def study_seed_run(c: Candidate, runner: ChainRunner) -> Any:
    """The model to export for a candidate not run by the confirmation: the chain at the study
    seed (from the prefix cache when the probe ran that seed). Its run goes first in `c.runs`,
    replacing the row of the same seed (the same model, unless the cache is gone) or joining
    the others. Returns the model."""
    kept = c.runs
    model = run_candidate(c, [runner], label="export")[0]
    run = c.runs[0]
    same = [r for r in kept if int(r["seed"]) == int(run["seed"])]
    if same and run["trained"] == 0:
        run["from"] = same[0]["from"]  # loaded, not trained: the probe's own model
    c.runs = [run, *[r for r in kept if int(r["seed"]) != int(run["seed"])]]
    return model


@dataclass
class Confirmed:
    candidate: Candidate
    feasible: bool
    model: Any
    considered: list[Candidate]
    why: str
    # probe and brute-force points on two or more seeds, and how many of them pass the rule
    measured: dict[str, int] = field(default_factory=dict)
    speedups: dict[str, float] = field(default_factory=dict)  # by candidate key, when timed


def confirm(runs_csv: Path, samples_json: Path, trials: Sequence[Any], base_val: float,
            budget: float, n: int, runners: Sequence[ChainRunner], *,
            speed: Callable[[Any], float] | None = None) -> Confirmed | None:
    """Confirm up to n candidates, judge the measured ones and choose the export (see the
    module docstring). With `speed` (tune.objective: latency: a model's measured speed-up),
    the confirmed candidates are ranked by it instead of validation BitOpsCR; which ones are
    confirmed, and the rule that confirms them, are unchanged."""
    runs = pd.read_csv(runs_csv) if runs_csv.is_file() else pd.DataFrame()
    samples = json.loads(samples_json.read_text()) if samples_json.is_file() else {}
    have = bool(len(runs)) and bool(samples)
    measured = {c.key: c for c in (measured_candidates(runs, samples) if have else [])}

    def passes(c: Candidate) -> bool:
        return within_budget(base_val, c.mean("val_accuracy"), budget)

    # on their own seeds, before any confirmation run joins them
    counts = {"points": len(measured), "within_budget": sum(map(passes, measured.values()))}

    def one_seed(b: float | None) -> list[Candidate]:
        return ([c for c in probe_candidates(runs, samples, base_val, b) if c.key not in measured]
                if have else [])

    probe, tune = one_seed(budget), tune_candidates(trials, budget)
    chosen = pick(probe, tune, max(1, n))
    within = bool(chosen) or any(within_budget(base_val, float(r["val_accuracy"]), budget)
                                 for c in measured.values() for r in c.runs)
    if not within:  # nothing measured within the budget: the most accurate points instead
        chosen = pick(one_seed(None), tune_candidates(trials, None), max(1, n))
    if not chosen and not measured:
        return None
    models: dict[str, Any] = {}

    def run_round(batch: list[Candidate], label: str) -> None:
        for i, c in enumerate(batch, start=1):
            note(f"[confirm] {label}{i}/{len(batch)}: {c.chain} from {c.source} {c.ident} on "
                 "the study seed and a fresh one")
            models[c.key] = run_candidate(c, runners)[0]
            pool(c, measured.pop(c.key, None))

    run_round(chosen, "")
    ok = [c for c in chosen if passes(c)]
    for extra in range(2, ROUNDS + 1) if within else ():
        if ok:
            break
        # Every candidate regressed: the picks sat at the budget's edge and were lucky. Take
        # the next ones whose measured drop, plus the optimism seen so far, is within budget,
        # and that could beat the best measured point already confirmed.
        shrink = optimism(chosen)
        bar = max((c.mean("val_bitops_cr") for c in measured.values() if passes(c)),
                  default=-math.inf)
        seen = {c.key for c in chosen}
        rest = [c for c in pick_all(probe, tune) if c.key not in seen and c.val_bitops_cr > bar
                and within_budget(base_val, c.val_accuracy - shrink, budget)]
        if not rest:
            break
        batch = rest[:max(1, n)]
        note(f"[confirm] none confirmed; round {extra}/{ROUNDS}: {len(batch)} candidates with "
             f"their validation accuracy lowered by the optimism seen, {100 * shrink:.2f} pts")
        run_round(batch, f"round {extra}: ")
        chosen += batch
        ok = [c for c in batch if passes(c)]

    pool_ok = ok + [c for c in measured.values() if passes(c)]
    speeds: dict[str, float] = {}
    if speed is not None:
        # every confirmed candidate needs its study-seed model to be timed; a run that adds a
        # seed changes its mean, so it is judged again
        for c in pool_ok:
            if c.key not in models:
                models[c.key] = study_seed_run(c, runners[0])
        pool_ok = [c for c in pool_ok if passes(c)]
        speeds = {c.key: float(speed(models[c.key])) for c in pool_ok}

    def rank(c: Candidate) -> tuple[float, float]:
        if speed is not None:
            return speeds.get(c.key, -math.inf), c.mean("val_accuracy")
        return c.mean("val_bitops_cr"), c.mean("val_accuracy")

    settled = _settle(pool_ok, rank, passes, models, runners[0])
    exported = [c for c in measured.values() if c.key in models]  # they cost an export run
    shown = sorted((c for c in measured.values() if passes(c)), key=rank, reverse=True)

    def considered(best: Candidate) -> list[Candidate]:
        out = {c.key: c for c in [*chosen, *exported, *shown[:max(1, n)], best]}
        return list(out.values())

    if settled is not None:
        return Confirmed(settled, True, models[settled.key], considered(settled),
                         f"confirmed within {budget:g} points on the mean of "
                         f"{len(settled.runs)} seeds ({settled.confirmed_by()})", counts,
                         speeds)
    pool_all = chosen + list(measured.values())
    best = max(pool_all, key=lambda c: (c.mean("val_accuracy"), c.mean("val_bitops_cr")))
    if best.key not in models:
        models[best.key] = study_seed_run(best, runners[0])
    why = ("no candidate stayed within the budget on the mean of its seeds"
           if within else "no measured chain was within the budget")
    return Confirmed(best, False, models[best.key], considered(best),
                     f"infeasible: {why}; exported the most accurate chain found", counts)


def _settle(ok: list[Candidate], rank: Callable[[Candidate], tuple[float, float]],
            passes: Callable[[Candidate], bool], models: dict[str, Any],
            runner: ChainRunner) -> Candidate | None:
    """The best confirmed candidate that has its study-seed model. A measured one gets it from
    `study_seed_run`; a run that adds a seed (or retrains a lost cache entry) changes its mean,
    so it is judged again and, failing, dropped for the next best."""
    ok = list(ok)
    while ok:
        best = max(ok, key=rank)
        if best.key in models:
            return best
        models[best.key] = study_seed_run(best, runner)
        if not passes(best):
            note(f"[confirm] {best.chain} {best.ident}: the study-seed run for export takes its "
                 f"mean over the budget ({best.confirmed_by()}); the next best instead")
            ok.remove(best)
    return None
