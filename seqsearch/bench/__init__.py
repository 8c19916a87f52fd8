"""Benchmarks: one command family, `seqsearch bench` (`seqsearch bench --help` lists them).

Each prints ratios measured side by side in one run (the machine is noisy), never a timed
assertion. What each measures, and the module it lives in:

- `loop` (loop.py): training-loop speed, `fit` against a plain PyTorch loop, in one process;
- `command` (command.py): the same over whole commands, `seqsearch baseline` against a plain
  script, each in a fresh process (imports and start-up count);
- `qat` (qat.py): a QAT training step against a float step;
- `cache` (cache.py): the time a cached prefix saves;
- `tune` (tune.py): tuning with and without the budget pruner;
- `recovery` (`seqsearch.recovery`): a convergence curve per stage, which sizes a study's
  stage budgets;
- `model` (`seqsearch.deploy`): the exported model.onnx against the fp32 baseline in the
  runtimes a user deploys to; the same command as `seqsearch bench-model`.

`python -m seqsearch.bench …` is the same as `seqsearch bench …`.
"""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    """Register `bench` and every benchmark under it on the CLI's subparsers."""
    from seqsearch.bench import cache, command, loop, qat, tune
    from seqsearch.deploy.cli_command import add_parser as add_model
    from seqsearch.recovery.cli_command import add_parser as add_recovery

    p = sub.add_parser("bench", help="benchmarks: training speed (loop, command, qat, cache, "
                       "tune), recovery curves, the deployed model (model)",
                       description="Benchmarks print ratios measured side by side in one "
                       "run, alternately (the machine is noisy). See seqsearch/bench/__init__.py "
                       "for what each measures.")
    inner = p.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for room in (loop, command, qat, cache, tune):
        room.add_parser(inner)
    add_recovery(inner)
    add_model(inner, name="model")
