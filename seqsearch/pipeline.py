"""The probe and order steps of a study, as functions the CLI (and `seqsearch run`) call."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seqsearch import atomic
from seqsearch.baseline import Baseline, baseline_metrics, chance_warning, get_baseline
from seqsearch.config import StudyConfig
from seqsearch.environment import record as record_environment
from seqsearch.errors import SeqsearchError
from seqsearch.preflight import preflight
from seqsearch.progress import note
from seqsearch.search.order import (
    Criteria,
    check_insertions,
    check_repeats,
    decide,
    rank_orders,
)
from seqsearch.search.probe import (
    ChainExecutor,
    Prober,
    brute_units,
    insert_units,
    make_samples,
    pair_units,
    repeat_units,
)
from seqsearch.search.scope import methods, study_letters, study_pairs
from seqsearch.search.storage import open_storage, reap_dead_trials


def relative(folder: Path) -> str:
    """A study folder as an exported chain names it: relative to the current folder (where
    the study ran), so a committed chain holds no path of the machine that ran it."""
    import os

    return Path(os.path.relpath(folder)).as_posix()


def study_baseline(study: StudyConfig, out_dir: Path) -> Baseline:
    """The trained baseline, or a `SeqsearchError` where it is no better than guessing:
    compressing such a model measures nothing (every chain "keeps" its accuracy).
    `SEQSEARCH_ALLOW_CHANCE_BASELINE=1` turns the stop into a warning (the test suite's tiny
    one-epoch studies test the machinery, not the model)."""
    import os

    base = get_baseline(study, out_dir=out_dir)
    line = chance_warning(study, base.metrics, base.data.num_classes)
    if line is not None:
        if os.environ.get("SEQSEARCH_ALLOW_CHANCE_BASELINE") != "1":
            raise SeqsearchError(line)
        note(f"[baseline] warning: {line}")
    return base


def criteria(study: StudyConfig, metrics: dict[str, Any], val_images: int | None = None
             ) -> Criteria:
    from seqsearch.search.stats import edge_looks

    p = study.probe
    test = metrics.get("test_accuracy")
    pairs = study_pairs(study)
    plan = edge_looks(p.alpha, p.look_units(), len(pairs))
    return Criteria(float(metrics["val_accuracy"]), p.max_drop, p.tie_threshold,
                    tuple(p.budgets), p.bootstrap, p.sampler_seed, alpha=p.alpha,
                    looks=p.planned_looks(), val_images=val_images or metrics.get("val_images"),
                    statistic=p.statistic, min_effect=p.min_effect,
                    test_baseline_accuracy=None if test is None else float(test),
                    max_samples=p.most_samples(),
                    edge_looks=None if plan is None else plan[0],
                    edge_units=0 if plan is None else plan[1],
                    pairs=None if p.pairs is None else tuple(pairs))


def val_split_size(study: StudyConfig, metrics: dict[str, Any]) -> int | None:
    """The validation split's size: from the baseline's metrics, else by loading the data on
    the CPU (no training); None where the data cannot be loaded here."""
    if metrics.get("val_images"):
        return int(metrics["val_images"])
    import torch

    from seqsearch.baseline import build_data

    try:
        return len(build_data(study, torch.device("cpu")).val)
    except SeqsearchError:
        return None


def run_pairs(study: StudyConfig, prober: Prober, crit: Criteria) -> dict[str, Any]:
    """Singles and pairs, look by look. With `probe.adaptive` a pair gets its next seed only
    while it is undecided (neither an order nor equivalent), then, still undecided, further
    batches of parameter samples up to `probe.max_samples` on the seeds it used; every look is
    accounted for in the level (`Criteria.looks`). A new sample k of a stage is the same params
    in every pair (samples.json), and the prefix cache trains A's sample k once for AB, AC,
    AD alike. Otherwise every pair runs every seed on `probe.samples`. Returns the looks, the
    samples and seeds each pair used and the stage trainings this cost against the fixed plan
    of every pair at `max_samples` on every seed."""
    letters = study_letters(study)
    p = study.probe
    k, seeds = p.samples, p.seeds
    chosen = None if p.pairs is None else study_pairs(study)
    looks: list[dict[str, Any]] = []
    kept: dict[str, dict[str, Any]] = {}  # edges decided at an interim look: they stand
    first = "all" if chosen is None else chosen
    if not p.adaptive:
        prober.run(pair_units(letters, k, seeds, pairs=chosen))
        looks.append({"look": 1, "seeds": list(seeds), "samples": k, "pairs": first})
    else:
        prober.run(pair_units(letters, k, seeds[:1], pairs=chosen))
        looks.append({"look": 1, "seeds": seeds[:1], "samples": k, "pairs": first})
        for i, seed in enumerate(seeds[1:], start=1):
            open_pairs = open_at_look(prober.table(), letters, crit, k, seeds[:i],
                                      kept=kept, look=looks[-1])
            if not open_pairs:
                break
            note(f"[probe] seed {seed} (look {len(looks) + 1}/{crit.looks}) for the undecided "
                 f"pairs {', '.join(open_pairs)}")
            prober.run(pair_units(letters, k, [seed], pairs=open_pairs))
            looks.append({"look": len(looks) + 1, "seeds": [seed], "samples": k,
                          "pairs": open_pairs})
        done = k
        held = min(len(v) for v in prober.samples.values())  # samples.json's samples
        for upto in (min(n, held) for n in p.sample_looks()):
            if upto <= done:
                break
            at_look = decide(_upto(prober.table(), done), letters, crit, kept)["pairs"]
            keep_decided(at_look, kept, looks[-1])
            verdicts = [v for v in at_look if v["outcome"] == "undecided"]
            if not verdicts:
                break
            note(f"[probe] samples {done + 1}-{upto} (look {len(looks) + 1}/{crit.looks}) "
                 f"for the undecided pairs {', '.join(v['pair'] for v in verdicts)}")
            by_seeds: dict[tuple[int, ...], list[str]] = {}
            for v in verdicts:
                by_seeds.setdefault(tuple(v["seeds"]), []).append(v["pair"])
            for used, pairs in by_seeds.items():
                prober.run(pair_units(letters, upto, list(used), pairs=pairs, start=done))
            looks.append({"look": len(looks) + 1, "samples": upto,
                          "pairs": [v["pair"] for v in verdicts]})
            done = upto
    units = [u for u in prober.load_units() if u["unit"]["kind"] in ("single", "pair")]
    n = len(letters)
    final = decide(prober.table(), letters, crit, kept)["pairs"]
    return {"adaptive": p.adaptive, "looks": looks, "planned_looks": crit.looks,
            "kept": kept,
            "stage_trainings": sum(u["trained"] for u in units),
            "fixed_allocation_stage_trainings":
                (len(study_pairs(study)) * 2 + n) * p.most_samples() * len(seeds),
            "seeds_per_pair": {v["pair"]: v["seeds"] for v in final},
            "samples_per_pair": {v["pair"]: v["units"] for v in final}}


def _upto(table: Any, samples: int, seeds: Sequence[int] | None = None) -> Any:
    if table.empty:
        return table
    keep = table["sample"] < samples
    if seeds is not None:
        keep &= table["seed"].isin(list(seeds))
    return table[keep]


def open_at_look(table: Any, letters: Sequence[str], crit: Criteria, samples: int,
                 seeds: Sequence[int] | None = None, *,
                 kept: dict[str, dict[str, Any]] | None = None,
                 look: dict[str, Any] | None = None) -> list[str]:
    """The pairs still undecided on what the looks so far ran: samples below `samples`, on
    `seeds` (all when None). A resumed probe may already hold units of a later look (the run
    was killed inside it); deciding on those would let a pair stop on part of a look, which
    the level spent per look does not allow, and would not redo the run it resumes. The
    edges this look decides join `kept` (recorded in `look`)."""
    verdicts = decide(_upto(table, samples, seeds), letters, crit, kept)["pairs"]
    if kept is not None and look is not None:
        keep_decided(verdicts, kept, look)
    return [v["pair"] for v in verdicts if v["outcome"] == "undecided"]


def keep_decided(verdicts: Sequence[dict[str, Any]], kept: dict[str, dict[str, Any]],
                 look: dict[str, Any]) -> None:
    """The edges decided at `look`: they stop getting data, so their rejection stands at the
    level it met there (`search.order.family`); probe.json records them under the look."""
    new = {v["pair"]: {"look": int(look["look"]), "winner": v["winner"],
                       "p_value": v["p_value"], "alpha": v["alpha"]}
           for v in verdicts if v["outcome"] == "order" and v["pair"] not in kept}
    kept.update(new)
    if new:
        look["decided"] = sorted(new)


def interim_edges(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The edges the probe's interim looks decided (probe.json), for `seqsearch order`."""
    path = out_dir / "probe.json"
    if not path.is_file():
        return {}
    seeds = json.loads(path.read_text()).get("seeds") or {}
    return dict(seeds.get("kept") or {})


