"""The pairwise order probe (paper §3): every pair of stages in both orders over K shared samples.

Work comes in units — one chain (e.g. `DP`, sample 3, seed 0) each — and every unit is an
Optuna trial in the study's storage, so any number of processes share one probe and a killed
probe resumes by running the same command. Each finished unit is written atomically to
`units/<key>.json` and the runs table `runs.csv` is rebuilt from the units as it goes.
Stage trainings are shared through the prefix cache: the model after `A(θ_k)` trains once for
every chain that starts with it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from seqsearch import atomic
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import bitops_cr
from seqsearch.progress import clock, note
from seqsearch.search.sampling import stage_samples
from seqsearch.search.space import stage_space
from seqsearch.search.storage import claim, reap_dead_trials
from seqsearch.stages import behaviour, get_stage
from seqsearch.train import DivergedError


@dataclass(frozen=True)
class Unit:
    """One chain to run: its letters, the sample index, the training seed and what it is for."""

    order: str
    sample: int
    seed: int
    kind: str = "pair"

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.order}-k{self.sample}-s{self.seed}"


@dataclass
class UnitResult:
    rows: list[dict[str, Any]]
    trained: int
    cached: int
    seconds: float
    error: str | None = None


Executor = Callable[[list[tuple[str, dict[str, Any]]], int], UnitResult]
"""(steps as (stage name, params), seed) -> rows of evaluated points."""


def make_samples(stage_names: Sequence[str], k: int, seed: int, fixed: dict[str, Any],
                 space: Mapping[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """K samples per stage letter, policy params (τ) left out: they are swept instead;
    `space`: the study's narrowed params (search.space)."""
    out = {}
    for name in stage_names:
        stage = get_stage(name)
        info = stage.info
        own = {info.short(k2): v for k2, v in fixed.items() if k2.startswith(f"{info.name}.")}
        skip = behaviour.policy_params(stage)
        out[info.letter] = stage_samples(info, k, seed, fixed=own, skip=skip,
                                           space=stage_space(info, space))
    return out


def pair_units(letters: Sequence[str], k: int, seeds: Sequence[int],
               pairs: Sequence[str] | None = None, start: int = 0) -> list[Unit]:
    """Singles (free: their models are the pairs' cached prefixes) and both orders of every
    pair (or of `pairs` only, with the singles of their stages), for samples `start` to k − 1,
    sample by sample so a partial probe already covers every pair. A sample's singles are
    queued one sample ahead of its pairs: a pair's first stage is then a finished single
    (workers do not wait for a prefix another one is still training), and a probe stopped at
    any point has trained at most one sample's singles ahead of the pairs it reached (the
    prefix cache is this machine's: another machine trains those first stages again)."""
    chosen = [a + b for a, b in itertools.combinations(letters, 2)
              if pairs is None or a + b in pairs or b + a in pairs]
    used = [a for a in letters if any(a in p for p in chosen)]
    groups = [(seed, s) for seed in seeds for s in range(start, k)]

    def singles(i: int) -> list[Unit]:
        if i >= len(groups):
            return []
        seed, s = groups[i]
        return [Unit(a, s, seed, "single") for a in used]

    units = singles(0)
    for i, (seed, s) in enumerate(groups):
        units += singles(i + 1)
        for ab in chosen:
            units += [Unit(ab, s, seed), Unit(ab[::-1], s, seed)]
    return units


def insert_units(winners: Sequence[str], letters: Sequence[str], k: int,
                 seeds: Sequence[int]) -> list[Unit]:
    """For each winning pair AB and each other stage C: ACB and BCA (paper §4)."""
    units = []
    for ab in winners:
        a, b = ab[0], ab[1]
        for c in letters:
            if c in (a, b):
                continue
            for seed in seeds:
                for s in range(k):
                    units += [Unit(a + c + b, s, seed, "insert"),
                              Unit(b + c + a, s, seed, "insert")]
    return units


def brute_units(letters: Sequence[str], k: int, seeds: Sequence[int]) -> list[Unit]:
    """Every full order of the stages over the same samples: the ground truth the pairwise
    method is judged against (n! chains; the prefix cache shares their common prefixes)."""
    return [Unit("".join(p), s, seed, "brute") for seed in seeds for s in range(k)
            for p in itertools.permutations(letters)]


def repeat_units(letters: Sequence[str], k: int, seeds: Sequence[int]) -> list[Unit]:
    """AA next to A with stronger params, for the repeatable stages (paper §6)."""
    units = []
    for a in letters:
        if not get_stage(a).info.repeatable:
            continue
        for seed in seeds:
            for s in range(k):
                units += [Unit(a + a, s, seed, "repeat"), Unit(a, s, seed, "stronger")]
    return units


