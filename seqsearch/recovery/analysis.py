"""Recovery curves as data: per stage and budget the seed mean and spread of the curve's drop,
the knee, and what the paper's rule (every stage trains as long as the baseline) would cost
against it. Pure functions over the points' rows; no training, no figures.

A point's `curve_drop` (points below the baseline's validation accuracy) is what its stage's
training improves: the model's validation accuracy, or, for a model with exits, its exit
heads' mean own accuracy (its accuracy at a fixed τ moves with how many samples leave early,
not only with how well the heads learned: heads that never get confident lose nothing)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

KNEE_RULE = ("the smallest budget whose seed-mean drop is within the tolerance of the best "
             "(lowest) seed-mean drop of any budget measured")


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def curve_rows(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage and budget: seeds measured, the curve's drop (`drop`: mean; `drop_min`
    and `drop_max`: the seeds' range), the mean validation and test drop of the model as the
    probe measures it, mean validation BitOpsCR and mean train seconds. Failed points (a
    diverged training) are left out and counted."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for p in points:
        groups.setdefault((str(p["stage"]), int(p["epochs"])), []).append(p)
    rows = []
    for (stage, epochs), group in groups.items():
        ok = [p for p in group if not p.get("error")]
        first = group[0]
        row: dict[str, Any] = {
            "stage": stage, "letter": first["letter"], "setting": first["setting"],
            "epochs": epochs, "steps": int(first["steps"]), "seeds": len(ok),
            "failed": len(group) - len(ok)}
        if ok:
            drops = [float(p["curve_drop"]) for p in ok]
            row.update(drop=_mean(drops), drop_min=min(drops), drop_max=max(drops),
                       val_drop=_mean([float(p["val_drop"]) for p in ok]),
                       test_drop=_mean([float(p["test_drop"]) for p in ok]),
                       val_bitops_cr=_mean([float(p["val_bitops_cr"]) for p in ok]),
                       train_seconds=_mean([float(p["train_seconds"]) for p in ok]))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["stage"], r["epochs"]))


def knee(curve: Sequence[Mapping[str, Any]], tolerance: float) -> dict[str, Any] | None:
    """The knee of one stage's curve: the smallest budget whose seed-mean drop is within
    `tolerance` points of the best budget's; with the best budget, and whether the knee is the
    largest budget measured (then the curve may still be falling: measure further)."""
    measured = sorted((r for r in curve if "drop" in r), key=lambda r: r["epochs"])
    if not measured:
        return None
    best = min(measured, key=lambda r: (r["drop"], r["epochs"]))
    at = next(r for r in measured if r["drop"] <= best["drop"] + tolerance)
    return {"epochs": at["epochs"], "steps": at["steps"], "drop": at["drop"],
            "train_seconds": at["train_seconds"], "best_epochs": best["epochs"],
            "best_drop": best["drop"],
            "at_largest_budget": at["epochs"] == measured[-1]["epochs"]}


def seconds_model(points: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """(fixed seconds, seconds per epoch) of a stage's training: a least-squares line over its
    points (the fixed part: surgery, calibration, a student's set-up), or through the origin
    where that line would start below zero or the budgets do not vary. None without a trained
    epoch."""
    pts = [(float(p["epochs"]), float(p["train_seconds"])) for p in points
           if not p.get("error")]
    if not any(e > 0 for e, _ in pts):
        return None
    es = [e for e, _ in pts]
    if len(set(es)) > 1:
        me, ms = _mean(es), _mean([s for _, s in pts])
        var = sum((e - me) ** 2 for e in es)
        slope = sum((e - me) * (s - ms) for e, s in pts) / var
        fixed = ms - slope * me
        if fixed >= 0 and slope > 0:
            return fixed, slope
    return 0.0, sum(e * s for e, s in pts) / sum(e * e for e in es)


def paper_rule(curve: Sequence[Mapping[str, Any]], points: Sequence[Mapping[str, Any]],
               at_knee: Mapping[str, Any] | None, paper_epochs: int) -> dict[str, Any]:
    """What the paper's rule (the stage trains as many epochs as the baseline) costs: its
    seconds (measured where that budget is on the curve, else extrapolated from the stage's
    seconds-per-epoch line) and their ratio to the knee's; its drop where measured."""
    same = next((r for r in curve if r["epochs"] == paper_epochs and "drop" in r), None)
    model = seconds_model(points)
    out: dict[str, Any] = {"epochs": paper_epochs, "measured": same is not None,
                           "drop": None if same is None else same["drop"],
                           "seconds": None, "times_knee": None}
    if same is not None:
        out["seconds"] = same["train_seconds"]
    elif model is not None:
        out["seconds"] = model[0] + model[1] * paper_epochs
    if out["seconds"] is not None and at_knee and at_knee["train_seconds"] > 0:
        out["times_knee"] = out["seconds"] / at_knee["train_seconds"]
    return out


def analyse(points: Sequence[Mapping[str, Any]], *, tolerance: float, paper_epochs: int,
            study_epochs: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per stage (in the points' order): its curve rows, knee, seconds line, the paper's rule,
    and the budget the study sets now (`study_epochs`) with its drop where measured."""
    rows = curve_rows(points)
    out: dict[str, dict[str, Any]] = {}
    for stage in dict.fromkeys(str(p["stage"]) for p in points):
        curve = [r for r in rows if r["stage"] == stage]
        mine = [p for p in points if p["stage"] == stage]
        k = knee(curve, tolerance)
        model = seconds_model(mine)
        now = study_epochs.get(stage)
        current = next((r for r in curve if r["epochs"] == now and "drop" in r), None)
        out[stage] = {
            "letter": curve[0]["letter"], "setting": curve[0]["setting"],
            "metric": mine[0].get("metric", "accuracy"),
            "params": mine[0]["params"], "curve": curve, "knee": k,
            "fixed_seconds": None if model is None else model[0],
            "seconds_per_epoch": None if model is None else model[1],
            "study_epochs": now,
            "study_drop": None if current is None else current["drop"],
            "paper_rule": paper_rule(curve, mine, k, paper_epochs)}
    return out
