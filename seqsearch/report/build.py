"""`seqsearch report`: tables, figures, summary.md and index.html from stored results only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch import atomic
from seqsearch.config import StudyConfig
from seqsearch.progress import note
from seqsearch.report import claims as C
from seqsearch.report import display as D
from seqsearch.report import figures as F
from seqsearch.report import speed as S
from seqsearch.report import tables as T
from seqsearch.report.deploy_section import deploy_text
from seqsearch.report.page import exported_text, write_index
from seqsearch.report.relation import relation_lines
from seqsearch.report.results import (
    Figure,
    Results,
    Tables,
    exported_candidate,
    load_results,
)
from seqsearch.report.verdicts import (
    counts,
    power_text,
    rule_text,
    seed_gap_text,
)
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


def derive_tables(r: Results) -> Tables:
    best_run = r.best.get("best")
    traj = (T.trajectory_table(best_run.get("trajectory", []), r.base) if best_run
            else pd.DataFrame())
    tuning = T.tuning_table(r.out_dir / "tune" / "trials.csv")
    budgets = sorted(set(r.study.probe.budgets) | set(C.GOAL_BUDGETS))
    budget = T.budget_table(r.runs, r.base["val_accuracy"], r.base["test_accuracy"], budgets,
                            extra=T.tuning_rows_as_runs(tuning))
    if r.order.get("no_probe"):  # tuned without a probe: no verdict, so no paper claim
        claims, t1 = pd.DataFrame(), pd.DataFrame()
    else:
        claims, t1 = C.claims_table(r.order, budget, r.study.probe.tie_threshold, r.insert,
                                    r.repeat, r.brute)
    cost = C.cost_table(r.runs, r.order["letters"], r.study.probe.samples, r.study.probe.seeds,
                        r.best or None, r.timings)
    seed_means = T.best_seed_means(r.runs, r.base["val_accuracy"], r.base["test_accuracy"],
                                   export_budget(r))
    return Tables(T.pairs_table(r.order), T.edges_table(r.order), traj, tuning, budget, claims,
                  t1, C.goal_budgets(budget), cost, seed_means)


def export_budget(r: Results) -> float:
    """The budget the export judged on: confirm.json's (`seqsearch export --budget`), else the
    study's `tune.budget`."""
    return float((r.export or {}).get("budget", r.study.tune.budget))


def write_tables(r: Results, t: Tables) -> None:
    folder = r.out_dir / "tables"
    for p in r.order["pairs"]:
        _csv(T.pareto_points(r.runs, p["orders"]), folder, f"pareto_{p['pair']}")
    for name in ("pairs", "traj", "tuning", "budget", "claims", "table1", "goals", "cost",
                 "seed_means"):
        df = getattr(t, name)
        if name == "traj" and not r.best.get("best"):
            continue
        _csv(df, folder, {"traj": "trajectory", "budget": "budgets"}.get(name, name))
    _csv(t.edges, folder, "dag_edges")
    speed = S.speed_table(t.tuning)
    if not speed.empty:
        _csv(speed, folder, "speed_vs_bitops")


