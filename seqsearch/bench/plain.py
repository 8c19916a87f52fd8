"""The reference a training-speed benchmark measures against: the loop a PyTorch user writes by
hand (fp32, contiguous, SGD with Nesterov momentum, the same learning-rate schedule as `fit`,
so accuracies are comparable)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seqsearch.data import DataBundle
from seqsearch.train import TrainSettings, lr_at


def plain_loop(model: torch.nn.Module, data: DataBundle, settings: TrainSettings) -> float:
    """The loop a PyTorch user writes by hand (fp32, contiguous, the same lr schedule as fit,
    so accuracies are comparable); returns seconds.

    The clock covers what `fit`'s covers: the optimizer's construction and the epochs. The
    first torch optimizer built in a process imports torch._dynamo (torch/_compile.py's
    `_disable_dynamo`): 0.9-1.5 s on a 2-core machine, once per process, for this loop as for
    `fit`. Timed outside here and inside `fit`, it made a fresh process's `fit` look 15-23 %
    slower than this loop where the two loops ran at the same speed (issue 30)."""
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay, nesterov=True)
    x_all, y_all = data.train.x, data.train.y
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


def plain_script(study_file: str) -> int:
    """The plain script `bench command`'s first arm runs in a fresh process (`python -m
    seqsearch.bench.plain STUDY`): what a PyTorch user writes by hand for the job `seqsearch
    baseline` does (load the data, build the model, train, evaluate, save the weights)."""
    from seqsearch.baseline import build_data, build_model
    from seqsearch.config import load_study

    study = load_study(study_file)
    data = build_data(study, torch.device("cpu"))
    torch.manual_seed(study.seed)
    model = build_model(study, data)
    seconds = plain_loop(model, data, study.train.settings(study.seed))
    model.eval()
    with torch.no_grad():
        for split in (data.val, data.test):
            correct = sum(int((model(split.x[i:i + 1024]).argmax(1)
                               == split.y[i:i + 1024]).sum())
                          for i in range(0, len(split), 1024))
            print(f"accuracy {correct / max(1, len(split)):.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), Path(tmp) / "model.pt")
    print(json.dumps({"loop_seconds": round(seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(plain_script(sys.argv[1]))