def unit_steps(unit: Unit, samples: dict[str, list[dict[str, Any]]]
               ) -> list[tuple[str, dict[str, Any]]]:
    names = {get_stage(letter).info.letter: get_stage(letter).info.name for letter in unit.order}
    if unit.kind == "stronger":
        a = unit.order[0]
        return [(names[a], behaviour.stronger(a, samples[a][unit.sample]))]
    if unit.kind == "repeat":
        a = unit.order[0]
        first = behaviour.repeat_first(a, samples[a][unit.sample])
        return [(names[a], first), (names[a], dict(samples[a][unit.sample]))]
    return [(names[c], dict(samples[c][unit.sample])) for c in unit.order]


class Prober:
    """Runs probe units as Optuna trials and keeps the runs table."""

    def __init__(self, out_dir: Path, storage: optuna.storages.BaseStorage, study_name: str,
                 executor: Executor, samples: dict[str, list[dict[str, Any]]]) -> None:
        self.out_dir = out_dir
        self.units_dir = out_dir / "units"
        self.storage = storage
        self.study_name = study_name
        self.executor = executor
        self.samples = samples

    def unit_path(self, unit: Unit) -> Path:
        return self.units_dir / f"{unit.key}.json"

    def _study(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(storage=self.storage, study_name=self.study_name,
                                   load_if_exists=True, direction="maximize")

    def run(self, units: Sequence[Unit]) -> dict[str, int]:
        """Run every unit not yet done (by this or another worker); returns counts."""
        study = self._study()
        reap_dead_trials(study)
        by_key = {u.key: u for u in units}
        self._queue_missing(study, units)
        counts = {"units": 0, "trained": 0, "cached": 0, "failed": 0}
        start = time.perf_counter()
        done_at_start = sum(1 for u in units if self.unit_path(u).is_file())
        while True:
            waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                       if t.user_attrs.get("unit") in by_key]
            if not waiting:
                # Others may still run units of this set: wait for them (a dead one's unit is
                # re-queued by the reaper and taken here), so every worker decides later steps
                # (the insertion check's winners) on the same table.
                if not self._others_running(study, units):
                    break
                time.sleep(1.0)
                if reap_dead_trials(study):
                    self._queue_missing(study, units)
                continue
            trial = study.ask()
            key = trial.user_attrs.get("unit")
            if key not in by_key:  # another worker took the last queued unit first
                trial.set_user_attr("idle", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            unit = by_key[key]
            if self.unit_path(unit).is_file():  # a second copy of a finished unit
                trial.set_user_attr("idle", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            if not claim(trial):  # reaped before this worker claimed it: queued again
                continue
            if _taken_elsewhere(study, trial, key):
                trial.set_user_attr("idle", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("confirmed", True)
            counts["units"] += 1
            note(self._progress(unit, units, study, done_at_start,
                                time.perf_counter() - start))
            try:
                result = self.executor(unit_steps(unit, self.samples), unit.seed)
            except (DivergedError, SeqsearchError) as exc:
                result = UnitResult([], 0, 0, 0.0, error=str(exc))
            except KeyboardInterrupt:
                study.tell(trial, state=TrialState.FAIL)
                raise
            for row in result.rows:
                row.update(order=unit.order, kind=unit.kind, sample=unit.sample, seed=unit.seed)
            atomic.write_json(self.unit_path(unit), {"unit": asdict(unit), **asdict(result)})
            counts["trained"] += result.trained
            counts["cached"] += result.cached
            if result.error:
                counts["failed"] += 1
                trial.set_user_attr("error", result.error)
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, float(len(result.rows)))
            self.write_table()
        self.write_table()
        return counts

    def _progress(self, unit: Unit, units: Sequence[Unit], study: optuna.Study,
                  done_at_start: int, elapsed: float) -> str:
        """One line per unit taken, counted over the whole set, not per worker: run k of n
        where k counts every worker's finished and running units (this one included), and an
        ETA from the rate at which all workers finished units since this one started."""
        finished = {u.key for u in units if self.unit_path(u).is_file()}
        pending = {u.key for u in units} - finished
        running = max(1, len({t.user_attrs.get("unit") for t in study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING,))} & pending))
        done = len(finished)
        eta = ""
        if done > done_at_start:
            eta = f", ETA {clock(elapsed / (done - done_at_start) * (len(units) - done))}"
        workers = f" on {running} workers" if running > 1 else ""
        return (f"[probe] run {done + running}/{len(units)}{workers}: {unit.kind} "
                f"{unit.order} sample {unit.sample} seed {unit.seed}{eta}")

    def _queue_missing(self, study: optuna.Study, units: Sequence[Unit]) -> None:
        """Queue every unit that has no result and no live trial (waiting, running or done)."""
        active = {t.user_attrs.get("unit") for t in study.get_trials(deepcopy=False)
                  if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)}
        for u in units:
            if u.key not in active and not self.unit_path(u).is_file():
                study.enqueue_trial({}, user_attrs={"unit": u.key})

    def _others_running(self, study: optuna.Study, units: Sequence[Unit]) -> bool:
        pending = {u.key for u in units if not self.unit_path(u).is_file()}
        return any(t.user_attrs.get("unit") in pending
                   for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def load_units(self) -> list[dict[str, Any]]:
        if not self.units_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.units_dir.glob("*.json"))]

    def table(self) -> pd.DataFrame:
        rows = [r for u in self.load_units() for r in u["rows"]]
        return pd.DataFrame(rows)

    def write_table(self) -> None:
        df = self.table()
        atomic.write_bytes(self.out_dir / "runs.csv", df.to_csv(index=False).encode())

    def totals(self) -> dict[str, int]:
        """Stage trainings run and saved by the prefix cache; `pair_stages_without_cache` is
        what the pair chains alone would train without it (two stages per chain)."""
        units = self.load_units()
        pairs = [u for u in units if u["unit"]["kind"] == "pair"]
        return {
            "units": len(units),
            "stage_trainings": sum(u["trained"] for u in units),
            "saved_by_cache": sum(u["cached"] for u in units),
            "pair_stages_without_cache": sum(len(u["unit"]["order"]) for u in pairs),
            "failed": sum(1 for u in units if u.get("error")),
        }