def make_figures(r: Results, t: Tables) -> list[Figure]:
    base_val = r.base["val_accuracy"]
    budgets = list(r.study.probe.budgets)
    exported = _exported_point(r)
    out = []
    for p in r.order["pairs"]:
        a, b = p["orders"]
        pts = T.pareto_points(r.runs, [a, b])
        verdict = (f"{p['winner']} wins (p = {p['p_value']:.3g}, effect "
                   f"{p.get('effect', p['margin']):+.2f} pts)" if p["decided"] else
                   f"{'equivalent' if p.get('equivalent') else 'undecided'} "
                   f"(p = {p['p_value']:.3g})")
        out.append(Figure(f"pareto_{p['pair']}", f"{a} vs {b}",
                          f"Every probe point of {a} and {b} on validation (one trace per seed; "
                          "click the legend to hide one), each order's front, the baseline and "
                          "the budget lines; the star is the exported chain.",
                          F.pareto_figure(pts, a, b, verdict, base_val, budgets, exported)))
    if not r.order.get("no_probe"):
        out.append(Figure("dag", "order DAG",
                          "Decided pairs as arrows (p-value, effect in points); pairs shown "
                          "equivalent as ≈; undecided pairs dotted.",
                          F.dag_figure(r.order["letters"], t.edges, r.order["orders"],
                                       r.order.get("undecided", []),
                                       r.order.get("equivalent", []))))
    if r.brute and r.brute.get("ranking"):
        out.append(Figure("brute_ranking", "brute-force ranking",
                          "Every full order's mean per-unit validation hypervolume with its "
                          "rank's bootstrap interval; filled: not distinguishable from the "
                          "best.", F.ranking_figure(r.brute["ranking"],
                                                    r.brute.get("pairwise_orders", []))))
    best_run = r.best.get("best")
    if best_run:
        out.append(Figure("trajectory", "per-stage trajectory",
                          "Test accuracy and BitOpsCR after each stage of the exported chain.",
                          F.trajectory_figure(t.traj, best_run["chain"])))
    out.append(Figure("tuning_history", "tuning history",
                      "Validation BitOpsCR of each tuning trial, and the best feasible so far.",
                      F.tuning_figure(t.tuning)))
    speed = S.speed_table(t.tuning)
    if not speed.empty:
        corr = S.rank_correlation(speed)
        out.append(Figure("speed_vs_bitops", "does BitOps predict speed?",
                          f"BitOpsCR against the measured batch-1 speed-up of each distinct "
                          f"network timed in tuning ({corr['n']}; runtime "
                          f"{', '.join(map(str, speed['latency_runtime'].dropna().unique()))}); "
                          "Spearman rank correlation in the title; table "
                          "tables/speed_vs_bitops.csv.",
                          F.speed_figure(speed, corr["spearman"])))
    out.append(Figure("tuning_pareto", "tuning trials (Pareto view)",
                      "Completed tuning trials: validation accuracy against BitOpsCR.",
                      F.tuning_pareto_figure(t.tuning)))
    return out


def _exported_point(r: Results) -> tuple[float, float, str] | None:
    """The exported chain's validation point (the study-seed run), else the best trial's."""
    c = exported_candidate(r.export)
    if c is not None:
        run0 = c["runs"][0]
        return float(run0["val_bitops_cr"]), float(run0["val_accuracy"]), c["chain"]
    run = r.best.get("best")
    if not run:
        return None
    return float(run["val_bitops_cr"]), float(run["val_accuracy"]), str(run["chain"])


def build_report(study: StudyConfig, out_dir: Path) -> dict[str, Any]:
    r = load_results(study, out_dir)
    t = derive_tables(r)
    write_tables(r, t)
    figures = make_figures(r, t)
    folder = out_dir / "figures"
    js = F.write_plotly_js(out_dir.parent)
    for f in figures:
        F.save_html(f.fig, folder, f.name, js)
    notes: list[str] = []
    problem = F.save_pngs([(f.fig, folder / f"{f.name}.png") for f in figures])
    if problem:
        note(f"[report] {problem}")
        notes.append(problem)
    _write_summary(r, t, notes)
    write_index(r, t, figures, js, notes)
    return {"figures": [f"figures/{f.name}.html" for f in figures], "notes": notes}


