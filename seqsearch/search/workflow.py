"""The probe and order steps of a study, as functions the CLI (and `seqsearch run`) call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqsearch import atomic
from seqsearch.baseline import Baseline, get_baseline
from seqsearch.config import StudyConfig
from seqsearch.errors import SeqsearchError
from seqsearch.search.order import Criteria, check_insertions, check_repeats, decide
from seqsearch.search.probe import (
    ChainExecutor,
    Prober,
    insert_units,
    make_samples,
    pair_units,
    repeat_units,
)
from seqsearch.search.storage import open_storage
from seqsearch.stages import get_stage, resolve_params


def study_letters(study: StudyConfig) -> list[str]:
    return [get_stage(name).info.letter for name in study.stages]


def check_fixed(study: StudyConfig) -> None:
    """probe.fixed holds prefixed params of enabled stages; check them like chain params."""
    names = {get_stage(n).info.name for n in study.stages}
    by_stage: dict[str, dict[str, Any]] = {}
    for key, value in study.probe.fixed.items():
        stage = key.split(".", 1)[0]
        if stage not in names or "." not in key:
            raise SeqsearchError(f"probe.fixed: {key!r} is not 'stage.param' of an enabled "
                                 f"stage ({', '.join(sorted(names))})")
        by_stage.setdefault(stage, {})[key] = value
    for stage, params in by_stage.items():
        resolve_params(get_stage(stage).info, params)


def criteria(study: StudyConfig, base: Baseline) -> Criteria:
    p = study.probe
    return Criteria(float(base.metrics["val_accuracy"]), p.max_drop, p.tie_threshold,
                    tuple(p.budgets), p.bootstrap, p.sampler_seed)


def make_prober(study: StudyConfig, out_dir: Path, storage: str | None,
                base: Baseline) -> Prober:
    samples = make_samples(study.stages, study.probe.samples, study.probe.sampler_seed,
                           study.probe.fixed)
    atomic.write_json(out_dir / "samples.json", samples)
    executor = ChainExecutor(study, base, out_dir / "cache", study.probe.thresholds)
    return Prober(out_dir, open_storage(storage, out_dir), f"{study.name}-probe", executor,
                  samples)


def run_probe(study: StudyConfig, out_dir: Path, *, storage: str | None = None,
              insert: bool = False, repeat: bool = False) -> dict[str, Any]:
    letters = study_letters(study)
    check_fixed(study)
    if len(letters) < 2:
        raise SeqsearchError("stages: a probe needs at least two enabled stages")
    base = get_baseline(study, out_dir=out_dir)
    prober = make_prober(study, out_dir, storage, base)
    k, seeds = study.probe.samples, study.probe.seeds
    prober.run(pair_units(letters, k, seeds))
    summary: dict[str, Any] = {}
    crit = criteria(study, base)
    if insert:
        order = decide(prober.table(), letters, crit)
        winners = [p["winner"] for p in order["pairs"] if p["winner"]]
        prober.run(insert_units(winners, letters, k, seeds))
        summary["insertions"] = check_insertions(prober.table(), winners, letters, crit)
        atomic.write_json(out_dir / "insert.json", summary["insertions"])
    if repeat:
        prober.run(repeat_units(letters, k, seeds))
        summary["repeats"] = check_repeats(prober.table(), crit)
        atomic.write_json(out_dir / "repeat.json", summary["repeats"])
    summary["totals"] = prober.totals()
    atomic.write_json(out_dir / "probe.json", summary)
    return summary


def run_order(study: StudyConfig, out_dir: Path) -> dict[str, Any]:
    runs = out_dir / "runs.csv"
    if not runs.is_file():
        raise SeqsearchError(f"{runs}: no probe results; run 'seqsearch probe' first")
    import pandas as pd

    base = get_baseline(study, out_dir=out_dir)
    table = pd.read_csv(runs)
    result = decide(table, study_letters(study), criteria(study, base))
    atomic.write_json(out_dir / "order.json", result)
    return result
