"""Seeded quasi-random parameter samples over a stage's search space (scrambled Sobol).

The probe's paired design draws K samples per stage once; every pair that contains the stage
uses the same K samples, so AB and BA differ only in order.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from scipy.stats import qmc

from seqsearch.stages import StageInfo


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """Map u in [0, 1) to a value of the distribution."""
    u = min(max(u, 0.0), 1.0 - 1e-12)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(u * len(dist.choices))]
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        value = dist.low + u * (dist.high - dist.low)
        if dist.step:
            value = dist.low + round((value - dist.low) / dist.step) * dist.step
        return round(value, 6)
    if isinstance(dist, IntDistribution):
        return int(dist.low + int(u * (dist.high - dist.low + 1)) // dist.step * dist.step)
    raise TypeError(f"unsupported distribution {type(dist).__name__}")


def stage_samples(
    info: StageInfo, k: int, seed: int, *, fixed: Mapping[str, Any] | None = None,
    skip: tuple[str, ...] = (), space: Mapping[str, BaseDistribution] | None = None,
) -> list[dict[str, Any]]:
    """K param dicts (short names) for a stage; `fixed` (short names) are held constant and
    `skip` params are left to the stage's defaults (E's τ, swept after training instead).
    `space`: the stage's space as the study narrowed it (search.space; default its own)."""
    fixed = dict(fixed or {})
    dists = dict(info.space if space is None else space)
    free = [key for key in dists if info.short(key) not in fixed and
            info.short(key) not in skip]
    rows: list[dict[str, Any]] = [dict(fixed) for _ in range(k)]
    if free:
        stage_seed = zlib.crc32(f"{info.name}:{seed}".encode())
        sobol = qmc.Sobol(d=len(free), scramble=True, seed=stage_seed)
        with warnings.catch_warnings():  # K need not be a power of two for our use
            warnings.simplefilter("ignore", UserWarning)
            units = sobol.random(k)
        for row, u in zip(rows, units, strict=True):
            for key, value in zip(free, u, strict=True):
                row[info.short(key)] = from_unit(dists[key], float(value))
    return rows
