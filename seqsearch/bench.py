"""Benchmarks that print ratios measured side by side in one run (the machine is noisy).

    python -m seqsearch.bench loop [--studies A.yaml,B.yaml] [--precision auto] [--rounds 3]
    python -m seqsearch.bench command [STUDY.yaml] [--epochs 3] [--rounds 3]

    python -m seqsearch.bench qat [--model resnet20] [--bits 4,8] [--rounds 5]
    python -m seqsearch.bench cache [--model resnet8] [--limit 1000]
    python -m seqsearch.bench tune [STUDY.yaml] [--chain DPQE] [--trials 12]

`loop`: throughput of seqsearch's `fit` under the default precision/memory-format policy over
a plain fp32 PyTorch loop on the same model, data and optimizer (the CPU studies' ResNet-20
and VGG-11 by default), measured alternately; prints each round, the median ratio and the
validation accuracy after each, for parity.
`command`: the same comparison over whole commands in fresh processes (seqsearch.bench_command).
`qat`: time of one QAT training step (DoReFa fake-quant layers) over one float step, same
model and batch, alternately.
`cache`: wall time of a two-stage chain whose first stage is in the prefix cache against the
same chain from scratch.
`tune`: the same tuning study (same seeds, same trial budget, fresh stage caches) with the
budget pruner and without: stage trainings, wall time, and when the best feasible result came.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seqsearch.data import DataBundle, load_data
from seqsearch.models import create_model
from seqsearch.train import TrainSettings, fit, lr_at


def plain_loop(model: torch.nn.Module, data: DataBundle, settings: TrainSettings) -> float:
    """The loop a PyTorch user writes by hand (fp32, contiguous, the same lr schedule as fit,
    so accuracies are comparable); returns seconds."""
    torch.manual_seed(settings.seed)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay, nesterov=True)
    x_all, y_all = data.train.x, data.train.y
    start = time.perf_counter()
    model.train()
    total = settings.epochs * -(-len(y_all) // settings.batch_size)
    step = 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(y_all))
        for i in range(0, len(y_all), settings.batch_size):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, settings.lr, settings.schedule)
            step += 1
            idx = order[i:i + settings.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def _loop_setup(study_file: str, limit: int | None) -> tuple[torch.nn.Module, DataBundle, Any]:
    """A CPU study's model (untrained) and data, as the study builds them."""
    from seqsearch.baseline import build_data, build_model
    from seqsearch.config import load_study

    study = load_study(study_file)
    # the plain loop does not augment, so neither does fit here: the same work in both
    update: dict[str, Any] = {"augment": "none"} | ({"limit": limit} if limit else {})
    study = study.model_copy(update={"data": study.data.model_copy(update=update)})
    data = build_data(study, torch.device("cpu"))
    torch.manual_seed(0)
    return build_model(study, data), data, study


def bench_loop(args: argparse.Namespace) -> int:
    """fit under the default policy (or --precision/--memory-format) against a plain fp32
    loop, alternately, on each CPU study's model and data; accuracy after each for parity."""
    from seqsearch.precision import resolve_policy
    from seqsearch.train import evaluate

    cpu = torch.device("cpu")
    for study_file in args.studies.split(","):
        initial, data, study = _loop_setup(study_file, args.limit)
        settings = TrainSettings(**{**study.train.settings(0).__dict__, "epochs": args.epochs,
                                    "precision": args.precision,
                                    "memory_format": args.memory_format})
        policy = resolve_policy(settings.precision, settings.memory_format, cpu)
        n = len(data.train) * settings.epochs
        print(f"loop benchmark: {study.model.name} on {study.data.name} ({len(data.train)} "
              f"train samples, input {','.join(map(str, data.input_shape))}), "
              f"{settings.epochs} epoch(s), batch {settings.batch_size}, "
              f"{torch.get_num_threads()} threads; fit policy: {policy.describe()} "
              f"(precision {args.precision}, memory format {args.memory_format})")
        plain_loop(copy.deepcopy(initial), data, settings)  # one warm-up of each, not counted
        fit(copy.deepcopy(initial), data, settings, progress=False)
        ratios, acc_plain, acc_fit = [], [], []
        for r in range(1, args.rounds + 1):
            m_plain, m_fit = copy.deepcopy(initial), copy.deepcopy(initial)
            t_plain = plain_loop(m_plain, data, settings)
            t_fit = fit(m_fit, data, settings, label="bench", progress=False).seconds
            ratio = t_plain / t_fit  # = throughput(fit) / throughput(plain)
            ratios.append(ratio)
            acc_plain.append(evaluate(m_plain, data.val))
            acc_fit.append(evaluate(m_fit, data.val))
            print(f"round {r}/{args.rounds}: plain {n / t_plain:8.1f} samples/s   "
                  f"fit {n / t_fit:8.1f} samples/s   ratio {ratio:.3f}   val accuracy plain "
                  f"{100 * acc_plain[-1]:.2f} % fit {100 * acc_fit[-1]:.2f} %")
        print(f"{study.model.name}: median throughput ratio fit/plain "
              f"{statistics.median(ratios):.3f}; mean val accuracy plain "
              f"{100 * statistics.mean(acc_plain):.2f} % "
              f"fit {100 * statistics.mean(acc_fit):.2f} %")
    return 0


