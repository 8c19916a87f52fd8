"""`--dry-run`'s wall-time estimate: one baseline batch and one batch of each stage's model,
timed on this machine, multiplied by the plan.

Measured, on stand-in images of the data's shape at the study's batch size and device: the
baseline's training step, each stage's set-up on the baseline (the stage applied with no
epochs: torch-pruning's surgery, a student, quantizer calibration, exit heads), the training
step of the model it returns, and a forward pass (evaluation). Two timed steps after a warm-up
give the spread. Then per step of the pipeline:

- baseline: epochs × batches per epoch × step, plus its evaluation;
- probe: every (sample, seed) trains each stage n times (once alone, once after each other
  stage: the prefix cache), from the first look (K samples, one seed with adaptive sampling)
  to the most the looks may reach (max_samples, every seed);
- tune: each trial trains the stages of its sub-chain the cache does not hold: on average half
  the order's stages for the sampler's trials, at most every stage for every trial and the
  warm start;
- export: the confirmed candidates re-run on a fresh seed, from none (probe points already
  measured on two seeds) to `tune.confirm` whole chains.

The central figure is the first look with half-length chains; the range runs from the
fastest timed step and the fewest trainings to the slowest and the most. Steps are timed with
this process's torch threads (`--threads` sets them: time with the threads the run will use;
on a shared or busy machine two threads can be many times slower than one). Not counted:
data loading, the report (seconds), probe workers sharing the cores.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import torch
from torch import nn

from seqsearch.config import StudyConfig
from seqsearch.data import DataBundle, DataShape, Split
from seqsearch.models import build_model
from seqsearch.stages import StageContext, behaviour, get_stage
from seqsearch.train import fit, predict, resolve_device, seed_everything

TIMED_STEPS = 2


def _bundle(shape: DataShape, n: int, device: torch.device) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, shape.channels, shape.side, shape.side, generator=gen)
    split = Split(x, torch.arange(n) % shape.classes)
    return DataBundle("stand-in", split, split, split, shape.classes).to(device)


def _step_seconds(model: nn.Module, data: DataBundle, study: StudyConfig) -> list[float]:
    """Seconds of one training step (forward, backward, optimiser), after a warm-up."""
    from seqsearch.stages.common import task_loss

    settings = study.train.settings(study.seed)
    one = type(settings)(**{**settings.__dict__, "epochs": 1})
    times = []
    for _ in range(TIMED_STEPS + 1):
        t0 = time.perf_counter()
        fit(model, data, one, loss_fn=task_loss, progress=False)
        times.append(time.perf_counter() - t0)
    return times[1:]


def _forward_seconds(model: nn.Module, data: DataBundle) -> float:
    predict(model, data.val, batch_size=len(data.val))  # warm-up
    t0 = time.perf_counter()
    predict(model, data.val, batch_size=len(data.val))
    return time.perf_counter() - t0


def measure(study: StudyConfig, shape: DataShape, params: dict[str, dict[str, Any]]
            ) -> dict[str, Any]:
    """Timed seconds on this machine: the baseline's step and forward pass, and each stage's
    set-up and step (lists of the timed repeats)."""
    device = resolve_device(study.device)
    data = _bundle(shape, study.train.batch_size, device)
    seed_everything(study.seed)
    base = build_model(study.model.name, input_shape=(shape.channels, shape.side, shape.side),
                       num_classes=shape.classes, kwargs=study.model.kwargs).to(device)
    out: dict[str, Any] = {"device": str(device), "batch": study.train.batch_size,
                           "baseline_step": _step_seconds(base, data, study),
                           "forward": _forward_seconds(base, data), "stages": {}}
    no_epochs = study.train.model_copy(update={"stage_epochs": 0, "student_epochs": 0})
    ctx = StageContext(data, no_epochs, study.seed, study.first_last_bits, progress=False)
    for name in study.stages:
        stage = get_stage(name)
        t0 = time.perf_counter()
        model = stage.apply(copy.deepcopy(base), ctx, params[stage.info.name])
        setup = time.perf_counter() - t0
        out["stages"][stage.info.letter] = {"setup": setup,
                                            "step": _step_seconds(model, data, study)}
    return out


def estimate(study: StudyConfig, shape: DataShape, train_images: int,
             params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds per step of the pipeline on this machine: `low`, `central`, `high`."""
    t = measure(study, shape, params)
    batch = study.train.batch_size
    steps = math.ceil(train_images / batch)
    # evaluation after each training: val and test, once more for a τ sweep
    n = len(study.stages)
    pool = train_images / max(1e-9, 1 - study.data.val_fraction)
    eval_images = pool * study.data.val_fraction + pool * study.data.test_fraction
    evaluate = 2 * eval_images / batch * t["forward"]

    def training(letter: str, pick: Any) -> float:
        s = t["stages"][letter]
        return (behaviour.epochs(letter, study.train) * steps * pick(s["step"]) + s["setup"]
                + evaluate)

    def per_stage(pick: Any) -> float:  # one training of each stage
        return sum(training(letter, pick) for letter in t["stages"])

    lo, mid, hi = min, statistics.median, max
    p, tu = study.probe, study.tune
    first_seeds = 1 if p.adaptive else len(p.seeds)
    base = {"low": study.train.epochs * steps * lo(t["baseline_step"]) + evaluate,
            "central": study.train.epochs * steps * mid(t["baseline_step"]) + evaluate,
            "high": study.train.epochs * steps * hi(t["baseline_step"]) + evaluate}
    probe = {"low": p.samples * first_seeds * n * per_stage(lo),
             "central": p.samples * first_seeds * n * per_stage(mid),
             "high": p.most_samples() * len(p.seeds) * n * per_stage(hi)}
    tune = {"low": tu.trials * per_stage(lo) / 2, "central": tu.trials * per_stage(mid) / 2,
            "high": (tu.trials + tu.warm_start) * per_stage(hi)}
    n = tu.confirm_count(len(p.seeds) >= 2)  # one probe seed measures no point twice
    export = {"low": 0.0, "central": n * per_stage(mid) / 2, "high": n * per_stage(hi)}
    steps_out = {"baseline": base, "probe": probe, "tune": tune, "export": export}
    total = {k: sum(s[k] for s in steps_out.values()) for k in ("low", "central", "high")}
    return {"device": t["device"], "threads": torch.get_num_threads(), "batch": batch,
            "batches_per_epoch": steps,
            "measured": {"baseline_step_s": t["baseline_step"], "forward_s": t["forward"],
                         "stages": t["stages"]},
            "steps": steps_out, "total": total}


def human(seconds: float) -> str:
    """Seconds as the unit a reader wants: s, min, h or days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
