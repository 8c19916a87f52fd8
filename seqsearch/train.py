"""The one training loop: `fit` and `evaluate`, shared by the baseline and every stage.

A stage changes what is trained through two hooks only: `loss_fn` (how outputs become a loss,
e.g. a distillation loss) and `params` (the trainable set, e.g. exit heads alone). Parameters
outside the trainable set are frozen for the fit, and modules whose parameters are all frozen
run in eval mode, so their BatchNorm statistics do not drift either.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqsearch.data import DataBundle, Split, augment_batch, batches
from seqsearch.precision import CONTIGUOUS, policy_settings, resolve_policy
from seqsearch.progress import Progress

LossFn = Callable[[object, torch.Tensor, torch.Tensor], torch.Tensor]
"""(model outputs, targets, inputs) -> scalar loss."""



class DivergedError(RuntimeError):
    """The loss became NaN or infinite, or the fit collapsed (see `collapsed`): the fit (and the
    trial running it) fails, nothing else."""


COLLAPSE_CHANCE_FACTOR = 1.5
"""A fit has collapsed when its last epoch's training accuracy is at most this many times chance."""


def collapsed(losses: Sequence[float], train_accuracy: float, classes: int) -> bool:
    """True for a fit that ended worse than it started and predicts at chance: the last epoch's
    mean loss above the first's and its training accuracy at most `COLLAPSE_CHANCE_FACTOR` /
    `classes`. A finite loss hides such a run from the NaN guard (a Fashion-MNIST student
    after LSQ went from loss 6.60 to 8.06 and 10 % on 10 classes in every later epoch); a fit
    that learns slowly lowers its loss, and one of a single epoch is never judged."""
    if len(losses) < 2 or classes < 2 or not math.isfinite(train_accuracy):
        return False
    return losses[-1] > losses[0] and train_accuracy <= COLLAPSE_CHANCE_FACTOR / classes


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"
    seed: int = 0
    precision: str = "fp32"  # auto | fp32 | bf16 | fp16 (see seqsearch.precision)
    memory_format: str = "contiguous"  # auto | channels_last | contiguous


@dataclass
class FitResult:
    epochs: int
    steps: int
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)
    # the last epoch's training accuracy (augmented batches, the final output of a multi-exit
    # model), nan where the outputs are no class scores
    train_accuracy: float = float("nan")


DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` takes CUDA when present, then Apple MPS, else the CPU. A name that is no device
    (`gpu`) or a device this machine lacks (`cuda` without a GPU) is a `SeqsearchError`."""
    if name != "auto":
        from seqsearch.errors import SeqsearchError

        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError):
            raise SeqsearchError(f"device {name!r}: not a device; use {DEVICE_NAMES}") from None
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise SeqsearchError(f"device {name!r}: this machine has no CUDA GPU (or torch "
                                     "was built without CUDA); use device: auto or cpu")
            if dev.index is not None and dev.index >= count:
                raise SeqsearchError(f"device {name!r}: this machine has {count} CUDA GPU(s), "
                                     f"cuda:0 to cuda:{count - 1}")
        elif dev.type == "mps":
            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                raise SeqsearchError(f"device {name!r}: Apple MPS is not available here; use "
                                     "device: auto or cpu")
        elif dev.type != "cpu":
            raise SeqsearchError(f"device {name!r}: not supported; use {DEVICE_NAMES}")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Inside: torch computes on `n` threads (None: as it is). A float sum split over more
    threads rounds differently, so a fit is reproducible bit for bit at a fixed count only."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, base: float, schedule: str) -> float:
    """Learning rate for a step: cosine to zero, x0.1 at 50% and 75%, or constant."""
    if schedule == "constant" or total <= 0:
        return base
    frac = step / total
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "step":
        return base * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    raise ValueError(f"unknown schedule {schedule!r}")


def cross_entropy(outputs: object, targets: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
    assert isinstance(outputs, torch.Tensor)
    return F.cross_entropy(outputs.float(), targets)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with no gradients: a teacher."""
    import copy

    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def kd_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: KL(softmax(t/T) || softmax(s/T)) * T^2, batch mean.

    In fp32 whatever the autocast: bf16 logits keep 8 bits of mantissa, and the softmaxes of
    two near-equal distributions would differ by their rounding alone."""
    t = temperature
    student, teacher = student.float(), teacher.float()
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1),
                    reduction="batchmean") * t * t


def kd_recovery(task: LossFn, teacher: nn.Module, temperature: float, weight: float) -> LossFn:
    """`task` plus weight·T²·KL to `teacher`'s outputs on the same (augmented) inputs. Outputs
    that are lists (exits) are matched one to one when the teacher has as many, else each is
    matched to the teacher's final output."""

    def loss(outputs: object, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = teacher(inputs)
        outs: list[torch.Tensor] = list(outputs) if isinstance(outputs, list | tuple) \
            else [outputs]  # type: ignore[list-item]
        refs: list[torch.Tensor] = list(ref) if isinstance(ref, list | tuple) else [ref]
        if len(refs) != len(outs):
            refs = [refs[-1]] * len(outs)
        kl = torch.stack([kd_term(o, r, temperature) for o, r in zip(outs, refs, strict=True)])
        return task(outputs, targets, inputs) + weight * kl.mean()

    return loss


def _make_optimizer(
    params: list[nn.Parameter], settings: TrainSettings, no_decay: set[int] | None = None
) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; parameters in `no_decay` (quantizer steps) get no weight decay."""
    skip = no_decay or set()
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if id(p) not in skip]},
        {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay, nesterov=settings.momentum > 0)
    if settings.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def _freeze_outside(model: nn.Module, trainable: set[int]) -> dict[nn.Parameter, bool]:
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(id(p) in trainable for p in own):
            module.eval()
    return saved


def fit(
    model: nn.Module,
    data: DataBundle,
    settings: TrainSettings,
    *,
    loss_fn: LossFn | None = None,
    params: Iterable[nn.Parameter] | None = None,
    no_decay: Iterable[nn.Parameter] = (),
    label: str = "train",
    progress: bool = True,
) -> FitResult:
    """Train `model` in place on `data.train` and return what happened.

    `no_decay` is the caller's parameter group that trains without weight decay (a stage's
    learned quantizer steps): the loop knows no stage. Deterministic on the CPU for a fixed
    `settings.seed` and thread count. Raises DivergedError on a NaN/inf loss.
    """
    loss_fn = loss_fn or cross_entropy
    seed_everything(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    trainable = list(params) if params is not None else list(model.parameters())
    model.train()
    saved = _freeze_outside(model, {id(p) for p in trainable})
    trainable = [p for p in trainable if p.requires_grad]
    policy = resolve_policy(settings.precision, settings.memory_format, data.train.x.device)
    policy.model(model)
    scaler = torch.amp.GradScaler(policy.device_type) if policy.scaled else None
    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    bar = Progress(label, settings.epochs, steps_per_epoch, enabled=progress)
    result = FitResult(epochs=settings.epochs, steps=0, seconds=0.0)
    start = time.perf_counter()
    guard = contextlib.ExitStack()
    try:
        if not trainable or total == 0:
            return result
        guard.enter_context(policy.guarded(model))
        opt = _make_optimizer(trainable, settings, {id(p) for p in no_decay})
        step = 0
        for epoch in range(1, settings.epochs + 1):
            running = torch.zeros((), device=data.train.x.device)
            right = torch.zeros((), device=data.train.x.device)
            classes = 0
            for k, (x, y) in enumerate(
                batches(data.train, settings.batch_size, shuffle=True, gen=gen), start=1
            ):
                lr = lr_at(step, total, settings.lr, settings.schedule)
                for group in opt.param_groups:
                    group["lr"] = lr
                x = policy.batch(augment_batch(x, data.augment, gen))
                with policy.autocast():
                    out = model(x)
                    loss = loss_fn(out, y, x)
                scores = out[-1] if isinstance(out, list | tuple) else out
                if isinstance(scores, torch.Tensor) and scores.dim() == 2 and y.dim() == 1:
                    classes = scores.shape[1]
                    right += (scores.detach().argmax(1) == y).sum()
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                running += loss.detach().float()
                step += 1
                if bar.tty and bar.enabled:
                    bar.step(epoch, k, float(running) / k)
            mean_loss = float(running) / steps_per_epoch
            if not math.isfinite(mean_loss):
                raise DivergedError(f"{label}: loss is {mean_loss} in epoch {epoch} (lr "
                                    f"{settings.lr:g}, {policy_settings(policy)['precision']})")
            result.epoch_losses.append(mean_loss)
            bar.epoch_end(epoch, mean_loss)
            if epoch == settings.epochs and classes:
                result.train_accuracy = float(right) / len(data.train)
                if collapsed(result.epoch_losses, result.train_accuracy, classes):
                    raise DivergedError(
                        f"{label}: collapsed: loss rose from {result.epoch_losses[0]:.3g} in "
                        f"epoch 1 to {mean_loss:.3g} in epoch {epoch} and the last epoch's "
                        f"training accuracy is {result.train_accuracy:.1%} (chance "
                        f"{1 / classes:.1%}; lr {settings.lr:g}, "
                        f"{policy_settings(policy)['precision']})")
        result.steps = step
        return result
    finally:
        guard.close()
        for p, flag in saved.items():
            p.requires_grad_(flag)
        # Back to contiguous weights: a model's numerics then never depend on its history
        # (trained here, loaded from the cache, or a stage's new layers).
        CONTIGUOUS.model(model)
        model.eval()
        result.seconds = time.perf_counter() - start


@torch.no_grad()
def predict(model: nn.Module, split: Split, *, batch_size: int = 1024) -> object:
    """Model outputs over a split in eval mode; a list output (exits) is concatenated per entry.

    Always fp32 and contiguous, so measured accuracies (and the exits samples take) do not
    depend on the hardware's bf16 or on the policy a model was trained under."""
    was_training = model.training
    model.eval()
    outs: list[object] = []
    try:
        for x, _ in batches(split, batch_size, shuffle=False):
            outs.append(model(x))
    finally:
        model.train(was_training)
    if outs and isinstance(outs[0], list | tuple):
        return [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]  # type: ignore[index]
    return torch.cat(outs)  # type: ignore[arg-type]


def evaluate(model: nn.Module, split: Split, *, batch_size: int = 1024) -> float:
    """Top-1 accuracy (fraction) of a single-output model on a split."""
    if len(split) == 0:
        return math.nan
    logits = predict(model, split, batch_size=batch_size)
    assert isinstance(logits, torch.Tensor)
    return float((logits.argmax(1) == split.y).float().mean().item())
