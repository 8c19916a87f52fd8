"""Benchmarks that print ratios measured side by side in one run (the machine is noisy).

    python -m seqsearch.bench loop [--model resnet8] [--data mnist5k] [--limit 2000] [--rounds 5]

`loop`: throughput of seqsearch's `fit` over a plain PyTorch loop on the same model, data and
optimizer, measured alternately; prints each round and the median ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from seqsearch.data import DataBundle, load_data
from seqsearch.models import create_model
from seqsearch.train import TrainSettings, fit


def plain_loop(model: torch.nn.Module, data: DataBundle, settings: TrainSettings) -> float:
    """The loop a PyTorch user writes by hand; returns seconds."""
    torch.manual_seed(settings.seed)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay, nesterov=True)
    x_all, y_all = data.train.x, data.train.y
    start = time.perf_counter()
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(y_all))
        for i in range(0, len(y_all), settings.batch_size):
            idx = order[i:i + settings.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def bench_loop(args: argparse.Namespace) -> int:
    data = load_data(args.data, limit=args.limit, seed=0)
    settings = TrainSettings(epochs=args.epochs, lr=0.05, batch_size=args.batch_size)
    torch.manual_seed(0)
    initial = create_model(args.model, in_channels=data.in_channels,
                           num_classes=data.num_classes)
    n = len(data.train) * settings.epochs
    ratios = []
    print(f"loop benchmark: {args.model} on {args.data} ({len(data.train)} train samples), "
          f"{settings.epochs} epoch(s), batch {settings.batch_size}, "
          f"{torch.get_num_threads()} threads")
    # one warm-up of each, not counted
    plain_loop(copy.deepcopy(initial), data, settings)
    fit(copy.deepcopy(initial), data, settings, progress=False)
    for r in range(1, args.rounds + 1):
        t_plain = plain_loop(copy.deepcopy(initial), data, settings)
        t_fit = fit(copy.deepcopy(initial), data, settings, label="bench").seconds
        ratio = t_plain / t_fit  # = throughput(fit) / throughput(plain)
        ratios.append(ratio)
        print(f"round {r}/{args.rounds}: plain {n / t_plain:8.1f} samples/s   "
              f"fit {n / t_fit:8.1f} samples/s   ratio {ratio:.3f}")
    print(f"median throughput ratio fit/plain: {statistics.median(ratios):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqsearch.bench")
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("loop", help="fit vs a plain PyTorch loop")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(func=bench_loop)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
