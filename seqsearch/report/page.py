"""index.html: the answer first (which order and how sure, the exported chain, what the search
cost, the noise), then every figure inline at page width with a one-line caption, then the
tables as HTML tables. plotly.js is loaded once, from the folder of reports."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch import atomic
from seqsearch.report import display as D
from seqsearch.report import figures as F
from seqsearch.report import tables as T
from seqsearch.report.deploy_section import deploy_html
from seqsearch.report.results import Figure, Results, Tables, exported_candidate
from seqsearch.report.verdicts import seed_gap_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1080px; margin: 0 auto; padding: 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.answer { background: #f6f9fc; border: 1px solid #d5e3f0; padding: 0.5em 1em 1em; }
.undecided { color: #777; } .decided { font-weight: 600; } .equivalent { color: #2ca02c; }
figure { margin: 1.5em 0; } figcaption { color: #555; font-size: 0.92em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(df: pd.DataFrame) -> str:
    """A frame of display strings (seqsearch.report.display) as an HTML table."""
    if df.empty:
        return "<p><em>(none)</em></p>"
    return str(df.to_html(index=False, border=0, na_rep=D.MISSING))


def _verdicts(r: Results) -> str:
    from seqsearch.report.verdicts import counts, outcome, power_text, rule_text

    if r.order.get("no_probe"):
        return ("<p><b>No probe:</b> this study was tuned over the chains its "
                "<code>tune.chains</code> names, so no pair was tested and no verdict, DAG or "
                "claim of the paper is shown.</p>")
    shown = D.verdicts(r.order)
    head = "".join(f"<th>{_e(c)}</th>" for c in shown.columns) + "<th>power line</th>"
    rows = []
    for p, (_, cells) in zip(r.order["pairs"], shown.iterrows(), strict=True):
        cls = {"order": "decided", "equivalent": "equivalent"}.get(outcome(p), "undecided")
        power = power_text(p) if "power" in p else ""
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td>{_e(v)}</td>" for v in cells)
                    + f"<td>{_e(power)}</td></tr>")
    return (f"<p><b>Pairs:</b> {_e(counts(r.order))}.</p>"
            f"<table><tr>{head}</tr>" + "".join(rows) + "</table>"
            + f"<p>{_e(rule_text(r.order['criteria']))} Effect: the mean over units of the "
              "first order's accuracy minus the second's, in points (positive: the pair as "
              "written is better). Holm level: the level this pair was tested at. "
              "Detectable: the smallest effect its units find with 80 % power (the exact "
              "sign-flip test's). Undecided pairs leave both orders as candidates.</p>"
              f"<p><b>Methods:</b> {_e(_methods(r))}</p>")


def _methods(r: Results) -> str:
    """The methods the verdicts saw (probe.json's, else the study's probe params) against the
    export's."""
    from seqsearch.report.verdicts import methods_text
    from seqsearch.search.scope import methods

    probe = r.probe.get("methods") or methods(r.study, r.study.probe_fixed())
    return methods_text(probe, methods(r.study, r.study.tune_fixed()))


def _noise(r: Results) -> str:
    n = r.order.get("noise") or {}
    parts = []
    if n.get("val_standard_error_points") is not None:
        parts.append(f"validation split of {n['val_images']:,} images: standard error "
                     f"{n['val_standard_error_points']:.2f} points")
    gap = seed_gap_text(n)
    if gap is not None:
        parts.append(f"seed to seed, the same chain's validation accuracy differs by a mean "
                     f"of {gap}")
    null = r.order.get("null_check") or {}
    if null.get("draws"):
        parts.append(f"label-swap null on these units: a false edge in "
                     f"{100 * null['study_false_edge_rate']:.2f} % of {null['draws']:,} drawn "
                     f"studies against a family level of {null['alpha']:.3g}")
    return f"<p><b>Noise:</b> {_e('; '.join(parts))}.</p>" if parts else ""


