"""Does BitOps predict speed? Per study: BitOpsCR against the measured batch-1 speed-up of
every tuning trial that was timed (`tune.objective: latency | both`), and their Spearman rank
correlation. Data here, the figure in figures.py."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

COLUMNS = ["number", "chain", "val_bitops_cr", "speedup", "latency_runtime", "feasible"]


def speed_table(tuning: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct timed network (the latency cache key) among completed trials: its
    validation BitOpsCR and measured speed-up; empty when no trial was timed."""
    if tuning.empty or "speedup" not in tuning or "val_bitops_cr" not in tuning:
        return pd.DataFrame(columns=COLUMNS)
    done = tuning[(tuning["state"] == "COMPLETE") & tuning["speedup"].notna()].copy()
    if "latency_key" in done:  # a network timed once counts once
        done = done.drop_duplicates("latency_key")
    if "feasible" not in done:
        done["feasible"] = done.get("constraint", pd.Series(0.0, index=done.index)) <= 0
    for col in COLUMNS:
        if col not in done:
            done[col] = None
    return done[COLUMNS].sort_values("val_bitops_cr").reset_index(drop=True)


def rank_correlation(table: pd.DataFrame) -> dict[str, Any]:
    """Spearman's rho of BitOpsCR and speed-up over the table's rows (and how many)."""
    n = len(table)
    if n < 3:
        return {"n": n, "spearman": None}
    rho = table["val_bitops_cr"].rank().corr(table["speedup"].rank())
    return {"n": n, "spearman": None if rho is None or math.isnan(rho) else float(rho)}
