"""Optuna tuning of a chain's stage hyperparameters under an accuracy-drop budget.

Objective (default): maximise log BitOpsCR on the validation split subject to validation
accuracy drop ≤ budget (an Optuna constraint, `trial.set_constraint`, which Optuna 5 uses in
place of the deprecated `constraints_func`). `--multi-objective` maximises accuracy
and log BitOpsCR together. E's τ is chosen per trial on the validation split (the most
compressing τ within budget, else the most accurate), never on test; test figures are
recorded beside. Each trial reports after every stage, and a budget pruner stops trials whose
validation drop already exceeds the budget by more than a slack. The probe's prefix cache
is shared, so a trial trains only the stages no earlier chain trained with the same params.

Trials are slots: `trials` slots are queued in the storage and workers take them until none
is left, so any number of workers complete exactly that many distinct trials; a slot whose
worker died (SIGKILL) is queued again on the next run, and a failed trial (NaN loss, stage
error) keeps its slot with the reason recorded.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from seqsearch.chain import ChainRunner, operating_points, plan, with_policy_value
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import bitops_cr
from seqsearch.progress import note
from seqsearch.search.pareto import BUDGET_TOLERANCE, within_budget
from seqsearch.search.space import contains, stage_space
from seqsearch.search.storage import claim, reap_dead_trials, unclaimed
from seqsearch.stages import behaviour, get_stage
from seqsearch.train import DivergedError


@dataclass(frozen=True)
class TuneOptions:
    chains: tuple[str, ...]  # the choices of the `chain` param: sub-chains and warm starts
    trials: int  # the sampler's own trials; the warm start comes on top
    budget: float  # accuracy-drop budget, percentage points (the export's promise)
    multi_objective: bool = False
    pruner: bool = True
    prune_slack: float = 1.0
    seed: int = 0
    startup_trials: int = 5
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)
    fixed: tuple[tuple[str, Any], ...] = ()
    initial: tuple[dict[str, Any], ...] = ()  # the warm start: measured points, best first
    orders: tuple[str, ...] = ()  # the candidate full orders the sub-chains come from
    objective: str = "bitops"  # bitops | latency | both (tune.objective)
    runtime: str = "onnxruntime"  # where `latency` is measured (tune.runtime)
    space: tuple[tuple[str, Any], ...] = ()  # the study's narrowed params (search.space)
    aim: float | None = None  # the drop trials are held to (tune.aim); None: the budget

    @property
    def target(self) -> float:
        """The validation drop a trial must keep to count as feasible: `aim` where set (the
        budget less the export's margin, so the trials are the chains the bound accepts),
        else the budget."""
        return self.budget if self.aim is None else self.aim

    def study_name(self, name: str) -> str:
        mode = "-mo" if self.multi_objective else ""
        goal = "" if self.objective == "bitops" else f"-{self.objective}-{self.runtime}"
        aim = "" if self.aim is None else f"-aim{self.aim:g}"
        return f"{name}-tune-b{self.budget:g}{aim}{mode}{goal}"

    @property
    def directions(self) -> int:
        """How many values a trial returns."""
        return 2 if self.multi_objective or self.objective == "both" else 1

    def metric_names(self) -> list[str]:
        if self.multi_objective:
            return ["val accuracy", "log BitOpsCR"]
        return {"bitops": ["log BitOpsCR"], "latency": ["log speedup"],
                "both": ["log BitOpsCR", "log speedup"]}[self.objective]


MAX_CANDIDATE_ORDERS = 12  # topological orders of the DAG the tuning space draws sub-chains from


def subchains(orders: Sequence[str]) -> tuple[str, ...]:
    """Every non-empty sub-chain of each order (each stage on or off, the order kept),
    deduplicated, longest first, then as the orders list them."""
    seen: dict[str, None] = {}
    for order in orders:
        n = len(order)
        for mask in range(1, 2 ** n):
            seen["".join(order[i] for i in range(n) if mask >> i & 1)] = None
    return tuple(sorted(seen, key=lambda c: -len(c)))


def check_chain(letters: str) -> str:
    """A chain given as letters: every letter a stage, no forbidden repeat."""
    if not letters:
        raise SeqsearchError("--chain: give the order as stage letters, e.g. DPQE")
    plan([(c, {}) for c in letters])
    return letters


def search_space(chains: Sequence[str], fixed: dict[str, Any],
                 narrowed: Mapping[str, Any] | None = None) -> dict[str, BaseDistribution]:
    """Union of the chains' stage spaces (prefixed names), without fixed and policy params;
    `narrowed`: the study's `space` entries (search.space)."""
    space: dict[str, BaseDistribution] = {}
    for chain in chains:
        for letter in chain:
            stage = get_stage(letter)
            policy = set(behaviour.policy_params(stage))
            for key, dist in stage_space(stage.info, narrowed).items():
                if key not in fixed and stage.info.short(key) not in policy:
                    space[key] = dist
    return space


def suggest(trial: optuna.Trial | optuna.trial.FixedTrial, name: str,
            dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(type(dist).__name__)


def choose_point(points: Sequence[dict[str, Any]], base_acc: float, budget: float
                 ) -> dict[str, Any]:
    """The operating point (E: τ) on validation: most compressing within budget, else the
    most accurate."""
    feasible = [p for p in points if within_budget(base_acc, p["val_accuracy"], budget)]
    if feasible:
        return min(feasible, key=lambda p: (p["val_bitops"], -p["val_accuracy"]))
    return max(points, key=lambda p: (p["val_accuracy"], -p["val_bitops"]))


def pruner_regret(runs: Any, base_acc: float, budget: float, slack: float,
                  default_tau: float | None = None) -> dict[str, int]:
    """From the probe's pair runs: how many pair chains AB the budget pruner would stop after
    A (A's drop beyond budget + slack, at A's best τ, or at `default_tau` for the old rule)
    although AB itself has a point within the budget."""
    singles = runs[runs["kind"] == "single"]
    pairs = runs[runs["kind"] == "pair"]
    pruned = regret = total = 0
    for (order, sample, seed), rows in pairs.groupby(["order", "sample", "seed"]):
        first = singles[(singles["order"] == order[0]) & (singles["sample"] == sample)
                        & (singles["seed"] == seed)]
        if first.empty:
            continue
        if default_tau is not None and first["tau"].notna().any():
            first = first[(first["tau"] - default_tau).abs() < 1e-9]
        if first.empty:
            continue
        total += 1
        stopped = 100 * (base_acc - first["val_accuracy"].max()) > budget + slack
        feasible = any(within_budget(base_acc, a, budget) for a in rows["val_accuracy"])
        pruned += stopped
        regret += stopped and feasible
    return {"pairs": total, "pruned_after_first_stage": int(pruned),
            "pruned_but_feasible": int(regret)}


class BudgetPruner(optuna.pruners.BasePruner):
    """Prune a trial once its validation accuracy drop exceeds budget + slack after a stage
    (later stages seldom win accuracy back, so it cannot meet the budget)."""

    def __init__(self, budget: float, slack: float) -> None:
        self.limit = budget + slack

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        drop = trial.user_attrs.get("last_drop")
        return drop is not None and drop > self.limit


class Objective:
    """One trial: build the chain stage by stage through the prefix cache, report, decide τ."""

    def __init__(self, runner: ChainRunner, opts: TuneOptions, meter: Any = None) -> None:
        self.runner = runner
        self.opts = opts
        if opts.objective != "bitops" and meter is None:
            raise ValueError(f"tune.objective {opts.objective!r} needs a latency meter")
        self.meter = meter  # search.latency.LatencyMeter for objective latency | both
        self.fixed = dict(opts.fixed)
        self.space = search_space(opts.chains, self.fixed, dict(opts.space))

    def steps_for(self, trial: optuna.Trial | optuna.trial.FixedTrial
                  ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        chains = list(self.opts.chains)
        chain = chains[0] if len(chains) == 1 else trial.suggest_categorical("chain", chains)
        steps = []
        for letter in chain:
            info = get_stage(letter).info
            params = {}
            for key, dist in self.space.items():
                if key.startswith(f"{info.name}."):
                    params[info.short(key)] = suggest(trial, key, dist)
            for key, value in self.fixed.items():
                if key.startswith(f"{info.name}."):
                    params[info.short(key)] = value
            steps.append((info.name, params))
        return chain, steps

    def __call__(self, trial: optuna.Trial | optuna.trial.FixedTrial
                 ) -> float | tuple[float, float]:
        chain, raw = self.steps_for(trial)
        steps = plan(raw)
        ref = self.runner.reference
        base_acc = ref.val_accuracy
        trained = 0
        seconds = 0.0
        result = None
        points: list[dict[str, Any]] = []
        for k in range(1, len(steps) + 1):
            result = self.runner.run(steps[:k])  # only stage k can be new: 0 or 1 training
            trained += result.trained
            seconds += sum(r["seconds"] for r in result.records if not r.get("from_cache"))
            rec = result.records[-1]
            # judged at its best operating point (an E prefix at its most accurate τ), not at
            # the default policy: only a prefix that no τ brings within reach is pruned
            points = operating_points(result.model, steps[:k], self.runner.data, rec,
                                      self.opts.thresholds)
            drop = 100 * (base_acc - max(p["val_accuracy"] for p in points))
            trial.set_user_attr("last_drop", drop)
            trial.set_user_attr("trained", trained)
            trial.set_user_attr("train_seconds", round(seconds, 3))
            if self.opts.directions == 1:
                # BitOps after each stage, whatever the objective: the budget pruner reads
                # only the drop, and a prefix is not worth timing
                trial.report(math.log(bitops_cr(ref.bitops, rec["val_bitops"])), k - 1)
                if trial.should_prune():
                    trial.set_user_attr("pruned_after", chain[:k])
                    excess = drop - self.opts.target - BUDGET_TOLERANCE
                    trial.set_user_attr("constraint", excess)
                    trial.set_constraint("accuracy_drop", excess)
                    raise optuna.TrialPruned(f"val drop {drop:.2f} after {chain[:k]}")
        assert result is not None
        point = choose_point(points, base_acc, self.opts.target)
        val_acc, val_bitops = point["val_accuracy"], point["val_bitops"]
        test_acc, test_bitops = point["test_accuracy"], point["bitops"]
        attrs: dict[str, Any] = {"chain": chain, "trained": trained,
                                 "train_seconds": round(seconds, 3),
                                 "saved_by_cache": len(steps) - trained,
                                 "steps": [[s.stage, dict(s.params)] for s in steps]}
        if point["tau"] is not None:  # the exported chain carries the chosen value
            attrs["tau"] = point["tau"]
            attrs["steps"] = with_policy_value(steps, point["tau"])
        drop = 100 * (base_acc - val_acc)
        attrs.update(val_accuracy=val_acc, test_accuracy=test_acc,
                     val_bitops_cr=bitops_cr(ref.bitops, val_bitops),
                     bitops_cr=bitops_cr(ref.bitops, test_bitops),
                     cr=result.records[-1]["cr"], drop=drop,
                     test_drop=100 * (ref.test_accuracy - test_acc),
                     constraint=drop - self.opts.target - BUDGET_TOLERANCE)  # ≤ 0: feasible
        log_cr = math.log(bitops_cr(ref.bitops, val_bitops))
        log_speed = None
        if self.meter is not None:
            model = result.model
            if point["tau"] is not None and hasattr(model, "policy"):
                model = copy.deepcopy(model)  # timed at the τ chosen, not the default
                model.policy.threshold = float(point["tau"])  # type: ignore[union-attr]
            got = self.meter.speedup(model)
            attrs.update(speedup=got["speedup"], latency_ms=got["model_ms"],
                         baseline_latency_ms=got["baseline_ms"], latency_runtime=got["runtime"],
                         latency_key=got["key"], latency_cached=got["cached"])
            log_speed = math.log(max(got["speedup"], 1e-9))
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("accuracy_drop", attrs["constraint"])
        if self.opts.multi_objective:
            return val_acc, log_cr
        if self.opts.objective == "latency":
            assert log_speed is not None
            return log_speed
        if self.opts.objective == "both":
            assert log_speed is not None
            return log_cr, log_speed
        return log_cr


def create_study(storage: optuna.storages.BaseStorage, name: str, opts: TuneOptions,
                 worker: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Constraints reach the sampler through `trial.set_constraint` (Optuna 5's way).
    sampler = optuna.samplers.TPESampler(
        seed=opts.seed + 1000 * worker, multivariate=True, n_startup_trials=opts.startup_trials)
    pruner: optuna.pruners.BasePruner = (
        BudgetPruner(opts.target, opts.prune_slack) if opts.pruner and opts.directions == 1
        else optuna.pruners.NopPruner())
    kwargs: dict[str, Any] = ({"directions": ["maximize", "maximize"]}
                              if opts.directions == 2 else {"direction": "maximize"})
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                pruner=pruner, load_if_exists=True, **kwargs)
    study.set_user_attr("budget", opts.budget)
    if opts.aim is not None:
        study.set_user_attr("aim", opts.aim)
    study.set_user_attr("chains", list(opts.chains))
    # named, so optuna-dashboard shows these instead of "Objective 0"; the API is stable
    # since Optuna 3.2 but still flagged experimental, which users need not read every run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(opts.metric_names())
    return study


MEASURED_KINDS = ("single", "pair", "insert", "brute")  # runs whose params are a sample's


def measured_points(runs: Any, base_acc: float, budget: float | None) -> Any:
    """Probe and brute-force rows: within the budget on validation, best validation BitOpsCR
    first; or, for no budget, all of them, most accurate first."""
    rows = runs[runs["kind"].isin(MEASURED_KINDS)]
    if budget is None:
        return rows.sort_values(["val_accuracy", "val_bitops_cr"], ascending=False)
    rows = rows[[within_budget(base_acc, a, budget) for a in rows["val_accuracy"]]]
    return rows.sort_values("val_bitops_cr", ascending=False)


def warm_start(runs: Any, samples: dict[str, list[dict[str, Any]]], fixed: dict[str, Any],
               base_acc: float, budget: float, limit: int,
               narrowed: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], ...]:
    """The best measured points within the budget on validation (probe and brute-force runs
    of `runs`), deduplicated by chain and sample, best validation BitOpsCR first, as trials of
    their own chain: a pair or a single is queued as that sub-chain. Their stages are in the
    prefix cache, so these trials cost little training. A point with a value the study's
    `space` (`narrowed`) no longer allows is left out: tuning could not suggest it."""
    if runs is None or len(runs) == 0:
        return ()
    rows = measured_points(runs, base_acc, budget)
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for _, r in rows.iterrows():
        key = (str(r["order"]), int(r["sample"]))
        if key in seen or any(key[1] >= len(samples.get(c, [])) for c in key[0]):
            continue  # seen, or a sample samples.json does not hold
        seen.add(key)
        params: dict[str, Any] | None = {"chain": key[0]}
        for letter in key[0]:
            info = get_stage(letter).info
            dists = stage_space(info, narrowed)
            policy = set(behaviour.policy_params(letter))
            for short, value in samples.get(info.letter, [])[key[1]].items():
                full = info.prefixed(short)
                if full in dists and full not in fixed and short not in policy \
                        and params is not None:
                    params = {**params, full: value} if contains(dists[full], value) else None
        if params is None:
            continue
        out.append(params)
        if len(out) >= limit:
            break
    return tuple(out)


def queue_slots(study: optuna.Study, n: int, initial: Sequence[dict[str, Any]] = ()) -> None:
    """Queue every slot that has no live or finished trial (reaped ones go again): first one
    slot per `initial` params (the warm start), then `n` slots for the sampler's own trials,
    so the warm start comes on top of `n`."""
    taken = set()
    for t in study.get_trials(deepcopy=False):
        slot = t.user_attrs.get("slot")
        if slot is None:
            continue
        if t.state == TrialState.FAIL and t.user_attrs.get("reaped"):
            continue
        taken.add(slot)
    for slot in range(len(initial) + n):
        if slot not in taken:
            warm = slot < len(initial)
            params = dict(initial[slot]) if warm else {}
            study.enqueue_trial(params, user_attrs={"slot": slot, "warm_start": warm})


def requeue(study: optuna.Study, reaped: Sequence[FrozenTrial]) -> None:
    """Queue the slots of trials reaped while this worker waited, with their fixed params."""
    for t in reaped:
        slot = t.user_attrs.get("slot")
        if slot is not None:
            study.enqueue_trial(dict(t.system_attrs.get("fixed_params", {})),
                                user_attrs={"slot": slot,
                                            "warm_start": t.user_attrs.get("warm_start", False)})


def work(study: optuna.Study, objective: Objective, *, label: str = "tune") -> dict[str, int]:
    """Take queued slots until none is left; returns what this worker did."""
    done = {"complete": 0, "pruned": 0, "failed": 0}
    while True:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not any(t.user_attrs.get("slot") is not None for t in waiting):
            if not unclaimed(study):
                return done
            # A slot taken by a worker killed before it claimed it: wait out the claim grace,
            # then queue that slot again and take it here.
            time.sleep(1.0)
            requeue(study, reap_dead_trials(study))
            continue
        trial = study.ask()
        slot = trial.user_attrs.get("slot")
        if slot is None:  # another worker took the last slot between our look and our ask
            trial.set_user_attr("idle", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        if _duplicate(study, slot, trial.number):  # two workers queued this slot at once
            trial.set_user_attr("idle", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        if not claim(trial):  # reaped before this worker claimed it: queued again
            continue
        total = len(study.get_trials(deepcopy=False))
        note(f"[{label}] trial {trial.number} (slot {slot}), {total} in the study")
        try:
            value = objective(trial)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned", str(exc))
            study.tell(trial, state=TrialState.PRUNED)
            done["pruned"] += 1
            continue
        except (DivergedError, SeqsearchError, RuntimeError) as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            done["failed"] += 1
            continue
        except KeyboardInterrupt:
            trial.set_user_attr("reaped", True)  # interrupted, not failed: queue it again
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        done["complete"] += 1


def _duplicate(study: optuna.Study, slot: int, number: int) -> bool:
    """True when a lower-numbered live or finished trial holds the same slot (it wins)."""
    for t in study.get_trials(deepcopy=False):
        if (t.number < number and t.user_attrs.get("slot") == slot
                and not t.user_attrs.get("idle") and not t.user_attrs.get("reaped")):
            return True
    return False


def best_feasible(study: optuna.Study, objective: str = "bitops") -> FrozenTrial | None:
    """The feasible trial with the best objective: BitOpsCR (`bitops`, and `both`, whose
    Pareto front is reported beside) or measured speed-up (`latency`)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("constraint", 1.0) <= 0]
    if not done:
        return None
    key = "speedup" if objective == "latency" else "val_bitops_cr"
    return max(done, key=lambda t: (t.user_attrs.get(key, 0.0), t.user_attrs["val_accuracy"]))


def slot_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count: one per slot (the live or final one), reaped/idle ones left out."""
    out = {}
    for t in study.get_trials(deepcopy=False):
        slot = t.user_attrs.get("slot")
        if slot is None or t.user_attrs.get("reaped") or t.user_attrs.get("idle"):
            continue
        out[slot] = t
    return [out[s] for s in sorted(out)]

