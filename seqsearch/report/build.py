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
        verdict = (f"{p['winner']} wins (p = {p['p_value']:.3g}, margin {p['margin']:+.2f})"
                   if p["decided"] else f"undecided (p = {p['p_value']:.3g})")
        emit(F.pareto_figure(pts, a, b, verdict), f"pareto_{p['pair']}", f"{a} vs {b}")
    edges = T.edges_table(order)
    _csv(edges, tables, "dag_edges")
    emit(F.dag_figure(order["letters"], edges, order["orders"], order.get("undecided", [])),
         "dag", "order DAG")
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
             _verdict_rule(order),
             "", _md_table(pairs[["pair", "winner", "p_value", "units", "seeds", "margin",
                                  "confidence", "fronts_cross"]] if not pairs.empty else pairs,
                           ".3g"),
             *_noise_lines(order, probe),
             "## Order DAG", "",
             "Stages: " + ", ".join(f"{k} ({v.kind}, {v.granularity})"
                                    for k, v in kinds.items()),
             "", "Edges: " + (", ".join(f"{e['from']}→{e['to']}" for e in order["edges"])
                              or "none"),
             ""]
    if order["cycles"]:
        lines += [f"Cycles: {', '.join(order['cycles'])}; broken at "
                  + ", ".join(b["edge"] for b in order["broken_edges"]), ""]
    lines += [f"Proposed order(s): **{T.orders_text(order['orders'], 12)}**"
              + (f" ({len(order['orders'])}: every order consistent with the decided pairs)"
                 if len(order["orders"]) > 1 else ""), ""]
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
    lines += claims + _environment_lines(out_dir)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic.write_bytes(out_dir / "summary.md", ("\n".join(lines) + "\n").encode())


def _environment_lines(out_dir: Path) -> list[str]:
    """What the numbers depend on besides the study file (environment.json)."""
    env = T.read_json(out_dir / "environment.json")
    if not env:
        return []
    lines = ["", "## Environment (environment.json)", ""]
    for step, e in env.items():
        lines.append(f"- {step}: seqsearch {e.get('seqsearch')}, torch {e.get('torch')}, "
                     f"{e.get('threads')} thread(s), {e.get('device')}"
                     + (f" ({e['device_name']})" if e.get("device_name") else "")
                     + f", {e.get('platform')}")
    return lines


def _verdict_rule(order: dict[str, Any]) -> str:
    c = order["criteria"]
    return (f"A pair is decided when a paired sign-flip test over the parameter samples "
            f"(units; seeds averaged inside a unit) of the per-unit hypervolume difference "
            f"gives p ≤ {c.get('level_per_look', c.get('alpha', 0.1)):.3g} (alpha "
            f"{c.get('alpha', 0.1):g} over {c.get('looks', 1)} look(s)) and the margin is at "
            f"least {c['tie_threshold']:g}; hypervolume above baseline − {c['max_drop']:g} "
            f"points. Undecided pairs add no DAG edge.")


def _noise_lines(order: dict[str, Any], probe: dict[str, Any]) -> list[str]:
    n = order.get("noise") or {}
    lines = ["", "Noise next to these verdicts:", ""]
    if n.get("val_standard_error_points") is not None:
        lines.append(f"- validation split: {n['val_images']} images, binomial standard error "
                     f"{n['val_standard_error_points']:.2f} points at the baseline's accuracy")
    if n.get("seed_gap_points") is not None:
        lines.append(f"- seed to seed: mean |seed a − seed b| of validation accuracy "
                     f"{n['seed_gap_points']:.2f} points over {n['seed_gap_runs']} pair runs")
    else:
        lines.append("- seed to seed: not measured (no pair ran two seeds)")
    seeds = probe.get("seeds")
    if seeds:
        lines.append(f"- seeds: {'adaptive' if seeds['adaptive'] else 'fixed'}; pair stage "
                     f"trainings {seeds['stage_trainings']} against "
                     f"{seeds['fixed_allocation_stage_trainings']} for every seed on every pair")
    return lines + [""]


def _claims_lines(claims: pd.DataFrame, t1: pd.DataFrame, goals: pd.DataFrame,
                  cost: pd.DataFrame, brute: dict[str, Any] | None) -> list[str]:
    lines = ["", "## The paper's claims (tables/claims.csv)", "",
             "A pair the paired test did not decide is inconclusive; against the brute force, "
             "an order not distinguishable from the best is inconclusive.", "",
             _md_table(claims, ".2f"),
             "## Table 1: D-first full orders (brute force; tables/table1.csv)", "",
             _md_table(t1, ".4g"),
             "## Goal budgets: tuned chain against single stages, best pair and best full "
             "order (tables/goals.csv)", "", _md_table(goals, ".4g"),
             "## Search cost against the brute force (tables/cost.csv)", "",
             "Stage trainings with the prefix cache; training seconds summed over the "
             "trainings (evaluation excluded); wall seconds of `seqsearch run`'s steps.", "",
             _md_table(cost, ".4g")]
    if brute:
        proposed = brute.get("pairwise_orders", [])
        top = brute.get("top_set", [])
        inside = brute.get("pairwise_in_top_set", [])
        lines += [f"Brute force best order: **{brute.get('best')}**; the pairwise method "
                  f"proposed {T.orders_text(proposed)} — "
                  + ("exact match" if brute.get("pairwise_matches") else "no exact match")
                  + f". Orders not distinguishable from the best (paired test at alpha "
                  f"{brute.get('alpha', 0.1):g}): {len(top)} — {T.orders_text(top)}; "
                  + (f"the proposal is in that set ({T.orders_text(inside)})."
                     if inside else "no proposed order is in that set."), ""]
        ranking = pd.DataFrame(brute.get("ranking", []))
        if not ranking.empty and "rank_interval" in ranking:
            ranking["rank_interval"] = [f"{r[0]:g}–{r[1]:g}" if r else "" for r in
                                        ranking["rank_interval"]]
            lines += ["Ranking (mean per-unit validation hypervolume; rank interval: 5th–95th "
                      "percentile over bootstrap resamples of the units):", "",
                      _md_table(ranking[["rank", "order", "hypervolume", "rank_interval",
                                         "p_vs_best", "in_top_set"]], ".3g")]
    return lines
