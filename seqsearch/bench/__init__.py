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

from seqsearch.bench.cli_command import add_parser

__all__ = ["add_parser"]
