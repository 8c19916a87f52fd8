"""QAT step cost (`seqsearch bench qat`): time of one training step with fake-quant layers over
one float step, same model and batch, alternately."""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from seqsearch.models import create_model


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
