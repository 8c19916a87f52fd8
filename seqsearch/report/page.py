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


def _table(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    return str(df.to_html(index=False, border=0, na_rep="",
                          float_format=lambda v: floatfmt.format(v)))


def _verdicts(r: Results) -> str:
    from seqsearch.report.verdicts import counts, outcome, power_text, rule_text, verdict_word

    rows = []
    for p in r.order["pairs"]:
        cls = {"order": "decided", "equivalent": "equivalent"}.get(outcome(p), "undecided")
        conf = p.get("confidence")
        power = power_text(p) if "power" in p else ""
        rows.append(f"<tr class='{cls}'><td>{_e(p['pair'])}</td><td>{_e(verdict_word(p))}</td>"
                    f"<td>{p.get('effect', p['margin']):+.2f}</td>"
                    f"<td>{p['p_value']:.3g}</td><td>{p['alpha']:.3g}</td><td>{p['units']}</td>"
                    f"<td>{len(p['seeds'])}</td>"
                    f"<td>{'' if conf is None else f'{conf:.2f}'}</td>"
                    f"<td>{_e(power)}</td></tr>")
    return (f"<p><b>Pairs:</b> {_e(counts(r.order))}.</p>"
            "<table><tr><th>pair</th><th>verdict</th><th>effect (pts)</th><th>p-value</th>"
            "<th>level</th><th>units</th><th>seeds</th><th>confidence</th>"
            "<th>power line</th></tr>" + "".join(rows) + "</table>"
            + f"<p>{_e(rule_text(r.order['criteria']))} Undecided pairs leave both orders as "
              "candidates.</p>")


def _noise(r: Results) -> str:
    n = r.order.get("noise") or {}
    parts = []
    if n.get("val_standard_error_points") is not None:
        parts.append(f"validation split of {n['val_images']} images: standard error "
                     f"{n['val_standard_error_points']:.2f} points")
    gap = seed_gap_text(n)
    if gap is not None:
        parts.append(f"two seeds of the same chain land {gap} apart on average")
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
        f"{first['bitops_cr']:.1f}×, CR {first['cr']:.1f}×. Mean of {n} seeds: validation "
        f"drop {100 * (base_val - mean['val_accuracy']):+.2f} points, test drop "
        f"{100 * (base_test - mean['test_accuracy']):+.2f} points, test BitOpsCR "
        f"{mean['bitops_cr']:.1f}×. {_judged(ex['candidates'])} (confirm.json).")
    return f"Exported chain: {e['chain']}", details


def _judged(candidates: list[dict[str, Any]]) -> str:
    """How many candidates were re-run on a fresh seed, and how many judged on the seeds the
    probe or brute force had already run (no `from` in a run: an older confirm.json)."""
    rerun = sum(any(x.get("from", "confirm") == "confirm" for x in c["runs"])
                for c in candidates)
    text = f"{rerun} candidates were re-run on a fresh seed"
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
            f"{run['test_drop']:+.2f} points), BitOpsCR {run['bitops_cr']:.1f}×, CR "
            f"{run['cr']:.1f}×. Files: <a href='chain.yaml'>chain.yaml</a>, "
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
    return "<h3>What the search cost</h3>" + _table(cost) + text


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
    budget_cols = [c for c in t.budget.columns if c.startswith("bitops_cr@")]
    tables = ("<h3>Best test BitOpsCR within a validation-drop budget</h3>"
              + _table(t.budget[["order", "kind", "points"] + budget_cols]
                       if not t.budget.empty else t.budget, "{:.4g}")
              + "<h3>The paper's claims</h3>" + _table(t.claims)
              + "<h3>Goal budgets</h3>" + _table(t.goals, "{:.4g}")
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