def exported_text(r: Results) -> tuple[str, str] | None:
    """(headline, details) of the exported chain (confirm.json), or None when nothing was."""
    c = exported_candidate(r.export)
    if c is None or r.export is None:
        return None
    ex, e = r.export, r.export["exported"]
    first = c["runs"][0]
    n = len(c["runs"])
    mean = {k: sum(float(x[k]) for x in c["runs"]) / n
            for k in ("val_accuracy", "test_accuracy", "bitops_cr")}
    base_val, base_test = r.base["val_accuracy"], r.base["test_accuracy"]
    status = "confirmed within the budget" if e["feasible"] else f"INFEASIBLE — {e['note']}"
    test_drop = 100 * (base_test - first["test_accuracy"])
    details = (
        f"from {e['from']} {e['id']}; {status}. On the study seed: test accuracy "
        f"{100 * first['test_accuracy']:.2f} % (drop {test_drop:+.2f} points), BitOpsCR "
        f"{D.ratio(first['bitops_cr'])}, CR {D.ratio(first['cr'])}. Mean of {n} seeds: validation "
        f"drop {100 * (base_val - mean['val_accuracy']):+.2f} points, test drop "
        f"{100 * (base_test - mean['test_accuracy']):+.2f} points, test BitOpsCR "
        f"{D.ratio(mean['bitops_cr'])}. {bound_text(c, ex.get('budget'))} "
        f"{_judged(ex['candidates'])} (confirm.json).")
    return f"Exported chain: {e['chain']}", details


def bound_text(c: dict[str, Any], budget: float | None) -> str:
    """The export rule's judgement of a candidate (confirm.json), in one sentence."""
    if c.get("bound") is None:
        return ("No predictive bound: this confirm.json predates `tune.confidence` (the old "
                "rule: mean validation drop within the budget).")
    adj = c["adjusted_val_drop"] - c["mean_val_drop"]
    curse = f" + {adj:.2f} winner's curse" if adj > 1e-9 else ""
    test = (f"; the judging runs' mean test drop {c['mean_test_drop']:+.2f} points"
            if c.get("mean_test_drop") is not None else "")
    base = c.get("baseline_runs")
    runs = (f"{c['judging_runs']} runs and {base:g} baseline run{'s' if base != 1 else ''}"
            if base is not None else f"{c['judging_runs']} runs")
    dof = c.get("sigma_run_dof")
    quantile = f"t({dof:.0f})" if dof is not None else "z"  # Student's t at σ_run's dof
    return (f"Predictive bound at confidence {c['confidence']:g}: mean validation drop "
            f"{c['mean_val_drop']:+.2f} over {c['judging_runs']} judging runs{curse} + "
            f"{c['noise_margin']:.2f} ({quantile} {c['z']:.2f} × σ_run {c['sigma_run']:.2f} points "
            f"over {runs}, "
            f"σ_run from {c['sigma_run_from']}) = {c['bound']:.2f} against the budget "
            f"{budget if budget is not None else '?'}: margin {c['margin']:+.2f}{test}.")


def _judged(candidates: list[dict[str, Any]]) -> str:
    """How many candidates were re-run on fresh seeds, and how many judged on the seeds the
    probe or brute force had already run (no `from` in a run: an older confirm.json)."""
    rerun = sum(any(x.get("from", "confirm") == "confirm" for x in c["runs"])
                for c in candidates)
    text = f"{rerun} candidates were re-run on fresh seeds"
    taken = len(candidates) - rerun
    return text + (f", {taken} judged on seeds already measured" if taken else "")


def _exported(r: Results) -> str:
    text = exported_text(r)
    if text is not None:
        return (f"<p><b>{_e(text[0])}</b> ({_e(text[1])}) Files: "
                "<a href='chain.yaml'>chain.yaml</a>, <code>model.pt</code>.</p>")
    run = r.best.get("best")
    if not run:
        return ("<p><b>Exported chain:</b> none — no tuning trial met the "
                f"{_e(r.best.get('budget', r.study.tune.budget))}-point budget (or tuning has "
                "not run).</p>")
    tau = f", τ = {run['tau']:g}" if run.get("tau") is not None else ""
    return (f"<p><b>Exported chain: {_e(run['chain'])}</b> (tuning trial {run['number']} of "
            f"{r.best.get('trials')}, picked on validation within {r.best.get('budget')} "
            f"points{_e(tau)}): test accuracy {100 * run['test_accuracy']:.2f} % (drop "
            f"{run['test_drop']:+.2f} points), BitOpsCR {D.ratio(run['bitops_cr'])}, CR "
            f"{D.ratio(run['cr'])}. Files: <a href='chain.yaml'>chain.yaml</a>, "
            "<code>model.pt</code>.</p>")