def _write_summary(r: Results, t: Tables, notes: list[str]) -> None:
    out_dir, study, base, order, best = r.out_dir, r.study, r.base, r.order, r.best
    traj, budget, probe, timings = t.traj, t.budget, r.probe, r.timings
    claims = _claims_lines(t.claims, t.table1, t.goals, t.cost, r.brute)
    fl = study.first_last_bits
    kinds = {get_stage(c).info.letter: get_stage(c).info for c in order["letters"]}
    lines = [f"# seqsearch report: {study.name}", "",
             f"Model `{study.model.name}` {study.model.kwargs or ''} on `{study.data.name}`; "
             f"first/last layer bits {fl[0]}/{fl[1]}; seed {study.seed}.", "",
             "## Baseline", "",
             f"- val accuracy {100 * base['val_accuracy']:.2f} %, test accuracy "
             f"{100 * base['test_accuracy']:.2f} %",
             f"- MACs {base['macs']:,}, params {base['params']:,}, BitOps {base['bitops']:,}",
             ""]
    if order.get("no_probe"):
        lines += ["## No probe", "",
                  "This study was tuned without a probe: `tune.chains` names the orders, so no "
                  "pair was tested and the page holds no verdict, DAG or claim of the paper.",
                  ""]
    else:
        lines += ["## Pairwise verdicts (decided on the validation split)", "",
                  _verdict_rule(order),
                  "", f"Pairs: {counts(order)}.", "",
                  _md_table(D.verdicts(order)),
                  *_power_lines(order),
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
    exported = exported_text(r)
    lines += ["## Exported chain", "",
              f"**{exported[0]}** ({exported[1]})" if exported else "Nothing exported yet "
              "(`seqsearch run` confirms the best candidates and exports one).", ""]
    lines += [" ".join(relation_lines(r, t)), ""] if relation_lines(r, t) else []
    real = deploy_text(r.out_dir)
    if real:
        lines += [f"**Real cost (deployed, `seqsearch bench-model`, deploy.json):** {real}", ""]
    if not t.seed_means.empty and t.seed_means["points"].sum() > 0:
        lines += [f"Against it, the export's rule (mean validation drop ≤ {export_budget(r):g} "
                  "point, best mean validation BitOpsCR) on the probe points already measured "
                  "on two or more seeds, per kind (tables/seed_means.csv; drops and test "
                  "BitOpsCR are seed means):", "", _md_table(D.seed_means(t.seed_means))]
    run = best.get("best") if best else None
    lines += ["## Tuned chain", ""]
    if run:
        lines += [f"Chain **{run['chain']}** (trial {run['number']} of {best['trials']}; "
                  f"budget {best['budget']:g} points on validation): test accuracy "
                  f"{100 * run['test_accuracy']:.2f} % (drop {run['test_drop']:+.2f} points), "
                  f"BitOpsCR {D.ratio(run['bitops_cr'])}, CR {D.ratio(run['cr'])}"
                  + (f", τ = {run['tau']:g}" if run.get("tau") is not None else "") + ".", "",
                  "Params:", ""]
        for rec in run.get("trajectory", []):
            lines.append(f"- {rec['stage']}: " + ", ".join(f"{k}={v}" for k, v in
                                                            rec["params"].items()))
        lines += ["", "Per-stage trajectory:", "", _md_table(D.trajectory(traj))]
    else:
        lines += ["No tuning trial met the budget (or tuning has not run).", ""]
    lines += _speed_lines(t)
    lines += ["## Best BitOpsCR within accuracy-loss budgets (like the paper's Table 1)", "",
              "Per order: the point with the best validation BitOpsCR whose validation drop is "
              "within the budget; its test BitOpsCR is shown (test drop in tables/budgets.csv).",
              "", _md_table(D.budgets(budget))]
    totals = probe.get("totals", {})
    lines += ["## Cost", ""]
    if totals:
        lines.append(f"- probe: {totals['units']:,} runs, {totals['stage_trainings']:,} stage "
                     f"trainings ({totals['saved_by_cache']:,} saved by the prefix cache; the "
                     f"pair chains alone need {totals['pair_stages_without_cache']:,} without "
                     "it)")
    if best:
        lines.append(f"- tune: {best.get('trials')} trials ({best.get('complete')} complete, "
                     f"{best.get('pruned')} pruned, {best.get('failed')} failed), "
                     f"{best.get('stage_trainings')} stage trainings")
    for step, secs in timings.items():
        lines.append(f"- {step}: {D.seconds(secs)} s")
    for extra, data in (("insert", r.insert), ("repeat", r.repeat)):
        if data:
            lines += ["", f"## {'Insertion' if extra == 'insert' else 'Repetition'} check", "",
                      _md_table(D.checks(data))]
    lines += ([] if order.get("no_probe") else claims) + _environment_lines(out_dir)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic.write_bytes(out_dir / "summary.md", ("\n".join(lines) + "\n").encode())


def _speed_lines(t: Tables) -> list[str]:
    """Does BitOps predict speed? The rank correlation over the networks timed in tuning."""
    speed = S.speed_table(t.tuning)
    if speed.empty:
        return []
    corr = S.rank_correlation(speed)
    rho = "not defined" if corr["spearman"] is None else f"{corr['spearman']:+.2f}"
    runtime = ", ".join(map(str, speed["latency_runtime"].dropna().unique()))
    return ["## Does BitOps predict speed? (tables/speed_vs_bitops.csv)", "",
            f"Spearman rank correlation of validation BitOpsCR and the measured batch-1 "
            f"speed-up over the {corr['n']} distinct networks timed in tuning ({runtime}): "
            f"**{rho}**.", "", _md_table(speed), ""]


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
    return rule_text(order["criteria"])


def _power_lines(order: dict[str, Any]) -> list[str]:
    """The power line of each undecided pair, and the label-swap null of the rule."""
    lines = ["", "Power lines of the undecided pairs (normal approximation of the test):", ""]
    lines += [f"- {p['pair']}: {power_text(p)}" for p in order["pairs"]
              if p.get("outcome") == "undecided" and "power" in p] or ["- (none)"]
    null = order.get("null_check")
    if null and null.get("draws"):
        lines += ["", f"Label-swap null on these units (AB and BA swapped at random inside "
                      f"each unit, {null['draws']:,} drawn studies): a false edge in "
                      f"{100 * null['study_false_edge_rate']:.2f} % of studies against a "
                      f"family level of {null['alpha']:.3g}."]
    return lines


def _noise_lines(order: dict[str, Any], probe: dict[str, Any]) -> list[str]:
    n = order.get("noise") or {}
    lines = ["", "Noise next to these verdicts:", ""]
    if n.get("val_standard_error_points") is not None:
        lines.append(f"- validation split: {n['val_images']:,} images, binomial standard error "
                     f"{n['val_standard_error_points']:.2f} points at the baseline's accuracy")
    gap = seed_gap_text(n)
    if gap is not None:
        lines.append(f"- seed to seed: mean |seed a − seed b| of validation accuracy {gap}")
        by_order = n.get("seed_gap_by_order") or {}
        if by_order:
            lines.append("- per order: " + ", ".join(f"{o} {v['points']:.2f} ({v['runs']})"
                                                     for o, v in by_order.items()))
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
             _md_table(D.claims(claims)),
             "## Table 1: D-first full orders (brute force; tables/table1.csv)", "",
             _md_table(D.budgets(t1)),
             "## Goal budgets: tuned chain against single stages, best pair and best full "
             "order (tables/goals.csv)", "", _md_table(D.goals(goals)),
             "## Search cost against the brute force (tables/cost.csv)", "",
             "Stage trainings with the prefix cache; training seconds summed over the "
             "trainings (evaluation excluded); wall seconds of `seqsearch run`'s steps.", "",
             _md_table(D.cost(cost))]
    if brute:
        lines += [T.brute_sentence(brute), ""]
        ranking = brute.get("ranking", [])
        if ranking and "rank_interval" in ranking[0]:
            lines += ["Ranking (mean per-unit validation hypervolume; rank interval: 5th–95th "
                      "percentile over bootstrap resamples of the units):", "",
                      _md_table(D.ranking(brute))]
    return lines