def check_same_samples(path: Path, samples: dict[str, list[dict[str, Any]]]) -> None:
    """A resumed probe draws the samples it started with: a changed `probe.fixed`, `space`
    or `probe.sampler_seed` would give its units new params under old names."""
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(samples))
    for letter, rows in before.items():
        if letter in now and any(a != b for a, b in zip(rows, now[letter], strict=False)):
            raise SeqsearchError(
                f"{path}: the probe started with other {letter} samples; a changed probe.fixed, "
                "space or probe.sampler_seed would mix two designs: restore them, or give the "
                "study a new output folder")


def make_prober(study: StudyConfig, out_dir: Path, storage: str | None,
                base: Baseline) -> Prober:
    # every sample a contested pair may reach: Sobol points are a sequence, so the first K
    # are the same whatever the total
    samples = make_samples(study.stages, study.probe.most_samples(), study.probe.sampler_seed,
                           study.probe_fixed(), study.space)
    check_same_samples(out_dir / "samples.json", samples)
    atomic.write_json(out_dir / "samples.json", samples)
    executor = ChainExecutor(study, base, out_dir / "cache", study.probe.thresholds)
    return Prober(out_dir, open_storage(storage, out_dir), f"{study.name}-probe", executor,
                  samples)


def run_probe(study: StudyConfig, out_dir: Path, *, storage: str | None = None,
              insert: bool = False, repeat: bool = False, brute: bool = False
              ) -> dict[str, Any]:
    letters = study_letters(study)
    preflight(study)
    if len(letters) < 2:
        raise SeqsearchError("stages: a probe needs at least two enabled stages")
    study_pairs(study)  # probe.pairs names enabled stages only
    base = study_baseline(study, out_dir)
    record_environment(out_dir, "probe", base.data.train.x.device, study.train)
    prober = make_prober(study, out_dir, storage, base)
    k, seeds = study.probe.samples, study.probe.seeds
    crit = criteria(study, base.metrics, len(base.data.val))
    summary: dict[str, Any] = {"seeds": run_pairs(study, prober, crit)}
    if insert:
        order = decide(prober.table(), letters, crit, summary["seeds"]["kept"])
        winners = [p["winner"] for p in order["pairs"] if p["winner"]]
        prober.run(insert_units(winners, letters, k, seeds))
        summary["insertions"] = check_insertions(prober.table(), winners, letters, crit)
        atomic.write_json(out_dir / "insert.json", summary["insertions"])
    if repeat:
        prober.run(repeat_units(letters, k, seeds))
        summary["repeats"] = check_repeats(prober.table(), crit)
        atomic.write_json(out_dir / "repeat.json", summary["repeats"])
    if brute:
        prober.run(brute_units(letters, k, seeds))
        ranking = rank_orders(prober.table(), crit)
        pairwise = decide(prober.table(), letters, crit, summary["seeds"]["kept"])["orders"]
        summary["brute_force"] = brute_summary(ranking, pairwise, crit)
        atomic.write_json(out_dir / "brute.json", summary["brute_force"])
    summary["totals"] = prober.totals()
    summary["methods"] = methods(study, study.probe_fixed())
    atomic.write_json(out_dir / "probe.json", summary)
    all_failed("probe", [u.get("error") for u in prober.load_units()])
    return summary


