"""What the budget pruner saves (`seqsearch bench tune`): the same tuning study (same seeds, same
trial budget, fresh stage caches) with the pruner and without: stage trainings, wall time, and
when the best feasible result came."""

from __future__ import annotations

import argparse
import time


def bench_tune(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    import optuna

    from seqsearch.baseline import baseline_path, get_baseline
    from seqsearch.config import load_study
    from seqsearch.pipeline import run_tune, tune_options
    from seqsearch.search.storage import open_storage
    from seqsearch.search.tune import best_feasible, slot_trials

    study = load_study(args.study)
    tmp = Path(tempfile.mkdtemp(prefix="seqsearch-bench-"))
    get_baseline(study, out_dir=tmp / "base")
    rows = []
    for pruner in (False, True):
        out = tmp / ("pruner" if pruner else "nopruner")
        src = baseline_path(study, tmp / "base")
        dst = baseline_path(study, out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        opts = tune_options(study, (args.chain,), trials=args.trials, budget=args.budget,
                            multi_objective=False, pruner=pruner)
        t0 = time.perf_counter()
        run_tune(study, out, opts, finalize=False)
        wall = time.perf_counter() - t0
        st = optuna.load_study(study_name=opts.study_name(study.name),
                               storage=open_storage(None, out))
        trials = slot_trials(st)
        best = best_feasible(st)
        first = min(t.datetime_start for t in trials if t.datetime_start)
        to_best = None
        if best is not None and best.datetime_complete is not None:
            to_best = (best.datetime_complete - first).total_seconds()
        trainings_to_best = None if best is None else sum(
            int(t.user_attrs.get("trained", 0)) for t in trials if t.number <= best.number)
        rows.append((pruner, sum(int(t.user_attrs.get("trained", 0)) for t in trials), wall,
                     best, to_best, trainings_to_best,
                     sum(t.state.name == "PRUNED" for t in trials)))
    print(f"tune benchmark: {study.name}, chain {args.chain}, {args.trials} trials, budget "
          f"{args.budget:g} pts, seed {study.seed}")
    for pruner, trainings, wall, best, to_best, tr_best, pruned in rows:
        label = "with pruner   " if pruner else "without pruner"
        if best is None:
            print(f"{label}: {trainings} stage trainings, {wall:.1f} s, {pruned} pruned; "
                  "no feasible trial")
            continue
        print(f"{label}: {trainings} stage trainings, {wall:.1f} s, {pruned} pruned; best "
              f"feasible trial {best.number} (val BitOpsCR "
              f"{best.user_attrs['val_bitops_cr']:.1f}x, test {best.user_attrs['bitops_cr']:.1f}x)"
              f" reached after {tr_best} trainings, {to_best:.1f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0
