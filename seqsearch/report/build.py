"""`seqsearch report`: tables, figures, summary.md and index.html from stored results only."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch import atomic
from seqsearch.baseline import baseline_metrics
from seqsearch.config import StudyConfig
from seqsearch.errors import SeqsearchError
from seqsearch.progress import note
from seqsearch.report import claims as C
from seqsearch.report import figures as F
from seqsearch.report import tables as T
from seqsearch.stages import get_stage


def _csv(df: pd.DataFrame, folder: Path, name: str) -> None:
    atomic.write_bytes(folder / f"{name}.csv", df.to_csv(index=False).encode())


def _md_table(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("" if pd.isna(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_report(study: StudyConfig, out_dir: Path) -> dict[str, Any]:
    base = baseline_metrics(study, out_dir)
    runs_path = out_dir / "runs.csv"
    if not runs_path.is_file():
        raise SeqsearchError(f"{runs_path}: no probe results; run 'seqsearch run' first")
    runs = pd.read_csv(runs_path)
    order = T.read_json(out_dir / "order.json")
    if order is None:
        raise SeqsearchError(f"{out_dir / 'order.json'}: missing; run 'seqsearch order' first")
    best = T.read_json(out_dir / "tune" / "best.json") or {}
    probe = T.read_json(out_dir / "probe.json") or {}
    timings = T.read_json(out_dir / "timings.json") or {}
    tables, figs = out_dir / "tables", out_dir / "figures"
    notes: list[str] = []
    entries: list[tuple[str, str, str]] = []  # (title, html, png)

    pngs: list[tuple[Any, Path]] = []

    def emit(fig: Any, name: str, title: str) -> None:
        page = F.save_html(fig, figs, name)
        pngs.append((fig, figs / f"{name}.png"))
        entries.append((title, f"figures/{page}", f"figures/{name}.png"))

    pairs = T.pairs_table(order)
    _csv(pairs, tables, "pairs")
    for p in order["pairs"]:
        a, b = p["orders"]
        pts = T.pareto_points(runs, [a, b])
        _csv(pts, tables, f"pareto_{p['pair']}")
        verdict = "tie" if p["tie"] else f"{p['winner']} wins (margin {p['margin']:+.2f})"
        emit(F.pareto_figure(pts, a, b, verdict), f"pareto_{p['pair']}", f"{a} vs {b}")
    edges = T.edges_table(order)
    _csv(edges, tables, "dag_edges")
    emit(F.dag_figure(order["letters"], edges, order["orders"]), "dag", "order DAG")
    best_run = best.get("best")
    traj = pd.DataFrame()
    if best_run:
        traj = T.trajectory_table(best_run.get("trajectory", []), base)
        _csv(traj, tables, "trajectory")
        emit(F.trajectory_figure(traj, best_run["chain"]), "trajectory",
             "per-stage trajectory")
    tuning = T.tuning_table(out_dir / "tune" / "trials.csv")
    _csv(tuning, tables, "tuning")
    emit(F.tuning_figure(tuning), "tuning_history", "tuning history")
    emit(F.tuning_pareto_figure(tuning), "tuning_pareto", "tuning trials (Pareto view)")
    budgets = sorted(set(study.probe.budgets) | set(C.GOAL_BUDGETS))
    budget = T.budget_table(runs, base["val_accuracy"], base["test_accuracy"], budgets,
                            extra=T.tuning_rows_as_runs(tuning))
    _csv(budget, tables, "budgets")
    brute = T.read_json(out_dir / "brute.json")
    claims, t1 = C.claims_table(order, budget, study.probe.tie_threshold,
                                T.read_json(out_dir / "insert.json"),
                                T.read_json(out_dir / "repeat.json"), brute)
    _csv(claims, tables, "claims")
    _csv(t1, tables, "table1")
    goals = C.goal_budgets(budget)
    _csv(goals, tables, "goals")
    cost = C.cost_table(runs, order["letters"], study.probe.samples, study.probe.seeds,
                        best or None, timings)
    _csv(cost, tables, "cost")
    problem = F.save_pngs(pngs)
    if problem:
        note(f"[report] {problem}")
        notes.append(problem)
    _write_index(out_dir, study, entries)
    _write_summary(out_dir, study, base, order, pairs, best, traj, budget, probe, timings,
                   notes, _claims_lines(claims, t1, goals, cost, brute))
    return {"figures": [e[1] for e in entries], "notes": notes}


def _write_index(out_dir: Path, study: StudyConfig, entries: list[tuple[str, str, str]]) -> None:
    items = "\n".join(
        f'<li><a href="{html.escape(h)}">{html.escape(t)}</a> · '
        f'<a href="{html.escape(p)}">PNG</a></li>' for t, h, p in entries)
    frames = "\n".join(
        f'<section><h2>{html.escape(t)}</h2><iframe src="{html.escape(h)}" width="760" '
        f'height="580" style="border:0"></iframe></section>' for t, h, _ in entries)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>seqsearch: "
            f"{html.escape(study.name)}</title></head><body><h1>seqsearch report: "
            f"{html.escape(study.name)}</h1><p><a href='summary.md'>summary.md</a> · "
            f"tables in <code>tables/</code></p><ul>{items}</ul>{frames}</body></html>\n")
    atomic.write_bytes(out_dir / "index.html", page.encode())


def _write_summary(out_dir: Path, study: StudyConfig, base: dict[str, Any],
                   order: dict[str, Any], pairs: pd.DataFrame, best: dict[str, Any],
                   traj: pd.DataFrame, budget: pd.DataFrame, probe: dict[str, Any],
                   timings: dict[str, Any], notes: list[str], claims: list[str]) -> None:
    fl = study.first_last_bits
    kinds = {get_stage(c).info.letter: get_stage(c).info for c in order["letters"]}
    lines = [f"# seqsearch report: {study.name}", "",
             f"Model `{study.model.name}` {study.model.kwargs or ''} on `{study.data.name}`; "
             f"first/last layer bits {fl[0]}/{fl[1]}; seed {study.seed}.", "",
             "## Baseline", "",
             f"- val accuracy {100 * base['val_accuracy']:.2f} %, test accuracy "
             f"{100 * base['test_accuracy']:.2f} %",
             f"- MACs {base['macs']:,}, params {base['params']:,}, BitOps {base['bitops']:,}",
             "", "## Pairwise verdicts (decided on the validation split)", "",
             _md_table(pairs[["pair", "winner", "tie", "fronts_cross", "margin",
                              "confidence"]] if not pairs.empty else pairs),
             "## Order DAG", "",
             "Stages: " + ", ".join(f"{k} ({v.kind}, {v.granularity})"
                                    for k, v in kinds.items()),
             "", "Edges: " + (", ".join(f"{e['from']}→{e['to']}" for e in order["edges"])
                              or "none"),
             ""]
    if order["cycles"]:
        lines += [f"Cycles: {', '.join(order['cycles'])}; broken at "
                  + ", ".join(b["edge"] for b in order["broken_edges"]), ""]
    lines += [f"Proposed order(s): **{', '.join(order['orders'])}**", ""]
    run = best.get("best") if best else None
    lines += ["## Tuned chain", ""]
    if run:
        lines += [f"Chain **{run['chain']}** (trial {run['number']} of {best['trials']}; "
                  f"budget {best['budget']:g} points on validation): test accuracy "
                  f"{100 * run['test_accuracy']:.2f} % (drop {run['test_drop']:+.2f} points), "
                  f"BitOpsCR {run['bitops_cr']:.1f}×, CR {run['cr']:.1f}×"
                  + (f", τ = {run['tau']:g}" if run.get("tau") is not None else "") + ".", "",
                  "Params:", ""]
        for rec in run.get("trajectory", []):
            lines.append(f"- {rec['stage']}: " + ", ".join(f"{k}={v}" for k, v in
                                                            rec["params"].items()))
        lines += ["", "Per-stage trajectory:", "", _md_table(traj)]
    else:
        lines += ["No tuning trial met the budget (or tuning has not run).", ""]
    lines += ["## Best BitOpsCR within accuracy-loss budgets (like the paper's Table 1)", "",
              "Per order: the point with the best validation BitOpsCR whose validation drop is "
              "within the budget; its test BitOpsCR is shown (test drop in tables/budgets.csv).",
              "", _md_table(budget[["order", "kind", "points"] +
                                   [c for c in budget.columns if c.startswith("bitops_cr@")]]
                            if not budget.empty else budget, ".4g")]
    totals = probe.get("totals", {})
    lines += ["## Cost", ""]
    if totals:
        lines.append(f"- probe: {totals['units']} runs, {totals['stage_trainings']} stage "
                     f"trainings ({totals['saved_by_cache']} saved by the prefix cache; the "
                     f"pair chains alone need {totals['pair_stages_without_cache']} without it)")
    if best:
        lines.append(f"- tune: {best.get('trials')} trials ({best.get('complete')} complete, "
                     f"{best.get('pruned')} pruned, {best.get('failed')} failed), "
                     f"{best.get('stage_trainings')} stage trainings")
    for step, secs in timings.items():
        lines.append(f"- {step}: {secs:.1f} s")
    for extra in ("insert", "repeat"):
        data = T.read_json(out_dir / f"{extra}.json")
        if data:
            lines += ["", f"## {'Insertion' if extra == 'insert' else 'Repetition'} check", "",
                      _md_table(pd.DataFrame(data).drop(columns=["hypervolume"],
                                                        errors="ignore"))]
    lines += claims
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic.write_bytes(out_dir / "summary.md", ("\n".join(lines) + "\n").encode())


def _claims_lines(claims: pd.DataFrame, t1: pd.DataFrame, goals: pd.DataFrame,
                  cost: pd.DataFrame, brute: dict[str, Any] | None) -> list[str]:
    lines = ["", "## The paper's claims (tables/claims.csv)", "",
             f"Verdicts below bootstrap confidence {C.SURE:g} are inconclusive; a tie is "
             "inconclusive.", "", _md_table(claims, ".2f"),
             "## Table 1: D-first full orders (brute force; tables/table1.csv)", "",
             _md_table(t1, ".4g"),
             "## Goal budgets: tuned chain against single stages, best pair and best full "
             "order (tables/goals.csv)", "", _md_table(goals, ".4g"),
             "## Search cost against the brute force (tables/cost.csv)", "",
             "Stage trainings with the prefix cache; training seconds summed over the "
             "trainings (evaluation excluded); wall seconds of `seqsearch run`'s steps.", "",
             _md_table(cost, ".4g")]
    if brute:
        lines += [f"Brute force best order: **{brute.get('best')}**; the pairwise method "
                  f"proposed {', '.join(brute.get('pairwise_orders', []))} — "
                  + ("match." if brute.get("pairwise_matches") else "no match."), ""]
    return lines