def all_failed(step: str, errors: Sequence[str | None]) -> None:
    """A step whose every run failed is an error naming the first reason (each run's reason
    is in its table): the steps after it would have nothing to work on."""
    if errors and all(errors):
        raise SeqsearchError(f"{step}: all {len(errors)} runs failed; the first: "
                             f"{str(errors[0]).splitlines()[0][:300]}")


def brute_summary(ranking: list[dict[str, Any]], pairwise: list[str], crit: Criteria
                  ) -> dict[str, Any]:
    """brute.json: the ranking with its intervals, the orders not distinguishable from the
    best, and whether the pairwise proposal is the best order or within that set."""
    top = [r["order"] for r in ranking if r["in_top_set"]]
    # Where no order has a point above the reference (every chain more than the largest
    # budget below the baseline), all tie at zero: the sweep names no best order.
    informative = bool(ranking) and ranking[0]["hypervolume"] > 0
    best = [r["order"] for r in ranking if r["rank"] == 1] if informative else []
    return {"ranking": ranking, "best": best[0] if len(best) == 1 else None,
            "best_tied": best, "informative": informative,
            "note": None if informative else
            "no full order has a point above the reference (baseline minus the largest "
            "budget)",
            "top_set": top, "alpha": crit.alpha,
            "pairwise_orders": pairwise,
            "pairwise_matches": bool(best) and any(o in pairwise for o in best),
            "pairwise_in_top_set": [o for o in pairwise if o in top]}


