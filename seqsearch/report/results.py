"""What a report is made from: a study folder's stored results, the tables derived from them,
and the figures, as plain data the summary and the page both read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch.baseline import baseline_metrics
from seqsearch.config import StudyConfig
from seqsearch.errors import SeqsearchError
from seqsearch.report import tables as T


@dataclass
class Results:
    """What a study folder holds, as read by the report (nothing here trains)."""

    study: StudyConfig
    out_dir: Path
    base: dict[str, Any]
    runs: pd.DataFrame
    order: dict[str, Any]
    best: dict[str, Any]
    probe: dict[str, Any]
    timings: dict[str, Any]
    brute: dict[str, Any] | None
    insert: list[dict[str, Any]] | None
    repeat: list[dict[str, Any]] | None
    export: dict[str, Any] | None  # confirm.json: the exported chain and every candidate


@dataclass
class Tables:
    """The tables the report derives from the results (each also written as CSV)."""

    pairs: pd.DataFrame
    edges: pd.DataFrame
    traj: pd.DataFrame
    tuning: pd.DataFrame
    budget: pd.DataFrame
    claims: pd.DataFrame
    table1: pd.DataFrame
    goals: pd.DataFrame
    cost: pd.DataFrame
    seed_means: pd.DataFrame  # the export's rule on seed-averaged probe points, per kind


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    fig: Any


def load_results(study: StudyConfig, out_dir: Path) -> Results:
    base = baseline_metrics(study, out_dir)
    runs_path = out_dir / "runs.csv"
    tune_only = not runs_path.is_file() and (out_dir / "tune" / "trials.csv").is_file()
    if not runs_path.is_file() and not tune_only:
        raise SeqsearchError(f"{runs_path}: no probe results; run 'seqsearch run' first")
    order = T.read_json(out_dir / "order.json") if not tune_only else no_probe_order(study)
    if order is None:
        raise SeqsearchError(f"{out_dir / 'order.json'}: missing; run 'seqsearch order' first")
    if any("decided" not in p for p in order.get("pairs", [])):
        raise SeqsearchError(f"{out_dir / 'order.json'}: written by an older seqsearch (no "
                             "paired-test verdicts); run 'seqsearch order' again (no training)")
    runs = pd.read_csv(runs_path) if not tune_only else pd.DataFrame(columns=RUN_COLUMNS)
    return Results(study, out_dir, base, runs, order,
                   T.read_json(out_dir / "tune" / "best.json") or {},
                   T.read_json(out_dir / "probe.json") or {},
                   T.read_json(out_dir / "timings.json") or {},
                   T.read_json(out_dir / "brute.json"), T.read_json(out_dir / "insert.json"),
                   T.read_json(out_dir / "repeat.json"), T.read_json(out_dir / "confirm.json"))


# the columns a probe's runs.csv always has (a study tuned without a probe has no rows)
RUN_COLUMNS = ["kind", "order", "sample", "seed", "tau", "val_accuracy", "test_accuracy",
               "val_bitops", "val_bitops_cr", "bitops", "bitops_cr", "cr", "trained", "cached",
               "from_cache", "epochs", "seconds"]


def no_probe_order(study: StudyConfig) -> dict[str, Any]:
    """What a study tuned without a probe (its `tune.chains` given) reports as its order: no
    pair was tested, so no verdict, edge or front; the orders are the chains it was told."""
    from seqsearch.search.scope import study_letters

    return {"pairs": [], "edges": [], "undecided": [], "equivalent": [], "decided": [],
            "letters": study_letters(study), "orders": list(study.tune.chains or []),
            "cycles": [], "broken_edges": [], "fronts": {}, "noise": {}, "no_probe": True,
            "criteria": {}}


def exported_candidate(export: dict[str, Any] | None) -> dict[str, Any] | None:
    """The exported chain's entry among confirm.json's candidates (with its runs), or None."""
    if not export:
        return None
    e = export["exported"]
    return next((c for c in export["candidates"]
                 if c["chain"] == e["chain"] and c["id"] == e["id"] and c["runs"]), None)