def _step_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def bench_qat(args: argparse.Namespace) -> int:
    from seqsearch.stages.common import calibrate, counted_layers, replace_module
    from seqsearch.stages.quant_layers import to_quant

    wb, ab = (int(b) for b in args.bits.split(","))
    torch.manual_seed(0)
    fp = create_model(args.model, in_channels=3, num_classes=10)
    q = copy.deepcopy(fp)
    for name, layer in list(counted_layers(q)):
        replace_module(q, name, to_quant(layer, wb, ab))
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    calibrate(q, x)
    print(f"QAT step benchmark: {args.model}, w{wb}a{ab}, batch {args.batch_size} at 3x32x32, "
          f"{torch.get_num_threads()} threads")
    _step_time(fp, x, y, 2)
    _step_time(q, x, y, 2)
    ratios = []
    for r in range(1, args.rounds + 1):
        t_fp = _step_time(fp, x, y, args.steps)
        t_q = _step_time(q, x, y, args.steps)
        ratios.append(t_q / t_fp)
        print(f"round {r}/{args.rounds}: float {1000 * t_fp:7.1f} ms/step   "
              f"QAT {1000 * t_q:7.1f} ms/step   ratio {t_q / t_fp:.3f}")
    print(f"median QAT/float step-time ratio: {statistics.median(ratios):.3f}")
    return 0


def bench_cache(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from seqsearch.chain import ChainRunner, Reference, plan
    from seqsearch.config import TrainSection
    from seqsearch.metrics import count_bitops, param_bits
    from seqsearch.stages import StageContext
    from seqsearch.train import evaluate

    data = load_data(args.data, limit=args.limit, seed=0)
    torch.manual_seed(0)
    model = create_model(args.model, in_channels=data.in_channels, num_classes=data.num_classes)
    fit(model, data, TrainSettings(epochs=1, lr=0.05, batch_size=64), progress=False)
    train = TrainSection(epochs=2, stage_epochs=2, batch_size=64, lr=0.05)
    ctx = StageContext(data, train, 0, (8, 8), progress=False)
    ref = Reference(float(count_bitops(model, data.input_shape)), float(param_bits(model)),
                    evaluate(model, data.test), evaluate(model, data.val))
    first = plan([("distill", {"width": 0.5}), ("prune", {"ratio": 0.3})])
    second = plan([("distill", {"width": 0.5}), ("quantize", {})])
    print(f"prefix-cache benchmark: {args.model} on {args.data} ({len(data.train)} train), "
          f"chains {''.join(s.letter for s in first)} then "
          f"{''.join(s.letter for s in second)}")
    with tempfile.TemporaryDirectory() as tmp:
        cached = ChainRunner(model, data, ctx, ref, Path(tmp), "bench")
        cached.run(first)  # fills the cache with D
        t0 = time.perf_counter()
        res_c = cached.run(second)
        t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_f = ChainRunner(model, data, ctx, ref, None, "bench").run(second)
    t_fresh = time.perf_counter() - t0
    same = res_c.records[-1]["bitops"] == res_f.records[-1]["bitops"]
    print(f"from scratch: {t_fresh:.2f} s ({res_f.trained} stage trainings)")
    print(f"with cached prefix: {t_cached:.2f} s ({res_c.trained} stage training, "
          f"{res_c.cached} from cache); same result: {same}")
    print(f"time saved by the cache: {t_fresh - t_cached:.2f} s "
          f"({100 * (1 - t_cached / t_fresh):.0f} %)")
    return 0


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


_STUDIES = str(Path(__file__).parent / "studies")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqsearch.bench")
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("loop", help="fit (default policy) vs a plain fp32 PyTorch loop")
    p.add_argument("--studies", default=f"{_STUDIES}/resnet20-mnist5k.yaml,"
                                        f"{_STUDIES}/vgg11-mnist5k.yaml")
    p.add_argument("--limit", type=int, default=None, help="images used (default: the study's)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--memory-format", default="auto",
                   choices=("auto", "channels_last", "contiguous"))
    p.set_defaults(func=bench_loop)
    p = sub.add_parser("qat", help="QAT step time / float step time")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--bits", default="4,8", help="weight,activation bits")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(func=bench_qat)
    p = sub.add_parser("cache", help="time a cached prefix saves")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(func=bench_cache)
    p = sub.add_parser("tune", help="tuning with vs without the budget pruner")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--chain", default="DPQE")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--budget", type=float, default=1.0)
    p.set_defaults(func=bench_tune)
    from seqsearch.bench_command import add_parsers

    add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