def run_order(study: StudyConfig, out_dir: Path) -> dict[str, Any]:
    runs = out_dir / "runs.csv"
    if not runs.is_file():
        raise SeqsearchError(f"{runs}: no probe results; run 'seqsearch probe' first")
    import pandas as pd

    # never trains: the probe (or a committed baseline.json) has the baseline's figures
    metrics = baseline_metrics(study, out_dir)
    table = pd.read_csv(runs)
    crit = criteria(study, metrics, val_split_size(study, metrics))
    result = decide(table, study_letters(study), crit, interim_edges(out_dir))
    atomic.write_json(out_dir / "order.json", result)
    kinds = set(table["kind"]) if "kind" in table else set()
    if "insert" in kinds:  # the same checks the probe ran, on the pairs it inserted into
        path = out_dir / "insert.json"
        checked = sorted({r["pair"] for r in json.loads(path.read_text())}) \
            if path.is_file() else [p["winner"] for p in result["pairs"] if p["winner"]]
        atomic.write_json(path, check_insertions(table, checked, study_letters(study), crit))
    if "repeat" in kinds:
        atomic.write_json(out_dir / "repeat.json", check_repeats(table, crit))
    if "brute" in kinds:
        atomic.write_json(out_dir / "brute.json",
                          brute_summary(rank_orders(table, crit), result["orders"], crit))
    return result


# --- tune -----------------------------------------------------------------------------------


def tune_chains(study: StudyConfig, out_dir: Path, chain: str | None) -> tuple[str, ...]:
    """The candidate orders: --chain, else the study's tune.chains, else the proposed orders in
    order.json (every topological order of the decided DAG), the first
    `MAX_CANDIDATE_ORDERS` of them."""
    from seqsearch.search.tune import MAX_CANDIDATE_ORDERS, check_chain

    if chain:
        return (check_chain(chain),)
    if study.tune.chains:
        return tuple(check_chain(c) for c in study.tune.chains)
    order = out_dir / "order.json"
    if not order.is_file():
        raise SeqsearchError(f"{order}: no proposed order yet; run 'seqsearch probe' and "
                             "'seqsearch order' first, or give --chain (e.g. --chain DPQE)")
    import json

    orders = json.loads(order.read_text())["orders"]
    if not orders:
        raise SeqsearchError(f"{order}: lists no order")
    if len(orders) > MAX_CANDIDATE_ORDERS:
        note(f"[tune] {len(orders)} orders are consistent with the decided pairs; tuning draws "
             f"sub-chains from the first {MAX_CANDIDATE_ORDERS}")
    return tuple(check_chain(o) for o in orders[:MAX_CANDIDATE_ORDERS])


