"""`seqsearch bench`'s arguments: one command family, every benchmark listed, each one's
measurement imported only when it runs (so `seqsearch --help` stays light)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

STUDIES = Path(__file__).parent.parent / "studies"


def _lazy(room: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(f"seqsearch.bench.{room}"), function)(args))

    return run


def _loop(sub: Any) -> None:
    p = sub.add_parser("loop", help="training-loop speed: fit (default policy) against a plain "
                       "fp32 PyTorch loop, alternately in one process")
    p.add_argument("--studies", default=f"{STUDIES}/resnet20-mnist5k.yaml,"
                                        f"{STUDIES}/vgg11-mnist5k.yaml")
    p.add_argument("--limit", type=int, default=None, help="images used (default: the study's)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--memory-format", default="auto",
                   choices=("auto", "channels_last", "contiguous"))
    p.set_defaults(func=_lazy("loop", "bench_loop"))


def _command(sub: Any) -> None:
    p = sub.add_parser("command", help="whole-command speed: seqsearch baseline against a "
                       "plain script, fresh processes")
    p.add_argument("study", nargs="?", help="study YAML (default: the ResNet-20 CPU study)",
                   default=f"{STUDIES}/resnet20-mnist5k.yaml")
    p.add_argument("--limit", type=int, default=2000, help="images (default 2000)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each process")
    p.set_defaults(func=_lazy("command", "bench_command"))


def _qat(sub: Any) -> None:
    p = sub.add_parser("qat", help="QAT step time over float step time")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--bits", default="4,8", help="weight,activation bits")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(func=_lazy("qat", "bench_qat"))


def _cache(sub: Any) -> None:
    p = sub.add_parser("cache", help="time a cached prefix saves")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(func=_lazy("cache", "bench_cache"))


def _tune(sub: Any) -> None:
    p = sub.add_parser("tune", help="tuning with and without the budget pruner")
    p.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    p.add_argument("--chain", default="DPQE")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--budget", type=float, default=1.0)
    p.set_defaults(func=_lazy("tune", "bench_tune"))


def add_parser(sub: Any) -> None:
    """Register `bench` and every benchmark under it on the CLI's subparsers."""
    from seqsearch.deploy.cli_command import add_parser as add_model
    from seqsearch.recovery.cli_command import add_parser as add_recovery

    p = sub.add_parser("bench", help="benchmarks: training speed (loop, command, qat, cache, "
                       "tune), recovery curves, the deployed model (model)",
                       description="Benchmarks print ratios measured side by side in one "
                       "run, alternately (the machine is noisy). See seqsearch/bench/__init__.py "
                       "for what each measures.")
    inner = p.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for room in (_loop, _command, _qat, _cache, _tune):
        room(inner)
    add_recovery(inner)
    add_model(inner, name="model")