class ChainExecutor:
    """Runs a unit's chain on the real baseline through the prefix cache and turns the result
    into rows: one per model, or one per τ for a model with exits (τ costs no training)."""

    def __init__(self, cfg: Any, base: Any, cache_dir: Path, thresholds: Sequence[float]) -> None:
        self.cfg = cfg
        self.base = base
        self.cache_dir = cache_dir
        self.thresholds = list(thresholds)
        self.runners: dict[int, Any] = {}

    def __call__(self, steps: list[tuple[str, dict[str, Any]]], seed: int) -> UnitResult:
        from seqsearch.chain import operating_points, plan, runner_for

        if seed not in self.runners:
            self.runners[seed] = runner_for(self.cfg, self.base, self.cache_dir, seed=seed)
        runner = self.runners[seed]
        planned = plan(steps)
        result = runner.run(planned)
        final = result.records[-1]
        common: dict[str, Any] = {"trained": result.trained, "cached": result.cached,
                                  "seconds": round(sum(r["seconds"] for r in result.records), 3),
                                  "epochs": self._epochs(steps[len(steps) - result.trained:]),
                                  "from_cache": result.trained == 0, "cr": final["cr"]}
        seen: dict[str, int] = {}
        for name, params in steps:
            seen[name] = seen.get(name, 0) + 1
            suffix = "" if seen[name] == 1 else f"#{seen[name]}"
            for key, value in params.items():
                common[f"{name}.{key}{suffix}"] = value
        ref = runner.reference
        points = operating_points(result.model, planned, runner.data, final, self.thresholds)
        rows = [{**common, **pt, "val_bitops_cr": bitops_cr(ref.bitops, pt["val_bitops"]),
                 "bitops_cr": bitops_cr(ref.bitops, pt["bitops"])} for pt in points]
        return UnitResult(rows, result.trained, result.cached, common["seconds"])

    def _epochs(self, steps: Sequence[tuple[str, dict[str, Any]]]) -> int:
        return sum(behaviour.epochs(name, self.cfg.train) for name, _ in steps)


def _taken_elsewhere(study: optuna.Study, trial: optuna.Trial, key: str) -> bool:
    """Whether another worker runs (or ran) this unit: then this copy is dropped.

    Processes that start on an empty study each queue every unit, so a unit can be queued
    twice, and two workers can take its two copies at once. Each worker claims its copy, then
    looks: a copy that finished or was confirmed by its worker wins; of copies claimed but not
    yet confirmed, the lowest trial number wins. A copy that sees a *higher* claimed copy still
    undecided waits (briefly) for it to decide: that copy may have looked before this one was
    claimed and be about to run, so going ahead at once could run the unit twice. The highest
    claimed copy never waits, so the waits end; exactly one copy runs whatever the timing, and
    none is lost (a dropped copy's winner is running)."""
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        undecided_above = False
        for t in study.get_trials(deepcopy=False,
                                  states=(TrialState.RUNNING, TrialState.COMPLETE)):
            if t.number == trial.number or t.user_attrs.get("unit") != key:
                continue
            if t.state == TrialState.COMPLETE or t.user_attrs.get("confirmed"):
                return True
            if "pid" in t.user_attrs:
                if t.number < trial.number:
                    return True
                undecided_above = True
        if not undecided_above or time.monotonic() > deadline:
            return False
        time.sleep(0.02)


CLAIM_WAIT_S = 30.0  # a higher copy decides in milliseconds; one that never does is dead
