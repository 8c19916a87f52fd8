"""The `seqsearch` command line. It only wires the library's functions together."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from seqsearch.errors import SeqsearchError, first_line
from seqsearch.version import __version__
from seqsearch.workers import AUTO


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SeqsearchError(
            f"--input-shape {text!r}: expected C,H,W as integers, e.g. 3,32,32"
        ) from None
    if len(shape) != 3 or min(shape) < 1:
        raise SeqsearchError(f"--input-shape {text!r}: expected three positive integers C,H,W")
    return shape


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise SeqsearchError(
            f"--kwargs {text!r}: expected a JSON object, e.g. '{{\"width\": 0.5}}'"
        ) from None
    if not isinstance(value, dict):
        raise SeqsearchError(f"--kwargs {text!r}: expected a JSON object")
    return value


def cmd_count(args: argparse.Namespace) -> int:
    from seqsearch.metrics import measure
    from seqsearch.models import build_model

    shape = _parse_shape(args.input_shape)
    if args.num_classes < 1:
        raise SeqsearchError(f"--num-classes {args.num_classes}: must be at least 1")
    model = build_model(args.model, input_shape=(shape[0], shape[1], shape[2]),
                        num_classes=args.num_classes, kwargs=_parse_kwargs(args.kwargs))
    cost = measure(model, shape)
    row = {"model": args.model, "input_shape": list(shape), "num_classes": args.num_classes,
           "macs": cost.macs, "params": cost.params, "bitops": cost.bitops}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"model    {args.model}  input {','.join(map(str, shape))}  "
              f"classes {args.num_classes}")
        print(f"MACs     {cost.macs:,}")
        print(f"params   {cost.params:,}")
        print(f"BitOps   {cost.bitops:,}  (FP32: MACs x 32 x 32)")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seqsearch.baseline import chance_warning, get_baseline
    from seqsearch.config import load_study
    from seqsearch.preflight import preflight

    study = load_study(args.study)
    args.model_spec = study.model.name
    preflight(study)
    base = get_baseline(study, out_dir=Path(args.out) if args.out else None)
    m = base.metrics
    warning = chance_warning(study, m, base.data.num_classes)
    if warning is not None:
        print(f"seqsearch: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"study": study.name, "from_cache": base.from_cache, **m}))
    else:
        source = "cache" if base.from_cache else f"trained {m['epochs']} epochs, {m['seconds']} s"
        print(f"study {study.name}: {study.model.name} on {study.data.name} ({source})")
        print(f"val accuracy   {100 * m['val_accuracy']:.2f} %")
        print(f"test accuracy  {100 * m['test_accuracy']:.2f} %")
        print(f"MACs {m['macs']:,}  params {m['params']:,}  BitOps {m['bitops']:,}")
    return 0


def _fmt_row(label: str, order: str, r: dict[str, Any], cached: str = "") -> str:
    return (f"{label:<6}{order:<7}{100 * r['val_accuracy']:>8.2f}{100 * r['test_accuracy']:>9.2f}"
            f"{r['bitops']:>16,.0f}{r['bitops_cr']:>10.2f}x{r['cr']:>8.2f}x"
            f"{r.get('seconds', 0.0):>8.1f}s {cached}")


def cmd_apply(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seqsearch.apply_settings import apply_settings
    from seqsearch.baseline import get_baseline
    from seqsearch.chain import letters, plan, runner_for, save_model
    from seqsearch.config import load_chain
    from seqsearch.progress import note
    from seqsearch.train import torch_threads

    path = Path(args.chain)
    cfg = load_chain(path)
    args.model_spec = cfg.model.name
    if not cfg.stages:
        raise SeqsearchError(f"{path}: 'stages' is empty; list at least one {{stage: NAME}}")
    steps = plan([(s.stage, s.params) for s in cfg.stages])  # every check before any training
    settings = apply_settings(cfg, path, out=args.out, precision=args.precision,
                              threads=args.threads)
    for line in settings.notes:
        note(line)
    cfg, out = settings.cfg, settings.model_path
    with torch_threads(settings.baseline_threads):
        base = get_baseline(cfg)
    runner = runner_for(cfg, base, cfg.output_dir() / "cache")
    runner.stage_threads = settings.stage_threads
    result = runner.run(steps)
    m = base.metrics
    baseline = {"accuracy": m["test_accuracy"], "test_accuracy": m["test_accuracy"],
                "val_accuracy": m["val_accuracy"], "bitops": float(m["bitops"]),
                "bitops_cr": 1.0, "cr": 1.0}
    final = {k: v for k, v in result.records[-1].items()
             if k not in ("stage", "letter", "params", "seconds", "from_cache")}
    chain = letters(steps)
    save_model(out, result.model, {"chain": chain, "final": final,
                                   "steps": [[s.stage, dict(s.params)] for s in steps]})
    onnx = None
    if not args.no_onnx:
        from seqsearch.deploy.command import write_model_onnx

        onnx = write_model_onnx(out.parent, result.model, base.data.train.x[:256],
                                name=out.with_suffix(".onnx").name, label="apply")
    if args.json:
        print(json.dumps({"chain": chain, "baseline": baseline, "stages": result.records,
                          "final": final, "model_file": str(out),
                          "onnx_file": None if onnx is None else str(onnx),
                          "stage_trainings": result.trained, "cached": result.cached,
                          "policy": {**settings.policy,
                                     "threads": [base.metrics.get("threads"),
                                                 *runner.lineage_threads(steps)]},
                          "requested_policy": {"precision": cfg.train.precision,
                                               "memory_format": cfg.train.memory_format},
                          "notes": settings.notes}))
        return 0
    print(f"chain {chain}: {cfg.model.name} on {cfg.data.name}, first/last bits "
          f"{cfg.first_last_bits[0]}/{cfg.first_last_bits[1]}")
    print(f"{'step':<6}{'order':<7}{'val %':>8}{'test %':>9}{'BitOps':>16}{'BitOpsCR':>11}"
          f"{'CR':>9}{'time':>9}")
    print(_fmt_row("base", "-", baseline))
    for i, r in enumerate(result.records, start=1):
        print(_fmt_row(f"{i} {r['letter']}", r["order"], r, "(cached)" if r["from_cache"] else ""))
    drop = 100 * (baseline["accuracy"] - final["accuracy"])
    print(f"final: test accuracy {100 * final['accuracy']:.2f} % (drop {drop:+.2f} pts), "
          f"BitOpsCR {final['bitops_cr']:.2f}x, CR {final['cr']:.2f}x; "
          f"{result.trained} stage training(s), {result.cached} from cache")
    print(f"model saved to {out}" + ("" if onnx is None else f"; ONNX: {onnx}"))
    return 0


def _study_and_dir(args: argparse.Namespace) -> tuple[Any, Any]:
    from pathlib import Path

    from seqsearch.config import load_study

    study = load_study(args.study)
    args.model_spec = study.model.name
    return study, Path(args.out) if args.out else study.output_dir()


def _print_plan(study: Any, as_json: bool, out: Any = None, *, timed: bool = True) -> int:
    from seqsearch.preflight import check_fixed, preflight
    from seqsearch.search.plan import done_runs, dry_run, pilot_power
    from seqsearch.search.stats import units_needed_text

    shape = preflight(study)  # every check a real run makes before it trains
    plan = dry_run(study)
    plan["pilot_power"] = None if out is None else pilot_power(out)
    plan["done"] = None if out is None else done_runs(out)
    plan["wall_time"] = None
    if timed:
        from seqsearch.search.estimate import estimate

        plan["wall_time"] = estimate(study, shape, plan["train_images"], check_fixed(study))
    if as_json:
        print(json.dumps(plan))
        return 0
    print(f"plan for {plan['study']}: {plan['model']} on {plan['data']} "
          f"(input {','.join(map(str, plan['input']))}, {plan['classes']} classes, "
          f"{plan['train_images']:,} training images), stages {plan['stages']}")
    print(f"baseline: {plan['epochs']['baseline']} epochs, {plan['baseline_macs']:,} MACs")
    print(f"probe: {plan['probe_runs']:,} runs, {plan['probe_stage_trainings']:,} stage trainings "
          f"({plan['probe_stage_trainings_without_cache']:,} without the prefix cache), "
          f"{plan['epochs']['probe']:,} epochs")
    done = plan["done"]
    if done is not None:
        print(f"probe done in {out}: {done['single'] + done['pair']:,} runs ({done['single']} "
              f"single, {done['pair']} pair; the same command goes on from them)")
    print(f"tune: {plan['tune_trials']} trials, at most {plan['tune_stage_trainings_at_most']:,} "
          f"stage trainings, {plan['epochs']['tune_at_most']:,} epochs")
    print(f"estimated compute: {plan['estimated_tflops']:,.1f} TFLOPs (upper bound)")
    wall = plan["wall_time"]
    if wall is not None:
        from seqsearch.search.estimate import human

        def span(r: dict[str, float]) -> str:
            return f"{human(r['central'])} ({human(r['low'])} to {human(r['high'])})"

        m = wall["measured"]
        print(f"wall time on this machine ({wall['device']}, {wall['threads']} thread(s); "
              f"batch {wall['batch']}: baseline "
              f"step {min(m['baseline_step_s']):.3g} s, {wall['batches_per_epoch']} batches "
              f"per epoch): " + ", ".join(f"{k} {span(v)}" for k, v in wall["steps"].items())
              + f"; total {span(wall['total'])}, the report adds seconds")
    b = plan["brute_force"]
    print(f"brute force (--brute-force): {b['orders']} orders, {b['stage_trainings']:,} stage "
          f"trainings ({b['times_the_probe']:.1f}x the probe's), {b['epochs']:,} epochs, "
          f"{b['estimated_tflops']:,.1f} TFLOPs")
    q = plan["sequential"]
    print(f"verdicts: {q['planned_looks']} planned look(s) "
          + (f"(seeds, then samples at {', '.join(map(str, q['sample_looks']))}) "
             if q["sample_looks"] else "(one per seed) " if q["planned_looks"] > 1 else "")
          + f"from {q['samples']} to at most {q['max_samples']} samples per pair; "
          + (f"{q['looks_with_edge_alpha']} of them can decide an edge and share alpha; "
             if q["looks_with_edge_alpha"] < q["planned_looks"] else "")
          + f"the first pair of Holm's family tests at {q['first_pair_level']:.3g}; at most "
          f"{q['stage_trainings_at_most']} pair-probe stage trainings")
    pilot = plan.get("pilot_power")
    if pilot is None:
        print("power: unknown before a pilot (the noise is measured by the probe; "
              "`seqsearch order` then prints each pair's power line)")
    else:
        for p in pilot:
            if p.get("detectable") is not None:
                need = units_needed_text(p)
                seen = ("no effect is seen" if need is None else
                        f"the {abs(p['effect'] or 0):.2f}-pt effect seen needs {need} units")
                print(f"power from the probe already run: {p['pair']}: {p['units']} units "
                      f"detect {p['detectable']:.2f} pts with 80 % power; {seen}")
    k, need = q["max_samples"], plan["min_samples_to_decide"]
    if k < need:
        print(f"note: at most {k} samples cannot decide any pair (the paired test needs at "
              f"least {need} samples at probe.alpha {study.probe.alpha:g} over "
              f"{q['planned_looks']} look(s) and Holm's correction); every order stays a "
              "candidate")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from seqsearch.pipeline import run_probe

    study, out = _study_and_dir(args)
    if args.dry_run:
        return _print_plan(study, args.json, out, timed=not args.no_estimate)
    from seqsearch.timings import timed_command
    from seqsearch.workers import resolve_workers

    workers = resolve_workers(args.workers)
    checks = args.insert or args.repeat or args.brute_force
    with timed_command(out, "checks" if checks else "probe"):
        if workers > 1:
            from seqsearch.baseline import get_baseline

            get_baseline(study, out_dir=out)  # once, before the workers start
            _spawn_probe_workers(args, workers, insert=args.insert, repeat=args.repeat,
                                 brute=args.brute_force)
            # every unit is done now: this pass only gathers the results and the checks
        summary = run_probe(study, out, storage=args.storage, insert=args.insert,
                            repeat=args.repeat, brute=args.brute_force)
    t = summary["totals"]
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"probe {study.name}: {t['units']} runs in {out / 'runs.csv'}")
    print(f"stage trainings: {t['stage_trainings']} run, {t['saved_by_cache']} saved by the "
          f"prefix cache (the pair chains alone would train {t['pair_stages_without_cache']} "
          f"without it); {t['failed']} failed")
    for r in summary.get("insertions", []):
        verdict = ("undecided" if not r.get("decided", not r["tie"])
                   else "holds" if r["holds"] else "breaks")
        print(f"insert {r['inserted']} into {r['pair']}: {verdict} (margin {r['margin']:+.3f}, "
              f"p {r.get('p_value', float('nan')):.3g})")
    for r in summary.get("repeats", []):
        verdict = ("undecided" if not r.get("decided", not r["tie"])
                   else "helps" if r["repeat_helps"] else "does not help")
        print(f"repeat {r['stage']}{r['stage']}: {verdict} (margin {r['margin']:+.3f}, "
              f"p {r.get('p_value', float('nan')):.3g})")
    brute = summary.get("brute_force")
    if brute:
        from seqsearch.report.tables import brute_sentence

        top = ", ".join(f"{r['order']} ({r['hypervolume']:.3f})" for r in brute["ranking"][:5])
        print(f"brute force over {len(brute['ranking'])} orders, best by hypervolume: {top}")
        print(brute_sentence(brute, bold=""))
    print(f"next: seqsearch order {args.study or ''}".rstrip())
    return 0


def cmd_order(args: argparse.Namespace) -> int:
    from seqsearch.pipeline import run_order

    study, out = _study_and_dir(args)
    result = run_order(study, out)
    if args.json:
        print(json.dumps(result))
        return 0
    from seqsearch.report.verdicts import counts, effect, power_text, verdict_word

    print(f"{'pair':<6}{'verdict':<24}{'effect':>8}{'p':>9}{'level':>9}  note")
    for p in result["pairs"]:
        note = "fronts cross" if p["crosses"] else ""
        print(f"{p['pair']:<6}{verdict_word(p):<24}{effect(p):>+8.2f}{p['p_value']:>9.3g}"
              f"{p['alpha']:>9.3g}  {note}")
        if p.get("outcome") == "undecided":
            print(f"      power: {power_text(p)}")
    print(f"pairs: {counts(result)} (effects in accuracy points, first order minus second)")
    edges = ", ".join(f"{e['from']}->{e['to']}" for e in result["edges"]) or "none"
    print(f"DAG edges: {edges}")
    if result["cycles"]:
        broken = ", ".join(b["edge"] for b in result["broken_edges"])
        print(f"cycles: {', '.join(result['cycles'])}; broken at {broken}")
    orders = result["orders"]
    label = "order" if len(orders) == 1 else f"{len(orders)} orders consistent with the DAG"
    print(f"{label}: {' '.join(orders)}")
    print(f"written: {out / 'order.json'}")
    return 0


def _store_flags(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The given value options of ARGS (e.g. --out, --storage) as command-line flags."""
    flags: list[str] = []
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def _spawn_probe_workers(args: argparse.Namespace, n: int, *, insert: bool = False,
                         repeat: bool = False, brute: bool = False) -> None:
    from seqsearch.workers import spawn, thread_budget, thread_share

    cmd = ["probe"] + ([args.study] if args.study else []) + _store_flags(args, ["out", "storage"])
    cmd += [flag for flag, on in (("--insert", insert), ("--repeat", repeat),
                                  ("--brute-force", brute)) if on]
    cmd += ["--workers", "1", "--threads", str(thread_share(n, thread_budget()))]
    # their summaries would repeat the one this process prints after them
    spawn(cmd, n, "probe", quiet=True)


