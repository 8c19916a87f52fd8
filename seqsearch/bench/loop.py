"""Training-loop speed: seqsearch's `fit` against the plain loop (`seqsearch bench loop`).

Throughput of `fit` under the default precision/memory-format policy (or `--precision`,
`--memory-format`) over a plain fp32 PyTorch loop on the same model, data and optimizer (the
CPU studies' ResNet-20 and VGG-11 by default), measured alternately in one process; prints
each round, the median ratio and the validation accuracy after each, for parity.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import torch

from seqsearch.bench.plain import plain_loop
from seqsearch.data import DataBundle
from seqsearch.train import TrainSettings, fit


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
