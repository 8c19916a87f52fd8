"""The stage protocol: metadata as a frozen dataclass, one `apply`, one explicit registry.

A stage maps the current model to a new model and keeps every compression already applied to
its input (the composability rule: every order runs). A user stage registers in one line:

    register_stage(MyStage())

where `MyStage` has an `info: StageInfo` and `apply(model, ctx, params) -> nn.Module`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from torch import nn

from seqsearch.config import TrainSection
from seqsearch.data import DataBundle
from seqsearch.errors import SeqsearchError
from seqsearch.train import LossFn, TrainSettings, frozen_copy, kd_recovery


@dataclass(frozen=True)
class Range:
    """Hard limits on a numeric param (what `apply` accepts; the search space may be narrower)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def contains(self, v: float) -> bool:
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def describe(self) -> str:
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"


@dataclass(frozen=True)
class StageInfo:
    """What a stage is, as data. Search-space names are prefixed by the stage name."""

    name: str
    letter: str
    kind: Literal["static", "dynamic"]
    granularity: Literal["architecture", "neuron", "sub-neuron"]
    repeatable: bool
    space: Mapping[str, BaseDistribution]
    defaults: Mapping[str, Any]
    limits: Mapping[str, Range] = field(default_factory=dict)
    description: str = ""
    # allowed values of params outside the sampled space (recipes such as quantize.method)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    # it trains a new network (a student) whose own initialisation adds seed noise: the noise
    # report splits seed gaps by chains with and without such a stage
    student: bool = False

    def short(self, key: str) -> str:
        prefix = f"{self.name}."
        return key[len(prefix):] if key.startswith(prefix) else key

    def prefixed(self, key: str) -> str:
        return f"{self.name}.{self.short(key)}"


@runtime_checkable
class Stage(Protocol):
    info: StageInfo

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        """Return the compressed model (may modify and return `model` itself)."""
        ...


@dataclass
class StageContext:
    """What a stage may use: data, training settings, seeds, and bits policy."""

    data: DataBundle
    train: TrainSection
    seed: int
    first_last_bits: tuple[int, int] = (8, 8)
    progress: bool = True
    label: str = ""

    @property
    def device(self) -> torch.device:
        return self.data.train.x.device

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.data.input_shape

    def settings(self, *, finetune: bool) -> TrainSettings:
        """Fine-tune settings (1/10 lr, paper §3.1) or from-scratch settings, stage epochs both."""
        base = self.train.settings(self.seed, finetune=True)
        if finetune:
            return base
        return TrainSettings(**{**base.__dict__, "lr": self.train.lr})

    def student_settings(self) -> TrainSettings:
        """A distilled student trains from scratch: full lr, `student_epochs` (default: the
        baseline's epochs, as in the paper)."""
        epochs = self.train.student_epochs
        base = self.train.settings(self.seed)
        return TrainSettings(**{**base.__dict__,
                                "epochs": base.epochs if epochs is None else epochs})

    def example_batch(self, n: int = 64) -> torch.Tensor:
        return self.data.train.x[:n]

    def teacher(self, model: nn.Module) -> nn.Module | None:
        """The model as it is before the stage, frozen, when fine-tunes recover with KD."""
        if self.train.recovery != "kd":
            return None
        return frozen_copy(model)

    def recovery_loss(self, teacher: nn.Module | None,
                      task: LossFn | None = None) -> LossFn:
        """The fine-tune's loss: `task` (default: cross-entropy over every output), plus
        weight·T²·KL(teacher ‖ model) at temperature T when `teacher` is given."""
        from seqsearch.stages.common import task_loss

        base = task or task_loss
        if teacher is None:
            return base
        return kd_recovery(base, teacher, self.train.recovery_temperature,
                           self.train.recovery_weight)

    def recalibrate_norms(self, model: nn.Module, part: nn.Module | None = None) -> None:
        """Re-estimate the BatchNorm statistics in `part` (default: all of `model`) on
        `train.bn_recalibration` training batches, quantizers on, no gradient (0: nothing)."""
        from seqsearch.stages.common import recalibrate_norms

        n = self.train.bn_recalibration
        if n > 0:
            recalibrate_norms(model, self.data.train, n, self.train.batch_size, self.seed,
                              part=part)


_STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add a stage to the registry; a name or letter can be registered once only."""
    info = stage.info
    for other in _STAGES.values():
        if other.info.name == info.name or other.info.letter == info.letter:
            raise ValueError(f"a stage named {info.name!r} or lettered {info.letter!r} exists")
    for key in info.space:
        if not key.startswith(f"{info.name}."):
            raise ValueError(f"search-space name {key!r} must start with {info.name!r}.")
    _STAGES[info.name] = stage
    return stage


def unregister_stage(name: str) -> None:
    _STAGES.pop(name, None)


def list_stages() -> list[str]:
    return list(_STAGES)


def get_stage(name: str) -> Stage:
    """A stage by name (`prune`) or letter (`P`)."""
    if name in _STAGES:
        return _STAGES[name]
    for stage in _STAGES.values():
        if stage.info.letter == name:
            return stage
    raise SeqsearchError(
        f"unknown stage {name!r}: use one of "
        + ", ".join(f"{s.info.name} ({s.info.letter})" for s in _STAGES.values())
    )


def _check_value(info: StageInfo, key: str, value: Any) -> Any:
    full = info.prefixed(key)
    dist = info.space.get(full)
    limit = info.limits.get(full)
    if dist is None and full in info.choices:
        dist = CategoricalDistribution(info.choices[full])
    if isinstance(dist, CategoricalDistribution):
        if value not in dist.choices:
            raise SeqsearchError(
                f"stage {info.name!r}: param {key} = {value!r} is not allowed; use one of "
                + ", ".join(repr(c) for c in dist.choices)
            )
        return value
    if isinstance(dist, FloatDistribution | IntDistribution):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SeqsearchError(f"stage {info.name!r}: param {key} = {value!r} is not a number")
        if isinstance(dist, IntDistribution):
            if float(value) != int(value):
                raise SeqsearchError(
                    f"stage {info.name!r}: param {key} = {value!r} must be an integer"
                )
            value = int(value)
        rng = limit or Range(dist.low, dist.high)
        if not rng.contains(float(value)):
            raise SeqsearchError(
                f"stage {info.name!r}: param {key} = {value!r} is out of range; "
                f"allowed {rng.describe()}"
            )
        return float(value) if isinstance(dist, FloatDistribution) else value
    return value


def resolve_params(info: StageInfo, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and every value checked; keys come back short (`ratio`).

    Keys may be given short or prefixed (`ratio` or `prune.ratio`); a key outside the stage's
    space is an error naming it and the allowed ones.
    """
    known = {info.short(k) for k in info.space} | {info.short(k) for k in info.defaults}
    # list defaults are copied, so no chain's params share one list object
    out = {info.short(k): list(v) if isinstance(v, list) else v
           for k, v in info.defaults.items()}
    for key, value in (params or {}).items():
        short = info.short(str(key))
        if short not in known:
            raise SeqsearchError(
                f"stage {info.name!r}: unknown param {key!r}; its params are "
                + ", ".join(sorted(known))
            )
        out[short] = _check_value(info, short, value)
    return out
