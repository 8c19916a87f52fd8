"""Confirm before export: a candidate is exported only when a predictive bound on its mean
test drop is within the budget at `tune.confidence` (`search.bound`), judged on runs it was not
picked on.

Two kinds of candidate:

* Measured: a probe or brute-force point — the same chain, sample params and operating point
  (order, sample, τ) — that `runs.csv` already holds on two or more seeds is a candidate already
  run. Its runs are those rows, one per seed (validation and test accuracy, BitOpsCR, CR, as a
  confirmation run records them); they all judge it (it is picked on the mean that judges it:
  the bound's winner's-curse step prices that in), with no re-run and no confirmation slot.
* Re-run: the best points within the budget on validation that are measured on one seed only,
  from the probe and the brute force (`runs.csv`, their params from `samples.json`), and the
  feasible tuning trials — half from each source (the rest filled from the other), best
  validation BitOpsCR first, deduplicated by chain and params. Each is run at the study's seed
  (through the prefix cache: free where the probe or tune already trained it) and at the fresh
  seeds (the study's + k · FRESH_SEED_OFFSET, k = 1 … FRESH_SEEDS). The run it was picked on
  (`selected_seed`: a tuning trial's study-seed run, a one-seed point's own seed) is its
  selection run: shown, never judging (its validation figure is the lucky draw that made it a
  candidate).

Every run of one chain and params counts: a tuning trial whose steps are a measured point (a
warm start is a probe point queued again) keeps the probe's other seeds beside its
confirmation runs and is judged on all of them, never on the luckier ones. (This pooling needs
the tuning trial's params to be the probe point's: it happens where `tune.fixed` and
`probe.fixed` agree on the stages of the chain.)

The rule: a candidate is accepted when its bound — mean validation drop over its judging runs,
raised for the winner's curse, plus z · σ_run · sqrt((1 + n_val / n_test) · (1 / n + 1)), the
last 1 for the baseline run every drop is measured against — is within the budget; the
exported chain is the accepted one with the best mean validation BitOpsCR over its judging
runs. σ_run is pooled from the measured points (each model once), else from the
confirmation runs, else the validation split's binomial noise.

When no re-run candidate of a round is accepted (the picks sat at the budget's edge), up to
ROUNDS - 1 more rounds take the next best one-seed candidates whose validation drop, raised by
the mean regression seen so far (the optimism), would pass the bound on the fresh runs, and
whose BitOpsCR could beat the best accepted measured point: confirm more before falling back.
When none is accepted, or nothing was within the budget at all, the most accurate candidate
(by the mean of its judging runs: not its selection run) is exported, marked infeasible —
never nothing.

The exported model is the study-seed run, first in the candidate's runs, so `seqsearch apply`
on the exported chain rebuilds it. A measured candidate gets it from the prefix cache when the
probe's seeds include the study seed (probe seed s trains its stages with the seeds the study
seed s would: `chain.stage_seed`); otherwise it is trained now, joins the candidate's runs, and
the candidate is judged again — the next best is taken if it no longer holds.
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
from seqsearch.errors import SeqsearchError
from seqsearch.progress import note
from seqsearch.search.bound import EdgePrior, ExportRule, binomial_drop_sd, pooled_sd
from seqsearch.search.pareto import within_budget
from seqsearch.search.points import point_rows, tau_value
from seqsearch.search.tune import MEASURED_KINDS, measured_points
from seqsearch.stages import get_stage
from seqsearch.train import DivergedError

FRESH_SEED_OFFSET = 7919  # the k-th fresh confirmation seed is the study's + k times this
FRESH_SEEDS = 2  # fresh seeds a re-run candidate gets: its judging runs
ROUNDS = 3  # confirmation rounds at most: the first n candidates, then n more per round
EDGE_WINDOW = 3.0  # σ_run from points whose mean drop is within this many budgets
MIN_DOF = 10  # fewer repeats than this near the edge: σ_run from every measured point
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
    # the seed of the run it was picked on (a tuning trial's, a one-seed point's): that run is
    # shown but does not judge it; None for a measured point, picked on the mean that judges it
    selected_seed: int | None = None
    model: str = ""  # "order/sample": the τ rows of one E model share it

    @property
    def key(self) -> str:
        return json.dumps(self.steps, sort_keys=True, default=str)

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.runs]

    def mean(self, metric: str) -> float:
        return sum(float(r[metric]) for r in self.runs) / len(self.runs)

    @property
    def judging(self) -> list[dict[str, Any]]:
        """The runs that judge it: all but the run it was picked on."""
        return [r for r in self.runs if self.selected_seed is None
                or int(r["seed"]) != self.selected_seed]

    def judged_mean(self, metric: str) -> float:
        runs = self.judging
        return sum(float(r[metric]) for r in runs) / len(runs) if runs else math.nan

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
                             float(r["val_accuracy"]), float(r["val_bitops_cr"]),
                             selected_seed=int(r["seed"]),
                             model=f"{r['order']}/{int(r['sample'])}"))
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
    """Every probe and brute-force chain and params (with τ) that `runs` holds on two or more
    seeds, as a candidate already run on them (one run per seed, seeds ascending), whatever its
    drop; best mean validation BitOpsCR first. Two samples that drew the same params (a small
    discrete space: E's samples repeat) are one chain and params, trained once per seed
    through the prefix cache: one candidate, its ident naming both samples."""
    if not len(runs):
        return []
    rows = point_rows(runs[runs["kind"].isin(MEASURED_KINDS)])
    by_key: dict[str, Candidate] = {}
    named: dict[str, list[int]] = {}
    taus: dict[str, float | None] = {}
    for point, g in rows.groupby("_point", sort=False):
        first = g.iloc[0]
        chosen = _point_steps(first, samples)
        if chosen is None:
            continue
        key = json.dumps(chosen, sort_keys=True, default=str)
        c = by_key.get(key)
        if c is None:
            c = by_key[key] = Candidate(_source(first["kind"]), "", str(point[0]), chosen, 0.0,
                                        0.0, model=f"{point[0]}/{int(point[1])}")
            taus[key] = tau_value(point[2])
        named.setdefault(key, []).append(int(point[1]))
        for _, r in g.iterrows():
            if int(r["seed"]) not in c.seeds:
                c.runs.append(_row_run(r))
            if r["kind"] != "brute":
                c.source = "probe"
    out = []
    for key, c in by_key.items():
        if len(c.runs) < 2:
            continue
        c.runs.sort(key=lambda r: int(r["seed"]))
        ks = named[key]
        tau = taus[key]
        c.ident = (f"sample{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))} seeds "
                   + ", ".join(map(str, c.seeds)) + (f" tau {tau:g}" if tau is not None else ""))
        c.val_accuracy, c.val_bitops_cr = c.mean("val_accuracy"), c.mean("val_bitops_cr")
        out.append(c)
    return sorted(out, key=lambda c: (-c.val_bitops_cr, -c.val_accuracy))


def measured_dof(runs_csv: Path, samples_json: Path) -> float:
    """The degrees of freedom σ_run gets from the study's measured points (each model counted
    once, as `make_rule` pools them): 0 without a probe or where it ran one seed only."""
    if not (runs_csv.is_file() and samples_json.is_file()):
        return 0.0
    measured = measured_candidates(pd.read_csv(runs_csv), json.loads(samples_json.read_text()))
    return sum((len(c.judging) - 1) * w for c, w in zip(measured, model_weights(measured),
                                                         strict=True))


def probe_prices_sigma(runs_csv: Path, samples_json: Path) -> bool:
    """Whether the probe's repeated points give σ_run MIN_DOF dof or more: the export then
    confirms 4 candidates by default, else 8 (`TuneSection.confirm_count`)."""
    return measured_dof(runs_csv, samples_json) >= MIN_DOF


def model_weights(cands: Sequence[Candidate]) -> list[float]:
    """Each candidate's weight in σ_run's pool: 1 / (candidates of its model), so an E
    model's τ rows, one model measured at several τ, count once."""
    per_model: dict[str, int] = {}
    for c in cands:
        per_model[c.model] = per_model.get(c.model, 0) + 1
    return [1 / per_model[c.model] for c in cands]


