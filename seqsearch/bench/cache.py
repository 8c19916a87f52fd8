"""What the prefix cache saves (`seqsearch bench cache`): wall time of a two-stage chain whose
first stage is in the prefix cache against the same chain from scratch."""

from __future__ import annotations

import argparse
import time

import torch

from seqsearch.data import load_data
from seqsearch.models import create_model
from seqsearch.train import TrainSettings, fit


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