def _spawn_workers(args: argparse.Namespace, n: int) -> None:
    from seqsearch.workers import spawn, thread_budget, thread_share

    cmd = ["tune"] + ([args.study] if args.study else []) + _store_flags(
        args, ["out", "chain", "n_trials", "storage", "budget"])
    if args.multi_objective:
        cmd.append("--multi-objective")
    if args.no_pruner:
        cmd.append("--no-pruner")
    cmd += ["--threads", str(thread_share(n, thread_budget()))]
    spawn(cmd, n, "tune", per_worker=[["--worker-index", str(i), "--no-finalize"]
                                      for i in range(n)])


def cmd_tune(args: argparse.Namespace) -> int:
    from seqsearch.pipeline import (
        finish_tune,
        prepare_tune,
        run_tune,
        tune_chains,
        tune_options,
    )

    study, out = _study_and_dir(args)
    chains = tune_chains(study, out, args.chain)
    opts = tune_options(study, chains, trials=args.n_trials, budget=args.budget,
                        multi_objective=args.multi_objective,
                        pruner=False if args.no_pruner else None, out_dir=out)
    from seqsearch.timings import timed_command
    from seqsearch.workers import resolve_workers

    workers = resolve_workers(args.workers)
    with timed_command(out, "tune"):
        if workers > 1:
            # baseline and slots once, here, before the workers start: workers never race
            prepare_tune(study, out, opts, storage=args.storage)
            _spawn_workers(args, workers)
            summary = finish_tune(study, out, opts, storage=args.storage)
        else:
            summary = run_tune(study, out, opts, storage=args.storage,
                               worker=args.worker_index, finalize=not args.no_finalize)
    if args.no_finalize and workers <= 1:
        return 0
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"tune {summary['study']}: chains {', '.join(summary['chains'])}, budget "
          f"{summary['budget']:g} pts; {summary['trials']} trials: {summary['complete']} "
          f"complete, {summary['pruned']} pruned, {summary['failed']} failed; "
          f"{summary['stage_trainings']} stage trainings")
    best = summary.get("best")
    if best is None:
        print("no trial met the accuracy budget")
        return 0
    print(f"best: trial {best['number']} chain {best['chain']}: val drop {best['drop']:.2f} "
          f"pts, test accuracy {100 * best['test_accuracy']:.2f} % (drop "
          f"{best['test_drop']:+.2f}), BitOpsCR {best['bitops_cr']:.1f}x (val "
          f"{best['val_bitops_cr']:.1f}x), CR {best['cr']:.1f}x")
    print(f"chain: {best['chain_file']}  model: {best['model_file']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from seqsearch.pipeline import export_chain, tune_chains, tune_options

    study, out = _study_and_dir(args)
    chains = tune_chains(study, out, None) if (out / "order.json").is_file() else ()
    opts = tune_options(study, chains, trials=None, budget=args.budget,
                        multi_objective=False, pruner=None)
    from seqsearch.timings import timed_command

    with timed_command(out, "export"):
        ex = export_chain(study, out, opts, storage=args.storage)
    if args.json:
        print(json.dumps(ex))
        return 0
    if ex is None:
        print("nothing to export: run 'seqsearch probe' (and 'seqsearch tune') first")
        return 0
    print(f"exported {ex['exported']} from {ex['from']} {ex['id']}"
          + ("" if ex["feasible"] else f" (INFEASIBLE: {ex['note'].removeprefix('infeasible: ')})")
          + f": test BitOpsCR {ex['runs'][0]['bitops_cr']:.1f}x on the study seed, mean of "
          f"{len(ex['runs'])} seeds {ex['mean_bitops_cr']:.1f}x; {ex['chain']}, {ex['model']}"
          + (f", {ex['onnx']}" if ex.get("onnx") else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from seqsearch.report.build import build_report

    study, out = _study_and_dir(args)
    result = build_report(study, out)
    print(f"report written: {out / 'summary.md'}, {out / 'index.html'} "
          f"({len(result['figures'])} figures)")
    for n in result["notes"]:
        print(f"note: {n}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from seqsearch.pipeline import run_all

    study, out = _study_and_dir(args)
    if args.dry_run:
        return _print_plan(study, args.json, out, timed=not args.no_estimate)
    from seqsearch.workers import resolve_workers

    workers = resolve_workers(args.workers)
    probe = None
    if workers > 1:
        from seqsearch.pipeline import run_probe

        def probe() -> dict[str, Any]:
            _spawn_probe_workers(args, workers)
            return run_probe(study, out, storage=args.storage)  # gathers what they ran
    res = run_all(study, out, storage=args.storage, probe=probe)
    order = res["order"]
    best = res["tune"].get("best")
    print(f"study {study.name} in {out}")
    from seqsearch.report.verdicts import counts, power_text, verdict_word

    print(f"pairs ({counts(order)}): " + ", ".join(f"{p['pair']}: {verdict_word(p)}"
                                                   for p in order["pairs"]))
    for p in order["pairs"]:
        if p.get("outcome") == "undecided":
            print(f"  {p['pair']} undecided: {power_text(p)}")
    print(f"proposed order(s): {' '.join(order['orders'])}")
    if best:
        print(f"best tuning trial {best['chain']}: test accuracy "
              f"{100 * best['test_accuracy']:.2f} % (drop {best['test_drop']:+.2f} pts), "
              f"BitOpsCR {best['bitops_cr']:.1f}x, CR {best['cr']:.1f}x")
    else:
        print("no tuning trial met the accuracy budget")
    ex = res["export"]
    if ex:
        drop = 100 * (ex["baseline_test_accuracy"] - ex["runs"][0]["test_accuracy"])
        why = ex["note"].removeprefix("infeasible: ")
        print(f"exported {ex['exported']} (from {ex['from']} {ex['id']}"
              + ("" if ex["feasible"] else ", INFEASIBLE: " + why) + "): test accuracy "
              f"{100 * ex['runs'][0]['test_accuracy']:.2f} % (drop {drop:+.2f} pts), BitOpsCR "
              f"{ex['runs'][0]['bitops_cr']:.1f}x; mean of {len(ex['runs'])} seeds: val drop "
              f"{100 * (ex['baseline_val_accuracy'] - ex['mean_val_accuracy']):+.2f} pts, "
              f"test BitOpsCR {ex['mean_bitops_cr']:.1f}x")
        print(f"exported: {ex['chain']} and {ex['model']}"
              + (f" and {ex['onnx']}" if ex.get("onnx") else ""))
    print(f"report: {out / 'summary.md'} and {out / 'index.html'}")
    total = sum(res["timings"].values())
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in res["timings"].items())
          + f" (total {total:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqsearch",
        description="Find the best order in which to compress a CNN "
        "(distillation, pruning, quantization, early exit).",
    )
    parser.add_argument("--version", action="version", version=f"seqsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("count", help="MACs, params and FP32 BitOps of a model")
    p.add_argument("model", help="registry name (e.g. resnet20) or spec 'module:callable' / "
                   "'file.py:callable'")
    p.add_argument("--input-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    p.add_argument("--num-classes", type=int, default=10, help="classes (default 10)")
    p.add_argument("--kwargs", help="model keyword arguments as JSON, e.g. '{\"width\": 0.5}'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_count)

    p = sub.add_parser("baseline", help="train (or load from cache) the study's baseline")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("apply", help="apply a chain of stages (CHAIN.yaml) to its baseline")
    p.add_argument("chain", help="chain YAML: version, model, data, train, stages")
    p.add_argument("--out", help="where to save the compressed model (default: next to the "
                   "chain file, same name, .pt; for a chain in its study folder, "
                   "runs/NAME/model.pt)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="train under this precision (default: the policy an exported chain "
                   "was measured under, else its train.precision)")
    p.add_argument("--threads", type=int, help="torch threads for this process (default: as "
                   "an exported chain's models were trained, its policy.threads, so the rebuild "
                   "is bit for bit; else torch's own choice)")
    p.add_argument("--no-onnx", action="store_true", help="write no ONNX file (default: "
                   "MODEL.onnx beside the model: real pruned shapes, int8 Q/DQ, exits as If)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("probe", help="run every pair of stages in both orders (paired samples)")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.add_argument("--storage", help="Optuna storage: RDB URL (sqlite:///…, postgresql://…) "
                   "or a journal file path (default: a journal in the study folder)")
    p.add_argument("--insert", action="store_true", help="also run the insertion check (§4)")
    p.add_argument("--repeat", action="store_true", help="also run the repetition check (§6)")
    p.add_argument("--brute-force", action="store_true", help="also run every full order of "
                   "the stages over the same samples (the ground truth)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; run "
                   "nothing")
    p.add_argument("--no-estimate", action="store_true", help="with --dry-run: counts only, "
                   "no wall-time estimate (which times a few training steps here)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _workers_option(p, AUTO, "local worker processes on the study's storage, each with its "
                    "share of the threads (default auto: one single-threaded worker per thread)")
    _threads_option(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("order", help="decide each pair, build the DAG, print the order(s)")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_order)

    p = sub.add_parser("tune", help="tune the chain's stage params with Optuna (budgeted)")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.add_argument("--chain", help="order as stage letters, e.g. DPQE (default: order.json)")
    p.add_argument("--n-trials", type=int, help="trials in the study, all workers together")
    p.add_argument("--storage", help="Optuna storage: RDB URL (sqlite:///…, postgresql://…) "
                   "or a journal file path (default: a journal in the study folder)")
    p.add_argument("--budget", type=float, help="accuracy-drop budget in points (default: "
                   "the study's tune.budget)")
    p.add_argument("--multi-objective", action="store_true",
                   help="maximise accuracy and BitOpsCR together; report the Pareto set")
    _workers_option(p, 1, "local worker processes, each with its share of the threads "
                    "(default 1; auto: one per thread)")
    _threads_option(p)
    p.add_argument("--no-pruner", action="store_true", help="run every trial to the end")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-finalize", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("export", help="re-run the best candidates on fresh seeds and export "
                       "the best chain whose predictive bound holds (chain.yaml, model.pt, "
                       "model.onnx)")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.add_argument("--storage", help="Optuna storage of the tuning study (default: the journal "
                   "in the study folder)")
    p.add_argument("--budget", type=float, help="accuracy-drop budget in points (default: "
                   "the study's tune.budget)")
    _threads_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="baseline, probe, order, tune, report and export in one go")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.add_argument("--storage", help="Optuna storage URL or journal path (default: a journal "
                   "in the study folder)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; run "
                   "nothing")
    p.add_argument("--no-estimate", action="store_true", help="with --dry-run: counts only, "
                   "no wall-time estimate (which times a few training steps here)")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON object")
    _workers_option(p, AUTO, "local worker processes for the probe step (default auto: one "
                    "single-threaded worker per thread)")
    _threads_option(p)
    p.set_defaults(func=cmd_run)

    from seqsearch.bench import add_parser as add_bench
    from seqsearch.deploy.cli_command import add_parser as add_bench_model

    add_bench_model(sub)
    add_bench(sub)

    p = sub.add_parser("report", help="rebuild tables, figures and summary from stored results")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--out", help="study folder (default: the study's output setting)")
    p.set_defaults(func=cmd_report)
    return parser


def _workers_option(p: argparse.ArgumentParser, default: int | str, text: str) -> None:
    from seqsearch.workers import workers_arg

    p.add_argument("--workers", type=workers_arg, default=default, metavar="N|auto", help=text)


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="torch threads for this process (default: "
                   "torch's own choice; workers get their share of the cores)")


def _diverged_line(exc: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message for a fit whose loss became NaN or infinite; None for any other
    error. A search (probe, tune) fails that trial alone and goes on, so what reaches here is
    a fit the command itself needs: the baseline, a chain's stage, an export's rerun."""
    if not isinstance(exc, RuntimeError):
        return None
    from seqsearch.train import DivergedError  # torch is loaded already if one was raised

    if not isinstance(exc, DivergedError):
        return None
    text = first_line(exc)
    model = getattr(args, "model_spec", None)
    tries = ["a lower train.lr" if text.startswith("baseline")
             else "a lower train.lr or train.finetune_lr_factor"]
    if "quantize" in text:
        tries.append("more quantize bits (weight_bits, act_bits)")
    if "fp32" not in text:
        tries.append("train.precision: fp32")
    return f"training diverged on {model or 'the model'}: {text}; try " + ", or ".join(tries)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        threads = getattr(args, "threads", None)
        if threads is not None:
            if threads < 1:
                raise SeqsearchError(f"--threads {threads}: must be at least 1")
            import torch

            torch.set_num_threads(threads)
        return func(args)
    except SeqsearchError as exc:
        print(f"seqsearch: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        line = _diverged_line(exc, args)
        if line is None:
            raise
        print(f"seqsearch: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqsearch: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