def _relation(r: Results, t: Tables) -> str:
    from seqsearch.report.relation import relation_lines

    lines = relation_lines(r, t)
    return f"<p>{_e(' '.join(lines))}</p>" if lines else ""


def _cost(r: Results, t: Tables) -> str:
    cost = t.cost
    text = ""
    if r.brute:
        text = f"<p>{_e(T.brute_sentence(r.brute, bold=''))}</p>"
    return ("<h3>What the search cost</h3>" + _table(D.cost(cost))
            + "<p>Stage trainings with the prefix cache; training time summed over the "
              "trainings (evaluation excluded); wall time of the steps as they ran; shares "
              "against a brute force over every full order on the same samples and seeds.</p>"
            + text)


def write_index(r: Results, t: Tables, figures: Sequence[Figure], js: Path,
                notes: Sequence[str]) -> None:
    s = r.study
    src = os.path.relpath(js, r.out_dir).replace(os.sep, "/")
    orders = r.order["orders"]
    proposed = (f"<b>{_e(T.orders_text(orders, 12))}</b>"
                + (f" — {len(orders)} orders are consistent with the decided pairs"
                   if len(orders) > 1 else ""))
    figs = "".join(
        f"<figure id='fig-{_e(f.name)}'><h3>{_e(f.title)}</h3>{F.inline_html(f.fig, f.name)}"
        f"<figcaption>{_e(f.caption)} <a href='figures/{_e(f.name)}.html'>page</a> · "
        f"<a href='figures/{_e(f.name)}.png'>PNG</a></figcaption></figure>" for f in figures)
    tables = ("<h3>Best test BitOpsCR within a validation-drop budget</h3>"
              "<p>Per order, the point with the best validation BitOpsCR whose validation "
              "drop is within the budget (in accuracy points); its test BitOpsCR.</p>"
              + _table(D.budgets(t.budget))
              + ("" if r.order.get("no_probe") else
                 "<h3>The paper's claims</h3>" + _table(D.claims(t.claims))
                 + "<h3>Goal budgets</h3><p>Test BitOpsCR within each validation-drop budget; "
                   "the order picked in brackets.</p>" + _table(D.goals(t.goals)))
              + "<p>Every table is also a CSV in <code>tables/</code>; the full text is in "
                "<a href='summary.md'>summary.md</a>.</p>")
    note_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>seqsearch: {_e(s.name)}</title><style>{STYLE}</style>"
        f"<script src='{_e(src)}'></script></head><body>"
        f"<h1>seqsearch report: {_e(s.name)}</h1>"
        f"<p>Model <code>{_e(s.model.name)}</code> on <code>{_e(s.data.name)}</code>; baseline "
        f"validation {100 * r.base['val_accuracy']:.2f} %, test "
        f"{100 * r.base['test_accuracy']:.2f} %.</p>"
        "<section class='answer' id='answer'><h2>Answer</h2>"
        f"<p><b>Proposed order(s):</b> {proposed}</p>"
        f"{_verdicts(r)}{_noise(r)}{_exported(r)}{_relation(r, t)}{deploy_html(r.out_dir)}"
        f"{_cost(r, t)}"
        "</section>"
        f"<section id='figures'><h2>Figures</h2>{figs}</section>"
        f"<section id='tables'><h2>Tables</h2>{tables}</section>"
        + (f"<section id='notes'><h2>Notes</h2><ul>{note_html}</ul></section>"
           if notes else "")
        + "</body></html>\n")
    atomic.write_bytes(r.out_dir / "index.html", page.encode())
