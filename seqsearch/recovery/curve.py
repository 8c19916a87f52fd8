"""Run a recovery curve resumably and write its files.

Every point (stage, sample, budget, seed) trains one single-stage chain through the chain
runner, under a copy of the study whose `train.stage_epochs` (or `student_epochs`) is the
budget. The prefix-cache key holds the whole train section and the seed, so budgets never share
a cached model; the curve's cache is its own folder, `<study folder>/cache/recovery/`. Each
point is written atomically to `recovery/points/` as soon as it is measured, so a killed run
resumes by running the same command, and a second run trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqsearch import atomic
from seqsearch.config import StudyConfig
from seqsearch.errors import SeqsearchError
from seqsearch.progress import note
from seqsearch.recovery.analysis import KNEE_RULE, analyse
from seqsearch.recovery.plan import (
    Point,
    budget_setting,
    choose_samples,
    middle_tau,
    plan_points,
    with_budget,
)


@dataclass(frozen=True)
class CurveOptions:
    """What the command line chose: stages, budgets (epochs), seeds, the sample and the
    knee's tolerance (points)."""

    stages: tuple[str, ...]
    epochs: tuple[int, ...] = (1, 2, 4, 8)
    seeds: tuple[int, ...] = (0, 1)
    sample: int | None = None
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tolerance: float = 0.25


def _point_file(folder: Path, point: Point, prefix_key: str, tau: float) -> Path:
    """The point's file: readable prefix, then a hash of the chain's cache key (baseline,
    train settings with the budget, seed, stage params) and, for a stage that sweeps a policy
    param (E's τ), the value it is measured at."""
    from seqsearch.stages import behaviour

    sweeps = behaviour.sweep_param(point.stage) is not None
    digest = hashlib.sha256(f"{prefix_key}:{tau if sweeps else ''}".encode()).hexdigest()[:12]
    return folder / f"{point.letter}-e{point.epochs}-s{point.seed}-{digest}.json"


def exits_accuracy(model: Any, split: Any) -> float | None:
    """The mean top-1 accuracy of a model's exit heads, each on every sample of the split
    (None for a model with one output)."""
    from seqsearch.train import predict

    outputs = predict(model, split)
    if not isinstance(outputs, list | tuple) or len(outputs) < 2:
        return None
    return float(sum(float((o.argmax(1) == split.y).float().mean()) for o in outputs[:-1])
                 / (len(outputs) - 1))


def _measure(point: Point, runner: Any, steps: Any, data: Any, tau: float,
             steps_per_epoch: int) -> dict[str, Any]:
    """Train the point (or take it from the curve's cache) and measure it: accuracy of the
    model as the probe measures it (with exits: at `tau`) and the curve's drop."""
    from seqsearch.chain import operating_points
    from seqsearch.metrics import bitops_cr
    from seqsearch.train import DivergedError

    row: dict[str, Any] = {
        "stage": point.stage, "letter": point.letter, "setting": point.setting,
        "epochs": point.epochs, "steps": point.epochs * steps_per_epoch, "seed": point.seed,
        "params": dict(point.params)}
    try:
        result = runner.run(steps)
    except (DivergedError, SeqsearchError) as exc:
        return {**row, "error": str(exc), "trained": 1}
    final = result.records[-1]
    pt = operating_points(result.model, steps, data, final, [tau])[0]
    ref = runner.reference
    heads_val = exits_accuracy(result.model, data.val)
    heads_test = None if heads_val is None else exits_accuracy(result.model, data.test)
    val_drop = 100 * (ref.val_accuracy - pt["val_accuracy"])
    return {**row, "tau": pt["tau"], "val_accuracy": pt["val_accuracy"],
            "test_accuracy": pt["test_accuracy"], "val_drop": val_drop,
            "test_drop": 100 * (ref.test_accuracy - pt["test_accuracy"]),
            "exits_val_accuracy": heads_val, "exits_test_accuracy": heads_test,
            "metric": "accuracy" if heads_val is None else "exit heads",
            "curve_drop": val_drop if heads_val is None
            else 100 * (ref.val_accuracy - heads_val),
            "val_bitops_cr": bitops_cr(ref.bitops, pt["val_bitops"]),
            "bitops_cr": bitops_cr(ref.bitops, pt["bitops"]), "cr": final["cr"],
            "train_seconds": float(final["seconds"]), "error": None,
            "trained": result.trained}


CSV_COLUMNS = ("stage", "letter", "setting", "epochs", "steps", "seed", "metric", "curve_drop",
               "val_accuracy", "val_drop", "test_accuracy", "test_drop", "tau",
               "exits_val_accuracy", "exits_test_accuracy", "val_bitops_cr", "bitops_cr", "cr",
               "train_seconds", "error", "params")


