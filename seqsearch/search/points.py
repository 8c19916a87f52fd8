"""Measured points of a runs table: one chain, sample params and operating point (order,
sample, τ) and its runs, one per seed. The one grouping the export's candidates, the report's
seed means, the noise report and the export rule's prior share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

NO_TAU = "none"  # a chain without E has no τ (NaN): one point, not left out of the groups


def tau_key(rows: pd.DataFrame) -> pd.Series:
    """τ as a group key: the value, or NO_TAU for a chain without E."""
    if "tau" not in rows:
        return pd.Series(NO_TAU, index=rows.index, name="tau", dtype=object)
    return rows["tau"].astype(object).where(rows["tau"].notna(), NO_TAU).rename("tau")


def tau_value(key: Any) -> float | None:
    return None if key == NO_TAU or key is None or pd.isna(key) else float(key)


def point_rows(rows: pd.DataFrame, keys: Sequence[str] = ("order", "sample")) -> pd.DataFrame:
    """`rows` with a `_point` column naming the point (the `keys` and τ) and one row per seed of
    each point (the first: a seed seen twice is one run listed twice, e.g. a pair that is a full
    order of a two-stage study, which the prefix cache ran once), seeds ascending."""
    if rows.empty:
        return rows.assign(_point=pd.Series(dtype=object))
    tau = tau_key(rows)
    point = pd.Series(list(zip(*(rows[k] for k in keys), tau, strict=True)), index=rows.index)
    out = rows.assign(_point=point).sort_values("seed", kind="stable")
    return out.drop_duplicates(["_point", "seed"])


def model_of(point: tuple[Any, ...]) -> tuple[Any, ...]:
    """The model a point was measured on: its key without τ (an E model's τ rows share it)."""
    return point[:-1]