def tune_options(study: StudyConfig, chains: tuple[str, ...], *, trials: int | None,
                 budget: float | None, multi_objective: bool, pruner: bool | None,
                 out_dir: Path | None = None) -> Any:
    """Tuning options from the study and the command line. The space: every sub-chain of the
    candidate orders (each stage on or off) and the stages' params. With `out_dir` holding a
    probe, its best measured points within the budget (`tune.warm_start` of them) are queued
    first, on top of the `trials` the sampler gets."""
    from seqsearch.search.tune import TuneOptions, subchains, warm_start

    t = study.tune
    fixed = study.tune_fixed()
    b = t.budget if budget is None else budget
    if not 0 <= b <= 100:
        raise SeqsearchError(f"--budget {b}: must lie in [0, 100] (accuracy-drop points)")
    if t.aim is not None and t.aim > b:
        raise SeqsearchError(f"tune.aim {t.aim:g} is above the budget {b:g}: aim at the budget "
                             "less the export's margin (export prints it), or leave aim out")
    n = t.trials if trials is None else trials
    if n < 1:
        raise SeqsearchError(f"--n-trials {n}: must be at least 1")
    initial: tuple[dict[str, Any], ...] = ()
    if out_dir is not None and (out_dir / "samples.json").is_file() \
            and (out_dir / "runs.csv").is_file() and t.warm_start > 0:
        import pandas as pd

        base_val = float(baseline_metrics(study, out_dir)["val_accuracy"])
        initial = warm_start(pd.read_csv(out_dir / "runs.csv"),
                             json.loads((out_dir / "samples.json").read_text()), fixed,
                             base_val, b if t.aim is None else t.aim, t.warm_start,
                             study.space)
    choices = subchains(chains) if t.subchains else tuple(dict.fromkeys(chains))
    if not t.subchains:  # a warm start is a probe pair or single: not a full order
        initial = tuple(p for p in initial if p["chain"] in choices)
    extra = tuple(dict.fromkeys(p["chain"] for p in initial if p["chain"] not in choices))
    if multi_objective and t.objective != "bitops":
        raise SeqsearchError(f"--multi-objective (accuracy and BitOpsCR) with tune.objective "
                             f"{t.objective!r}: use tune.objective: both for a Pareto front of "
                             "BitOpsCR and measured speed-up")
    return TuneOptions(chains=choices + extra, orders=chains, trials=n, budget=b,
                       multi_objective=multi_objective, objective=t.objective,
                       runtime=t.runtime, space=tuple(study.space.items()), aim=t.aim,
                       initial=initial,
                       pruner=t.pruner if pruner is None else pruner,
                       prune_slack=t.prune_slack, seed=study.seed,
                       startup_trials=t.startup_trials, thresholds=tuple(study.probe.thresholds),
                       fixed=tuple(sorted(fixed.items())))


def prepare_tune(study: StudyConfig, out_dir: Path, opts: Any, *, storage: str | None = None,
                 worker: int = 0) -> tuple[Baseline, Any]:
    """The baseline (trained once, here) and the tuning study with every slot queued; dead
    workers' slots are queued again."""
    from seqsearch.search.tune import create_study, queue_slots

    preflight(study)
    base = study_baseline(study, out_dir)
    st = create_study(open_storage(storage, out_dir), opts.study_name(study.name), opts, worker)
    reap_dead_trials(st)
    queue_slots(st, opts.trials, opts.initial)
    return base, st


def run_tune(study: StudyConfig, out_dir: Path, opts: Any, *, storage: str | None = None,
             worker: int = 0, finalize: bool = True) -> dict[str, Any]:
    from seqsearch.chain import runner_for
    from seqsearch.search.tune import Objective, work

    base, st = prepare_tune(study, out_dir, opts, storage=storage, worker=worker)
    record_environment(out_dir, f"tune-w{worker}", base.data.train.x.device, study.train)
    runner = runner_for(study, base, out_dir / "cache")
    did = work(st, Objective(runner, opts, latency_meter(base, out_dir, opts)),
               label=f"tune w{worker}")
    summary: dict[str, Any] = {"worker": worker, **did}
    if finalize:
        summary.update(finish_tune(study, out_dir, opts, storage=storage))
    return summary


def latency_meter(base: Baseline, out_dir: Path, opts: Any) -> Any:
    """For tune.objective latency | both: the meter that times each trial's lowered network
    against the baseline on tune.runtime, cached in tune/latency.json; else None."""
    if opts.objective == "bitops":
        return None
    from seqsearch.deploy import missing_line, runtimes
    from seqsearch.search.latency import LatencyMeter

    line = missing_line(f"tune.objective {opts.objective}")
    if line is not None:
        raise SeqsearchError(line)
    runtimes.resolve(opts.runtime)  # a missing runtime: one line
    return LatencyMeter(base.model, base.data.val.x, runtime=opts.runtime,
                        cache_file=out_dir / "tune" / "latency.json")


