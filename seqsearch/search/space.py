"""The study's `space:` key: a stage's search space narrowed for this study.

A stage's space is what its method can take in general (Q's weight bits 1, 2, 4, 8, 32); an
architecture may not take all of it (MobileNetV2's depthwise layers sit at chance at 2 bits,
so every 1- and 2-bit sample would train for nothing). `space` narrows a param, and the probe's
samples, tuning's suggestions and its warm start all draw from the narrowed space:

    space:
      quantize.weight_bits: [4, 8, 32]     # a categorical param: a subset of its choices
      prune.ratio: {low: 0.2, high: 0.6}   # a numeric one: a sub-range of its range

A key that is not a searched param of an enabled stage, or a value outside the stage's own
space, is one line naming the key and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from seqsearch.errors import SeqsearchError
from seqsearch.stages import StageInfo, get_stage


def _narrow(key: str, dist: BaseDistribution, value: Any) -> BaseDistribution:
    if isinstance(dist, CategoricalDistribution):
        allowed = ", ".join(repr(c) for c in dist.choices)
        if not isinstance(value, list) or not value:
            raise SeqsearchError(f"space: {key}: give a non-empty list of its choices "
                                 f"({allowed}), not {value!r}")
        bad = [v for v in value if v not in dist.choices]
        if bad:
            raise SeqsearchError(f"space: {key}: {bad[0]!r} is not one of its choices "
                                 f"({allowed})")
        return CategoricalDistribution(list(dict.fromkeys(value)))
    if isinstance(dist, FloatDistribution | IntDistribution):
        span = f"[{dist.low:g}, {dist.high:g}]"
        if not isinstance(value, Mapping) or set(value) != {"low", "high"}:
            raise SeqsearchError(f"space: {key}: give {{low: …, high: …}} within {span}, "
                                 f"not {value!r}")
        low, high = value["low"], value["high"]
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise SeqsearchError(f"space: {key}: {bound!r} is not a number")
        if not dist.low <= low < high <= dist.high:
            raise SeqsearchError(f"space: {key}: low {low:g} and high {high:g} must satisfy "
                                 f"{dist.low:g} <= low < high <= {dist.high:g}")
        if isinstance(dist, IntDistribution):
            if int(low) != low or int(high) != high:
                raise SeqsearchError(f"space: {key}: low and high must be integers")
            return IntDistribution(int(low), int(high), step=dist.step, log=dist.log)
        return FloatDistribution(float(low), float(high), step=dist.step, log=dist.log)
    raise SeqsearchError(f"space: {key}: its {type(dist).__name__} cannot be narrowed")


def stage_space(info: StageInfo, overrides: Mapping[str, Any] | None = None
                ) -> dict[str, BaseDistribution]:
    """The stage's search space (prefixed names) with the study's `space` entries applied."""
    out = dict(info.space)
    for key, value in (overrides or {}).items():
        if key in out:
            out[key] = _narrow(key, out[key], value)
    return out


def check_space(overrides: Mapping[str, Any], stages: Iterable[str]) -> None:
    """Every `space` key a searched param of one of `stages`, every value within its space."""
    infos = {get_stage(n).info.name: get_stage(n).info for n in stages}
    for key, value in overrides.items():
        info = infos.get(str(key).split(".", 1)[0])
        if info is None or key not in info.space:
            searched = sorted(k for i in infos.values() for k in i.space)
            raise SeqsearchError(f"space: {key!r} is not a searched param of an enabled stage; "
                                 f"use one of {', '.join(searched)}")
        _narrow(key, info.space[key], value)


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether a (narrowed) distribution can give `value`."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, FloatDistribution | IntDistribution):
        return isinstance(value, int | float) and dist.low <= value <= dist.high
    return True