def run_curve(study: StudyConfig, out_dir: Path, opts: CurveOptions) -> dict[str, Any]:
    """Measure every point not yet on disk, then write recovery.csv, recovery.json and the
    figure (HTML, and PNG where kaleido finds a browser) under `<out_dir>/recovery/`.
    Returns recovery.json's content plus `run` (points, trained, reused)."""
    from seqsearch.baseline import get_baseline
    from seqsearch.chain import plan, runner_for

    samples = choose_samples(study, opts.stages, opts.sample, opts.params)
    points = plan_points(samples, opts.epochs, opts.seeds)
    folder = out_dir / "recovery"
    tau = middle_tau(study)
    base = get_baseline(study, out_dir=out_dir)
    n_train = len(base.data.train)
    per_epoch = math.ceil(n_train / study.train.batch_size)
    cache = out_dir / "cache" / "recovery"
    rows: list[dict[str, Any]] = []
    work: list[tuple[Point, Any, Any, Path]] = []
    for point in points:
        runner = runner_for(with_budget(study, point.setting, point.epochs), base, cache,
                            seed=point.seed)
        steps = plan([(point.stage, point.params)])
        path = _point_file(folder / "points", point, runner.prefix_key(steps), tau)
        if path.is_file():
            rows.append(json.loads(path.read_text()))
        else:
            work.append((point, runner, steps, path))
    reused, trained = len(rows), 0
    # the ETA weighs each point by its epochs (+1 for the stage's set-up and evaluation)
    weights = [p.epochs + 1 for p, *_ in work]
    start, done = time.perf_counter(), 0
    for k, (point, runner, steps, path) in enumerate(work, start=1):
        elapsed = time.perf_counter() - start
        eta = f"{elapsed / done * sum(weights[k - 1:]):.0f} s" if done else "unknown"
        note(f"[recovery] {point.letter} {point.stage}: point {k}/{len(work)}"
             + (f" ({reused} of {len(points)} measured before)" if reused else "")
             + f", {point.epochs} epoch(s) = {point.epochs * per_epoch} steps, seed "
             f"{point.seed} (ETA {eta})")
        row = _measure(point, runner, steps, base.data, tau, per_epoch)
        trained += int(row.pop("trained"))
        atomic.write_json(path, row)
        rows.append(row)
        done += weights[k - 1]
        if row["error"]:
            note(f"[recovery] {point.letter} {point.epochs} epoch(s) seed {point.seed} "
                 f"failed: {row['error']}")
    doc = _document(study, opts, rows, base.metrics, n_train, per_epoch, tau, samples)
    _write_table(folder, rows)
    kept = None if trained else _figures_of(folder, doc)
    doc["notes"] = kept if kept is not None else _write_figure(folder, out_dir, study, doc)
    atomic.write_json(folder / "recovery.json", doc)
    return {**doc, "run": {"points": len(points), "trained": trained, "reused": reused,
                           "folder": str(folder)}}


def _document(study: StudyConfig, opts: CurveOptions, rows: list[dict[str, Any]],
              metrics: Mapping[str, Any], n_train: int, per_epoch: int, tau: float,
              samples: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    order = {name: i for i, name in enumerate(samples)}
    rows.sort(key=lambda r: (order.get(r["stage"], len(order)), r["epochs"], r["seed"]))
    now: dict[str, int] = {}
    for name in samples:
        value = getattr(study.train, budget_setting(name))
        now[name] = study.train.epochs if value is None else int(value)  # None: the baseline's
    stages = analyse(rows, tolerance=opts.tolerance, paper_epochs=study.train.epochs,
                     study_epochs=now)
    return {
        "study": study.name, "model": study.model.name, "data": study.data.name,
        "baseline": {"val_accuracy": metrics["val_accuracy"],
                     "test_accuracy": metrics["test_accuracy"], "epochs": study.train.epochs,
                     "seconds": metrics.get("seconds")},
        "train_images": n_train, "batch_size": study.train.batch_size,
        "steps_per_epoch": per_epoch, "epochs": list(opts.epochs), "seeds": list(opts.seeds),
        "sample": "demanding default" if opts.sample is None else f"probe sample {opts.sample}",
        "tau": tau, "tolerance": opts.tolerance, "knee_rule": KNEE_RULE,
        "paper_epochs": study.train.epochs, "stages": stages,
    }


def _write_table(folder: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import pandas as pd

    frame = pd.DataFrame([{c: (json.dumps(r.get(c), sort_keys=True) if c == "params"
                               else r.get(c)) for c in CSV_COLUMNS} for r in rows],
                         columns=list(CSV_COLUMNS))
    atomic.write_bytes(folder / "recovery.csv", frame.to_csv(index=False).encode())


def _figures_of(folder: Path, doc: Mapping[str, Any]) -> list[str] | None:
    """The notes of figures already drawn from this very curve (a rerun that measured nothing
    new need not start a browser again), or None when they must be drawn."""
    saved = folder / "recovery.json"
    if not (saved.is_file() and (folder / "recovery.html").is_file()):
        return None
    old = json.loads(saved.read_text())
    notes = old.pop("notes", [])
    if old != json.loads(json.dumps(doc, sort_keys=True, default=str)):
        return None
    return list(notes) if notes or (folder / "recovery.png").is_file() else None


def _write_figure(folder: Path, out_dir: Path, study: StudyConfig,
                  doc: Mapping[str, Any]) -> list[str]:
    """recovery.html (plotly.js shared beside the study folder, as the report does) and
    recovery.png; returns notes (a PNG that could not be rendered)."""
    from seqsearch.recovery.figure import recovery_figure
    from seqsearch.report import figures as F

    seeds = ", ".join(map(str, doc["seeds"]))
    fig = recovery_figure(doc["stages"], f"{study.name}: recovery per stage (mean of seeds "
                          f"{seeds}; bars: the seeds' range; rings: knees)")
    js = F.write_plotly_js(out_dir.parent)
    F.save_html(fig, folder, "recovery", js)
    problem = F.save_pngs([(fig, folder / "recovery.png")])
    if problem:
        note(f"[recovery] {problem}")
    return [problem] if problem else []