def trials_frame(trials: Sequence[Any]) -> Any:
    """tune/trials.csv: one row per slot, its params, attributes and value(s)."""
    import pandas as pd

    rows = []
    for t in trials:
        row = {"number": t.number, "slot": t.user_attrs.get("slot"), "state": t.state.name,
               **dict(t.params),
               **{k: v for k, v in t.user_attrs.items()
                  if k not in ("steps", "host", "pid", "slot")}}
        if t.values:
            for i, v in enumerate(t.values):
                row[f"value{i}" if len(t.values) > 1 else "value"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def tune_counts(name: str, opts: Any, trials: Sequence[Any]) -> dict[str, Any]:
    states = [t.state.name for t in trials]
    return {
        "study": name, "budget": opts.budget, "aim": opts.aim, "chains": list(opts.chains),
        "trials": len(trials),
        "warm_start_trials": sum(1 for t in trials if t.user_attrs.get("warm_start")),
        "sampler_trials": sum(1 for t in trials if not t.user_attrs.get("warm_start")),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
        "running": states.count("RUNNING") + states.count("WAITING"),
        "stage_trainings": sum(int(t.user_attrs.get("trained", 0)) for t in trials),
        "train_seconds": round(sum(float(t.user_attrs.get("train_seconds", 0.0))
                                   for t in trials), 3),
    }


def tune_folder(study: StudyConfig, out_dir: Path, opts: Any) -> Path:
    """tune/ for the study's own tuning (its budget, one objective), which the report reads;
    tune/<study name>/ for any other budget or mode, so one never overwrites the other."""
    if opts.budget == study.tune.budget and not opts.multi_objective:
        return out_dir / "tune"
    return out_dir / "tune" / opts.study_name(study.name)


def export_trial(study: StudyConfig, out_dir: Path, best: Any,
                 tune_dir: Path | None = None) -> dict[str, Any]:
    """The trial's model (rebuilt through the prefix cache, no training when cached) and its
    chain file (apply format) under tune/; returns what best.json says of it."""
    from seqsearch.chain import plan, runner_for, save_model
    from seqsearch.report.export import chain_document, pinned_policy, write_chain

    tune_dir = tune_dir or out_dir / "tune"
    steps = [(name, params) for name, params in best.user_attrs["steps"]]
    base = get_baseline(study, out_dir=out_dir)
    runner = runner_for(study, base, out_dir / "cache")
    result = runner.run(plan(steps))
    metrics = {"accuracy": best.user_attrs["test_accuracy"],
               "bitops_cr": best.user_attrs["bitops_cr"], "cr": best.user_attrs["cr"]}
    model_path = tune_dir / "best_model.pt"
    save_model(model_path, result.model, {"chain": best.user_attrs["chain"], "final": metrics})
    threads = [base.metrics.get("threads"), *runner.lineage_threads(plan(steps))]
    doc = chain_document(study, steps, metrics, name=f"{study.name}-best",
                         output=relative(out_dir), policy=pinned_policy(study, out_dir, threads))
    write_chain(tune_dir / "best_chain.yaml", doc)
    a = best.user_attrs
    return {
        "number": best.number, "chain": a["chain"], "val_accuracy": a["val_accuracy"],
        "test_accuracy": a["test_accuracy"], "val_bitops_cr": a["val_bitops_cr"],
        "bitops_cr": a["bitops_cr"], "cr": a["cr"], "drop": a["drop"],
        "test_drop": a["test_drop"], "tau": a.get("tau"), "params": dict(best.params),
        **({"speedup": a["speedup"], "latency_ms": a["latency_ms"],
            "latency_runtime": a["latency_runtime"]} if "speedup" in a else {}),
        "stage_trainings_total": result.trained, "model_file": str(model_path),
        "trajectory": result.records, "chain_file": str(tune_dir / "best_chain.yaml"),
    }


def finish_tune(study: StudyConfig, out_dir: Path, opts: Any, *, storage: str | None = None
                ) -> dict[str, Any]:
    """trials.csv, best.json, the best chain (apply format) and its model, from the storage
    and the prefix cache (no training)."""
    import optuna

    from seqsearch.search.tune import best_feasible, slot_trials

    name = opts.study_name(study.name)
    st = optuna.load_study(study_name=name, storage=open_storage(storage, out_dir))
    tune_dir = tune_folder(study, out_dir, opts)
    trials = slot_trials(st)
    atomic.write_bytes(tune_dir / "trials.csv", trials_frame(trials).to_csv(index=False).encode())
    summary = tune_counts(name, opts, trials)
    summary["objective"] = opts.objective
    if opts.objective != "bitops":
        summary["runtime"] = opts.runtime
    if opts.directions == 2:
        summary["pareto"] = [{"number": t.number, **{k: t.user_attrs.get(k) for k in (
            "val_accuracy", "val_bitops_cr", "test_accuracy", "bitops_cr", "speedup",
            "chain") if k in t.user_attrs}}
            for t in st.best_trials if t.user_attrs.get("constraint", 1.0) <= 0]
    if (out_dir / "runs.csv").is_file() and opts.pruner and opts.directions == 1:
        import pandas as pd

        from seqsearch.search.tune import pruner_regret

        base_val = float(baseline_metrics(study, out_dir)["val_accuracy"])
        summary["pruner_check"] = pruner_regret(pd.read_csv(out_dir / "runs.csv"), base_val,
                                                opts.budget, opts.prune_slack)
    best = best_feasible(st, opts.objective)
    summary["best"] = None if best is None else export_trial(study, out_dir, best, tune_dir)
    atomic.write_json(tune_dir / "best.json", summary)
    all_failed("tune", [t.user_attrs.get("error", "failed (no reason recorded)")
                        if t.state.name == "FAIL" else None for t in trials])
    return summary


# --- the whole pipeline -------------------------------------------------------------------------


def export_chain(study: StudyConfig, out_dir: Path, opts: Any, *,
                 storage: str | None = None) -> dict[str, Any] | None:
    """Confirm the best candidates of probe, brute force and tune on fresh seeds, judge the
    probe and brute-force points already measured on two or more seeds as they are, and export
    the most compressed one whose predictive bound holds at `tune.confidence` as chain.yaml
    (apply format: `metrics` of the exported model, plus `source`, `feasible` and
    `confirmation` with the bound, σ_run and margin, each saying which seeds judged it) and
    model.pt; every candidate's figures go to confirm.json. Never exports nothing while
    anything was measured."""
    import optuna

    from seqsearch.chain import plan, runner_for, save_model
    from seqsearch.deploy.command import write_model_onnx
    from seqsearch.report.export import chain_document, pinned_policy, write_chain
    from seqsearch.search.confirm import (
        FRESH_SEED_OFFSET,
        FRESH_SEEDS,
        confirm,
        probe_prices_sigma,
    )
    from seqsearch.search.tune import slot_trials

    preflight(study)
    base = study_baseline(study, out_dir)
    try:
        trials = slot_trials(optuna.load_study(study_name=opts.study_name(study.name),
                                               storage=open_storage(storage, out_dir)))
    except KeyError:  # tuning has not run: probe points only
        trials = []
    # the study seed's runner (the selection run of a tuning trial, the model to export) and
    # FRESH_SEEDS fresh ones: a re-run candidate is judged on runs it was not picked on
    runners = [runner_for(study, base, out_dir / "cache"),
               *(runner_for(study, base, out_dir / "cache",
                            seed=study.seed + k * FRESH_SEED_OFFSET)
                 for k in range(1, FRESH_SEEDS + 1))]
    meter = latency_meter(base, out_dir, opts) if opts.objective == "latency" else None
    # 4 candidates where the probe's repeated points price σ_run, 8 where it comes from the
    # confirmation runs alone (no probe, or a one-seed one)
    probed = probe_prices_sigma(out_dir / "runs.csv", out_dir / "samples.json")
    got = confirm(out_dir / "runs.csv", out_dir / "samples.json", trials,
                  float(base.metrics["val_accuracy"]), opts.budget,
                  study.tune.confirm_count(probed), runners,
                  confidence=study.tune.confidence,
                  images=(len(base.data.val), len(base.data.test)),
                  base_test=float(base.metrics["test_accuracy"]),
                  speed=None if meter is None else (lambda m: meter.speedup(m)["speedup"]))
    if got is None:
        note("[export] nothing to export: no probe point and no completed tuning trial")
        return None
    c = got.candidate
    run = c.runs[0]  # the study-seed run: what `seqsearch apply` rebuilds
    assert run["seed"] == runners[0].ctx.seed, "confirm puts the study-seed run first"
    metrics = {"accuracy": run["test_accuracy"], "bitops_cr": run["bitops_cr"], "cr": run["cr"]}
    # where the judging runs came from: a probe point measured on two seeds needs no re-run
    evidence = {"seeds": c.seeds, "confirmed_by": c.confirmed_by()}
    confirmation = {
        "budget": opts.budget, "runs": c.runs, **got.judgement(c),
        **{f"mean_{m}": c.mean(m) for m in ("val_accuracy", "val_bitops_cr", "test_accuracy",
                                            "bitops_cr")},
        "baseline_val_accuracy": float(base.metrics["val_accuracy"]),
        "baseline_test_accuracy": float(base.metrics["test_accuracy"]),
        "note": got.why, **evidence}
    steps = [(s, p) for s, p in c.steps]
    threads = [base.metrics.get("threads"), *runners[0].lineage_threads(plan(steps))]
    doc = chain_document(study, steps, metrics,
                         name=f"{study.name}-export", output=relative(out_dir),
                         policy=pinned_policy(study, out_dir, threads))
    doc.update(feasible=got.feasible, confirmation=confirmation,
               source={"from": c.source, "id": c.ident, "chain": c.chain, **evidence})
    chain_path, model_path = out_dir / "chain.yaml", out_dir / "model.pt"
    write_chain(chain_path, doc)
    save_model(model_path, got.model, {"chain": c.chain, "final": metrics})
    onnx_path = write_model_onnx(out_dir, got.model, base.data.train.x[:256])
    rule = got.rule
    atomic.write_json(out_dir / "confirm.json", {
        "budget": opts.budget,
        "rule": {"confidence": rule.confidence, "z": rule.z, "sigma_run": rule.sigma_run,
                 "sigma_run_from": rule.sigma_from, "val_images": rule.n_val,
                 "test_images": rule.n_test, "baseline_runs": rule.baseline_runs,
                 "formula": "mean val drop (judging runs, winner's curse priced in) + z * "
                            "sigma_run * sqrt((1 + val_images / test_images) * "
                            "(1 / judging runs + 1 / baseline_runs))"},
        "exported": {"chain": c.chain, "from": c.source, "id": c.ident,
                     "candidate": got.considered.index(c),
                     "feasible": got.feasible, "note": got.why, **evidence},
        "measured": got.measured,
        **({"failed": got.failed} if got.failed else {}),
        **({"ranked_by": f"measured speed-up on {opts.runtime}"} if got.speedups else {}),
        "candidates": [{"chain": x.chain, "from": x.source, "id": x.ident,
                        "val_accuracy": x.val_accuracy, "val_bitops_cr": x.val_bitops_cr,
                        **({"speedup": got.speedups[x.key]} if x.key in got.speedups else {}),
                        "runs": x.runs, "steps": x.steps, "seeds": x.seeds,
                        "confirmed_by": x.confirmed_by(), **got.judgement(x)}
                       for x in got.considered]})
    if not got.feasible:
        note(f"[export] {c.chain} exported, but {got.why}")
        noise = confirmation.get("noise_margin")
        if noise is not None and math.isfinite(noise) and study.tune.aim is None:
            note(f"[export] the bound adds {noise:.2f} points of noise to a candidate's mean "
                 f"validation drop: `tune.aim: {max(opts.budget - noise, 0.0):.2f}` tunes "
                 "among chains it can accept (a new tuning study; docs/study-files.md)")
    return {"chain": str(chain_path), "model": str(model_path),
            "onnx": str(onnx_path) if onnx_path else None, "exported": c.chain,
            "from": c.source, "id": c.ident, "feasible": got.feasible, **confirmation}


def run_all(study: StudyConfig, out_dir: Path, *, storage: str | None = None,
            probe: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """baseline → probe → order → tune → export (confirmed) → report; each step resumes on a
    rerun. `probe` replaces the in-process probe step (the CLI's worker processes)."""
    from seqsearch.report.build import build_report
    from seqsearch.timings import StepTimes

    clock = StepTimes(out_dir / "timings.json")
    result: dict[str, Any] = {}

    def step(name: str, k: int, fn: Any) -> Any:
        note(f"[run] step {k}/6: {name}")
        with clock.step(name):
            return fn()

    preflight(study)
    step("baseline", 1, lambda: study_baseline(study, out_dir))
    result["probe"] = step("probe", 2, probe or (lambda: run_probe(study, out_dir,
                                                                   storage=storage)))
    result["order"] = step("order", 3, lambda: run_order(study, out_dir))
    chains = tune_chains(study, out_dir, None)
    opts = tune_options(study, chains, trials=None, budget=None, multi_objective=False,
                        pruner=None, out_dir=out_dir)
    result["tune"] = step("tune", 4, lambda: run_tune(study, out_dir, opts, storage=storage))
    result["export"] = step("export", 5, lambda: export_chain(study, out_dir, opts,
                                                             storage=storage))
    result["report"] = step("report", 6, lambda: build_report(study, out_dir))
    result["timings"] = dict(clock.times)
    return result
