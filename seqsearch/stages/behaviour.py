"""What the search asks of a stage beyond `apply`, each with a default that does nothing.

A stage may define any of these attributes; the search, the chain runner and the report reach
them only through the functions here, so none of them names a stage:

- `policy_params: tuple[str, ...]`: params that cost no training (left out of the prefix-cache
  key and of the sampled space; set on a trained model). Default: none.
- `set_policy(model, params)`: put those params on a trained model. Default: nothing.
- `sweep_param: str` and `sweep(model, split, input_shape, values)`: how a model the stage
  produced is evaluated over values of one policy param from one forward pass, as
  `[(value, accuracy, bitops)]` (E: the τ sweep). Default: no sweep, one point per model.
- `epochs(train)`: the epochs its training takes (D: the student's). Default: stage_epochs.
- `stronger(params)`: one application as strong as two (paper §6). Default: the same params.
- `repeat_first(params)`: the first application's params when the stage is repeated in the
  §6 check (Q goes through 8/8 first). Default: the same params.
- `check_model(model, ctx, params)`: raise a `SeqsearchError` before anything trains when the
  stage cannot work on this model (P: torch-pruning cannot build its groups); `ctx` holds
  stand-in data of the real shape, no training happens. Default: nothing to check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from seqsearch.config import TrainSection
from seqsearch.data import Split
from seqsearch.stages.base import Stage, StageContext, get_stage


def _stage(stage: Stage | str) -> Stage:
    return get_stage(stage) if isinstance(stage, str) else stage


def policy_params(stage: Stage | str) -> tuple[str, ...]:
    return tuple(getattr(_stage(stage), "policy_params", ()))


def set_policy(stage: Stage | str, model: nn.Module, params: Mapping[str, Any]) -> None:
    fn = getattr(_stage(stage), "set_policy", None)
    if fn is not None:
        fn(model, params)


def sweep_param(stage: Stage | str) -> str | None:
    s = _stage(stage)
    name = getattr(s, "sweep_param", None)
    return name if name is not None and callable(getattr(s, "sweep", None)) else None


def sweep(stage: Stage | str, model: nn.Module, split: Split, input_shape: tuple[int, ...],
          values: Sequence[float]) -> list[tuple[float, float, float]]:
    s: Any = _stage(stage)
    return list(s.sweep(model, split, input_shape, values))


def epochs(stage: Stage | str, train: TrainSection) -> int:
    fn = getattr(_stage(stage), "epochs", None)
    return int(fn(train)) if fn is not None else train.stage_epochs


def stronger(stage: Stage | str, params: Mapping[str, Any]) -> dict[str, Any]:
    fn = getattr(_stage(stage), "stronger", None)
    return dict(fn(dict(params))) if fn is not None else dict(params)


def repeat_first(stage: Stage | str, params: Mapping[str, Any]) -> dict[str, Any]:
    fn = getattr(_stage(stage), "repeat_first", None)
    return dict(fn(dict(params))) if fn is not None else dict(params)


def sweeping_step(names: Sequence[str]) -> int | None:
    """Index of the last step whose stage sweeps a policy param (its model is evaluated by
    that sweep), or None."""
    for i in range(len(names) - 1, -1, -1):
        if sweep_param(names[i]) is not None:
            return i
    return None


def check_model(stage: Stage | str, model: nn.Module, ctx: StageContext,
                params: Mapping[str, Any]) -> None:
    fn = getattr(_stage(stage), "check_model", None)
    if fn is not None:
        fn(model, ctx, params)