def measured_counts(runs: pd.DataFrame, measured: Sequence[Candidate]) -> dict[str, int]:
    """How the measured points count: distinct chains and params on two or more seeds
    (`points`) beside runs.csv's (order, sample, τ) points on two or more seeds
    (`runs_csv_points`): more where samples drew the same params."""
    rows = point_rows(runs[runs["kind"].isin(MEASURED_KINDS)]) if len(runs) else runs
    seeds = rows.groupby("_point")["seed"].nunique() if len(rows) else pd.Series(dtype=int)
    return {"points": len(measured), "runs_csv_points": int((seeds >= 2).sum())}


def tune_candidates(trials: Sequence[Any], budget: float | None, seed: int | None = None,
                    by: str = "val_bitops_cr") -> list[Candidate]:
    """Completed tuning trials (feasible ones for a budget), best first by `by` (the tuning
    objective's figure: `val_bitops_cr`, or `speedup` where tuning timed each trial); `seed`:
    the study seed they ran (and were picked) on."""
    done = [t for t in trials if t.state.name == "COMPLETE" and "steps" in t.user_attrs]
    if budget is not None:
        done = [t for t in done if t.user_attrs.get("constraint", 1.0) <= 0]
        done.sort(key=lambda t: -float(t.user_attrs.get(by, t.user_attrs["val_bitops_cr"])))
    else:
        done.sort(key=lambda t: (-float(t.user_attrs["val_accuracy"]),
                                 -float(t.user_attrs["val_bitops_cr"])))
    return [Candidate("tune", f"trial {t.number}"
                      + (" (warm start)" if t.user_attrs.get("warm_start") else ""),
                      str(t.user_attrs["chain"]),
                      [list(s) for s in t.user_attrs["steps"]],
                      float(t.user_attrs["val_accuracy"]), float(t.user_attrs["val_bitops_cr"]),
                      selected_seed=seed)
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
    gaps = [c.val_accuracy - c.judged_mean("val_accuracy") for c in confirmed if c.judging]
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
    rule: ExportRule
    base: tuple[float, float | None]  # the baseline's validation and test accuracy
    # probe and brute-force points on two or more seeds, and how many of them pass the rule
    measured: dict[str, int] = field(default_factory=dict)
    speedups: dict[str, float] = field(default_factory=dict)  # by candidate key, when timed
    # candidates left out because a re-run diverged or collapsed: chain, from, id, error
    failed: list[dict[str, str]] = field(default_factory=list)

    def judgement(self, c: Candidate) -> dict[str, Any]:
        """The bound's figures for a candidate (chain.yaml's `confirmation`, confirm.json)."""
        return judgement(c, self.rule, *self.base)


def judgement(c: Candidate, rule: ExportRule, base_val: float, base_test: float | None = None
              ) -> dict[str, Any]:
    """The bound's figures for a candidate on its judging runs; `mean_test_drop` (their test
    mean) is what the bound promises to hold at `confidence`."""
    n = len(c.judging)
    if not n:
        return {"judging_runs": 0, "bound": None, "margin": None}
    drop = 100 * (base_val - c.judged_mean("val_accuracy"))
    out: dict[str, Any] = rule.describe(drop, n, _log_cr(c))
    out["judging_seeds"] = [int(r["seed"]) for r in c.judging]
    out["selection_seed"] = c.selected_seed if c.selected_seed in c.seeds else None
    tests = [float(r["test_accuracy"]) for r in c.judging if r.get("test_accuracy") is not None]
    if base_test is not None and len(tests) == n:
        out["mean_test_drop"] = 100 * (base_test - sum(tests) / n)
    return out


def _log_cr(c: Candidate) -> float:
    runs = c.judging or c.runs
    cr = sum(float(r["val_bitops_cr"]) for r in runs) / len(runs)
    return math.log(cr) if cr > 0 else -math.inf


def make_rule(measured: Sequence[Candidate], confirmed: Sequence[Candidate], runs: pd.DataFrame,
              trials: Sequence[Candidate], base_val: float, budget: float, confidence: float,
              images: tuple[int, int]) -> ExportRule:
    """The bound's inputs from the study's own runs: σ_run pooled over the measured points
    (each model counted once: an E model's τ rows share its weight), else over the re-run
    candidates' judging runs, else the binomial image noise of the validation split; the
    winner's-curse prior from every probe point and tuning trial."""
    def drops(c: Candidate) -> list[float]:
        return [100 * (base_val - float(r["val_accuracy"])) for r in c.judging]

    # Noise grows with the drop (a broken chain's seeds land points apart), and the bound is
    # about chains at the budget's edge: σ_run from the points whose mean drop is within
    # EDGE_WINDOW budgets (under normal noise a pair's mean and its difference are
    # independent, so choosing points by their mean does not bias the spread), all of them
    # where too few are.
    edge = max(1.0, EDGE_WINDOW * budget)
    near = [c for c in measured if sum(drops(c)) / max(1, len(drops(c))) <= edge]
    pool_of = near if sum(len(c.judging) - 1 for c in near) >= MIN_DOF else list(measured)
    sd, dof = pooled_sd([drops(c) for c in pool_of], model_weights(pool_of))
    models = len({c.model for c in pool_of})
    where = (f"{models} models measured on two or more seeds ({dof:.0f} dof"
             + (f", mean drop within {edge:g} points)" if pool_of is near else ")"))
    if sd is None:
        sd, dof = pooled_sd([drops(c) for c in confirmed])
        where = f"the confirmation runs of {len(confirmed)} candidates ({dof:.0f} dof)"
    if sd is None:
        sd, dof = binomial_drop_sd(base_val, images[0]), math.inf
        where = f"binomial image noise of {images[0]} validation images (no repeated point)"
    xs, ys, vs = [], [], []
    if len(runs):
        rows = point_rows(runs[runs["kind"].isin(MEASURED_KINDS)])
        for _, g in rows.groupby("_point", sort=False):
            cr = float(g["val_bitops_cr"].mean())
            xs.append(math.log(cr) if cr > 0 else -math.inf)
            ys.append(100 * (base_val - float(g["val_accuracy"].mean())))
            vs.append(sd ** 2 / g["seed"].nunique())
    for t in trials:
        xs.append(math.log(t.val_bitops_cr) if t.val_bitops_cr > 0 else -math.inf)
        ys.append(100 * (base_val - t.val_accuracy))
        vs.append(sd ** 2)
    return ExportRule(budget, confidence, sd, where, images[0], images[1],
                      EdgePrior.fit(xs, ys, vs), sigma_dof=dof)


def confirm(runs_csv: Path, samples_json: Path, trials: Sequence[Any], base_val: float,
            budget: float, n: int, runners: Sequence[ChainRunner], *, confidence: float,
            images: tuple[int, int], base_test: float | None = None,
            speed: Callable[[Any], float] | None = None) -> Confirmed | None:
    """Confirm up to n candidates, judge the measured ones and choose the export (see the
    module docstring). `runners`: the study seed's, then the fresh seeds'; `images`: the
    validation and test split sizes. With `speed` (tune.objective: latency: a model's measured
    speed-up), the confirmed candidates are ranked by it instead of validation BitOpsCR; which
    ones are confirmed, and the rule that confirms them, are unchanged."""
    runs = pd.read_csv(runs_csv) if runs_csv.is_file() else pd.DataFrame()
    samples = json.loads(samples_json.read_text()) if samples_json.is_file() else {}
    have = bool(len(runs)) and bool(samples)
    measured = {c.key: c for c in (measured_candidates(runs, samples) if have else [])}
    study_seed = int(runners[0].ctx.seed)
    all_tune = tune_candidates(trials, None, study_seed)
    rerun: list[Candidate] = []

    def rule() -> ExportRule:
        return make_rule(list(measured.values()), rerun, runs, all_tune, base_val, budget,
                         confidence, images)

    current = [rule()]

    def passes(c: Candidate) -> bool:
        n_judging = len(c.judging)
        return n_judging > 0 and current[0].passes(
            100 * (base_val - c.judged_mean("val_accuracy")), n_judging, _log_cr(c))

    # on their own seeds, before any confirmation run joins them
    counts = {**measured_counts(runs, list(measured.values())),
              "within_budget": sum(map(passes, measured.values()))}

    def one_seed(b: float | None) -> list[Candidate]:
        return ([c for c in probe_candidates(runs, samples, base_val, b) if c.key not in measured]
                if have else [])

    # under a latency objective the fastest feasible trials are confirmed first
    by = "speedup" if speed is not None else "val_bitops_cr"
    probe, tune = one_seed(budget), tune_candidates(trials, budget, study_seed, by)
    chosen = pick(probe, tune, max(1, n))
    within = bool(chosen) or any(within_budget(base_val, float(r["val_accuracy"]), budget)
                                 for c in measured.values() for r in c.runs)
    if not within:  # nothing measured within the budget: the most accurate points instead
        chosen = pick(one_seed(None), tune_candidates(trials, None, study_seed), max(1, n))
    if not chosen and not measured:
        return None
    models: dict[str, Any] = {}

    def run_round(batch: list[Candidate], label: str) -> list[Candidate]:
        """The candidates re-run; one whose re-run diverged or collapsed is left out (a chain
        that fails on a fresh seed cannot keep a promise), the others go on."""
        done = []
        tried.update(c.key for c in batch)
        for i, c in enumerate(batch, start=1):
            note(f"[confirm] {label}{i}/{len(batch)}: {c.chain} from {c.source} {c.ident} on "
                 f"the study seed and {len(runners) - 1} fresh one(s)")
            try:
                models[c.key] = run_candidate(c, runners)[0]
            except DivergedError as exc:
                note(f"[confirm] {c.chain} {c.ident} left out: a re-run failed ({exc})")
                failed.append({"chain": c.chain, "from": c.source, "id": c.ident,
                               "error": str(exc)})
                measured.pop(c.key, None)
                continue
            pool(c, measured.pop(c.key, None))
            rerun.append(c)
            done.append(c)
        current[0] = rule()  # the re-runs are repeats too where nothing else is
        return done

    failed: list[dict[str, str]] = []
    tried: set[str] = set()
    chosen = run_round(chosen, "")
    ok = [c for c in chosen if passes(c)]
    fresh = max(1, len(runners) - 1)
    for extra in range(2, ROUNDS + 1) if within else ():
        if ok:
            break
        # The bound rejected every candidate re-run: the picks sat at the budget's edge. Before
        # settling for a less compressed measured point, take the next ones whose drop, less
        # the optimism seen so far, passes the bound on the fresh runs they would get, and
        # that could beat the best measured point that passes.
        shrink = optimism(chosen)
        bar = max((c.mean("val_bitops_cr") for c in measured.values() if passes(c)),
                  default=-math.inf)
        seen = tried
        rest = [c for c in pick_all(probe, tune) if c.key not in seen and c.val_bitops_cr > bar
                and c.val_bitops_cr > 0 and current[0].passes(
                    100 * (base_val - c.val_accuracy + shrink), fresh,
                    math.log(c.val_bitops_cr))]
        if not rest:
            break
        batch = rest[:max(1, n)]
        note(f"[confirm] none passed the bound; round {extra}/{ROUNDS}: {len(batch)} candidates "
             f"with their validation accuracy lowered by the optimism seen, "
             f"{100 * shrink:.2f} pts")
        batch = run_round(batch, f"round {extra}: ")
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
            return speeds.get(c.key, -math.inf), c.judged_mean("val_accuracy")
        return c.judged_mean("val_bitops_cr"), c.judged_mean("val_accuracy")

    settled = _settle(pool_ok, rank, passes, models, runners[0])
    exported = [c for c in measured.values() if c.key in models]  # they cost an export run
    shown = sorted((c for c in measured.values() if passes(c)), key=rank, reverse=True)

    def considered(best: Candidate) -> list[Candidate]:
        out = {c.key: c for c in [*chosen, *exported, *shown[:max(1, n)], best]}
        return list(out.values())

    if settled is not None:
        b = judgement(settled, current[0], base_val)
        return Confirmed(settled, True, models[settled.key], considered(settled),
                         f"bound {b['bound']:.2f} <= {budget:g} points at confidence "
                         f"{confidence:g} on the mean of {b['judging_runs']} judging runs "
                         f"({settled.confirmed_by()})", current[0], (base_val, base_test),
                         counts, speeds, failed)
    pool_all = chosen + list(measured.values())
    if not pool_all:
        raise SeqsearchError(f"export: every candidate's re-run failed ({failed[0]['error']}); "
                             "nothing measured to export")
    # the most accurate by the runs that judge it: a tuning trial's selection run is the lucky
    # draw that made it a candidate, here as in the bound
    def accuracy(c: Candidate) -> tuple[float, float]:
        acc = c.judged_mean("val_accuracy")
        return (-math.inf if math.isnan(acc) else acc), c.mean("val_bitops_cr")

    best = max(pool_all, key=accuracy)
    if best.key not in models:
        models[best.key] = study_seed_run(best, runners[0])
    why = ("no candidate's bound was within the budget" if within
           else "no measured chain was within the budget")
    return Confirmed(best, False, models[best.key], considered(best),
                     f"infeasible: {why}; exported the most accurate chain found", current[0],
                     (base_val, base_test), counts, failed=failed)


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
        try:
            models[best.key] = study_seed_run(best, runner)
        except DivergedError as exc:
            note(f"[confirm] {best.chain} {best.ident}: the study-seed run for export failed "
                 f"({exc}); the next best instead")
            ok.remove(best)
            continue
        if not passes(best):
            note(f"[confirm] {best.chain} {best.ident}: the study-seed run for export takes its "
                 f"bound over the budget ({best.confirmed_by()}); the next best instead")
            ok.remove(best)
    return None
