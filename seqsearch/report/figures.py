"""Plotly figures built from the report's tables (data first, figure second)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from seqsearch.errors import first_line

NEEDS_BROWSER = ("PNGs need a headless browser: apt-get install chromium, or run "
                 "kaleido_get_chrome where a network is available")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def pareto_figure(points: pd.DataFrame, first: str, second: str, verdict: str,
                  base_val: float | None = None, budgets: Sequence[float] = (),
                  exported: tuple[float, float, str] | None = None) -> go.Figure:
    """Both orders of a pair: every point (one trace per seed, so a reader can toggle seeds),
    each order's front as a line, the baseline's validation accuracy, a dashed line per
    accuracy-drop budget, and the exported chain as a star."""
    fig = go.Figure()
    for color, order in zip(COLORS, (first, second), strict=False):
        part = points[points["order"] == order]
        seeds = sorted(part["seed"].unique()) if "seed" in part else [None]
        for seed in seeds:
            sub = part if seed is None else part[part["seed"] == seed]
            fig.add_trace(go.Scatter(
                x=sub["val_bitops_cr"], y=100 * sub["val_accuracy"], mode="markers",
                name=f"{order} seed {seed}" if seed is not None else f"{order} points",
                legendgroup=f"{order}-seed-{seed}",
                marker={"color": color, "opacity": 0.45, "size": 7,
                        "symbol": ("circle", "square", "diamond", "cross")[
                            seeds.index(seed) % 4]}))
        front = part[part["on_front"]].sort_values("val_bitops_cr")
        fig.add_trace(go.Scatter(x=front["val_bitops_cr"], y=100 * front["val_accuracy"],
                                 mode="lines+markers", name=f"{order} front",
                                 line={"color": color, "shape": "hv"}))
    if base_val is not None:
        fig.add_hline(y=100 * base_val, line={"color": "#333", "width": 1},
                      annotation_text="baseline", annotation_position="top left")
        for b in budgets:
            fig.add_hline(y=100 * base_val - b, line={"color": "#888", "width": 1, "dash": "dash"},
                          annotation_text=f"−{b:g} pt", annotation_position="bottom left")
    if exported is not None:
        cr, acc, chain = exported
        fig.add_trace(go.Scatter(x=[cr], y=[100 * acc], mode="markers+text",
                                 name=f"exported {chain}", text=[chain],
                                 textposition="top center",
                                 marker={"symbol": "star", "size": 16, "color": "#ff7f0e",
                                         "line": {"color": "#333", "width": 1}}))
    fig.update_layout(title=f"{first} vs {second}: {verdict}",
                      xaxis={"title": "BitOpsCR (validation, log)", "type": "log"},
                      yaxis={"title": "validation accuracy (%)"}, template="plotly_white",
                      width=720, height=480)
    return fig


def ranking_figure(ranking: Sequence[dict[str, Any]], proposed: Sequence[str]) -> go.Figure:
    """The brute force's orders by rank, each with its rank's bootstrap interval; filled
    markers are not distinguishable from the best, the pairwise proposal is orange."""
    rows = list(ranking)
    fig = go.Figure()
    ranks = [r["rank"] for r in rows]
    lows = [r["rank"] - (r.get("rank_interval") or [r["rank"]] * 2)[0] for r in rows]
    highs = [(r.get("rank_interval") or [r["rank"]] * 2)[1] - r["rank"] for r in rows]
    colors = ["#ff7f0e" if r["order"] in proposed else "#1f77b4" for r in rows]
    fig.add_trace(go.Scatter(
        x=ranks, y=[r["order"] for r in rows], mode="markers", name="rank (interval)",
        error_x={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows},
        marker={"size": 10, "color": colors,
                "symbol": ["circle" if r.get("in_top_set") else "circle-open" for r in rows]},
        text=[f"HV {r['hypervolume']:.4f}, p vs best {r.get('p_vs_best', 1.0):.2g}"
              for r in rows], hoverinfo="text+y"))
    names = [r["order"] for r in rows]
    fig.update_layout(title="brute force: every order's rank<br><sup>orange: proposed by the "
                            "pairwise method; filled: not distinguishable from the best</sup>",
                      xaxis={"title": "rank (1 = best), bootstrap interval over units"},
                      yaxis={"autorange": "reversed", "type": "category", "tickmode": "array",
                             "tickvals": names, "ticktext": names},
                      template="plotly_white", width=720, height=max(360, 24 * len(rows) + 140))
    return fig


def dag_figure(letters: list[str], edges: pd.DataFrame, orders: list[str],
               undecided: list[str] | None = None,
               equivalent: list[str] | None = None) -> go.Figure:
    """Stages on a circle; an arrow A→B when AB wins (decided), labelled with its p-value and
    effect (points); a dotted grey line, no arrow, for each undecided pair; a solid green line
    marked ≈ for each pair shown equivalent (no edge, by evidence)."""
    n = max(1, len(letters))
    pos = {c: (math.cos(math.pi / 2 - 2 * math.pi * i / n),
               math.sin(math.pi / 2 - 2 * math.pi * i / n)) for i, c in enumerate(letters)}
    fig = go.Figure()
    for pair in undecided or []:
        (x0, y0), (x1, y1) = pos[pair[0]], pos[pair[1]]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text",
                                 text=f"{pair}: undecided", showlegend=False,
                                 line={"color": "#bbb", "dash": "dot", "width": 1.5}))
    for pair in equivalent or []:
        (x0, y0), (x1, y1) = pos[pair[0]], pos[pair[1]]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text",
                                 text=f"{pair}: either order", showlegend=False,
                                 line={"color": "#2ca02c", "width": 2}))
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, showarrow=False, text="≈",
                           bgcolor="white", font={"size": 16, "color": "#2ca02c"})
    for _, e in edges.iterrows():
        (x0, y0), (x1, y1) = pos[e["from"]], pos[e["to"]]
        fig.add_annotation(x=x0 + 0.85 * (x1 - x0), y=y0 + 0.85 * (y1 - y0),
                           ax=x0 + 0.15 * (x1 - x0), ay=y0 + 0.15 * (y1 - y0),
                           xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=3, arrowsize=1.5, arrowwidth=2, arrowcolor="#555")
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, showarrow=False,
                           text=f"p {e['p_value']:.2g}, {e['margin']:.2f} pt",
                           bgcolor="white", font={"size": 11})
    fig.add_trace(go.Scatter(x=[pos[c][0] for c in letters], y=[pos[c][1] for c in letters],
                             mode="markers+text", text=letters, textfont={"size": 20},
                             marker={"size": 46, "color": "#dbe9f6",
                                     "line": {"color": "#1f77b4", "width": 2}},
                             showlegend=False))
    shown = ", ".join(orders[:4]) + (f" … ({len(orders)} in all)" if len(orders) > 4 else "")
    fig.update_layout(title=f"order DAG (arrow: decided, p-value and effect; ≈: either "
                            f"order; dotted: undecided)<br>orders: {shown or 'none'}",
                      xaxis={"visible": False, "range": [-1.5, 1.5]},
                      yaxis={"visible": False, "range": [-1.5, 1.5]},
                      template="plotly_white", width=560, height=560)
    return fig


def trajectory_figure(traj: pd.DataFrame, chain: str) -> go.Figure:
    labels = ["baseline"] + [f"+{o[-1]}" for o in traj["order"].iloc[1:]]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=labels, y=100 * traj["test_accuracy"], mode="lines+markers",
                             name="test accuracy (%)", yaxis="y"))
    fig.add_trace(go.Scatter(x=labels, y=traj["bitops_cr"], mode="lines+markers",
                             name="BitOpsCR (test)", yaxis="y2"))
    fig.update_layout(title=f"per-stage trajectory of the tuned chain {chain}",
                      yaxis={"title": "test accuracy (%)"},
                      yaxis2={"title": "BitOpsCR", "type": "log", "overlaying": "y",
                              "side": "right"},
                      template="plotly_white", width=720, height=440)
    return fig


def tuning_figure(tuning: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    if not tuning.empty:
        for feasible, color, name in ((True, "#2ca02c", "feasible"),
                                      (False, "#999", "infeasible / pruned / failed")):
            part = tuning[tuning["feasible"] == feasible]
            y = part.get("val_bitops_cr")
            fig.add_trace(go.Scatter(x=part["number"], y=y, mode="markers", name=name,
                                     marker={"color": color, "size": 9}))
        fig.add_trace(go.Scatter(x=tuning["number"], y=tuning["best_feasible_so_far"],
                                 mode="lines", name="best feasible so far",
                                 line={"shape": "hv", "color": "#1f77b4"}))
    fig.update_layout(title="tuning history (validation BitOpsCR per trial)",
                      xaxis={"title": "trial"}, yaxis={"title": "BitOpsCR", "type": "log"},
                      template="plotly_white", width=720, height=440)
    return fig


def tuning_pareto_figure(tuning: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    if not tuning.empty and "val_accuracy" in tuning:
        done = tuning[tuning["state"] == "COMPLETE"]
        fig.add_trace(go.Scatter(x=done["val_bitops_cr"], y=100 * done["val_accuracy"],
                                 mode="markers", text=done["chain"], name="trials"))
    fig.update_layout(title="tuning trials: accuracy vs BitOpsCR (validation)",
                      xaxis={"title": "BitOpsCR", "type": "log"},
                      yaxis={"title": "validation accuracy (%)"}, template="plotly_white",
                      width=720, height=440)
    return fig


def speed_figure(table: pd.DataFrame, rho: float | None) -> go.Figure:
    """BitOpsCR against measured speed-up, one marker per timed network."""
    fig = go.Figure()
    if not table.empty:
        for feasible, color, name in ((True, "#2ca02c", "feasible"),
                                      (False, "#999", "infeasible")):
            part = table[table["feasible"] == feasible]
            fig.add_trace(go.Scatter(x=part["val_bitops_cr"], y=part["speedup"],
                                     mode="markers", name=name, text=part["chain"],
                                     marker={"color": color, "size": 9}))
    corr = "n/a" if rho is None else f"{rho:+.2f}"
    fig.update_layout(title=f"BitOpsCR vs measured batch-1 speed-up (Spearman rho {corr})",
                      xaxis={"title": "BitOpsCR (validation)", "type": "log"},
                      yaxis={"title": "speed-up over the fp32 baseline", "type": "log"},
                      template="plotly_white", width=720, height=440)
    return fig


def write_plotly_js(folder: Path) -> Path:
    """plotly.min.js once per folder of reports (no network needed to view them); rewritten
    only when its content changes."""
    from plotly.offline import get_plotlyjs

    from seqsearch import atomic

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plotly.min.js"
    js = get_plotlyjs().encode()
    if not path.is_file() or path.stat().st_size != len(js):
        atomic.write_bytes(path, js)
    return path


def save_html(fig: go.Figure, folder: Path, name: str, js: Path) -> str:
    """A standalone HTML page of the figure that loads the shared plotly.js beside the
    report folder."""
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"{name}.html"
    src = os.path.relpath(js, folder).replace(os.sep, "/")
    fig.write_html(html, include_plotlyjs=src, full_html=True, div_id=name)  # stable ids
    stale = folder / "plotly.min.js"  # the per-folder copy older reports carried
    if stale.is_file():
        stale.unlink()
    return html.name


def inline_html(fig: go.Figure, name: str) -> str:
    """The figure as a div for a page that already loads plotly.js, at the page's width."""
    wide = go.Figure(fig)
    height = int(wide.layout.height or 480)
    wide.update_layout(width=None, autosize=True)
    return str(wide.to_html(full_html=False, include_plotlyjs=False, div_id=name,
                            default_width="100%", default_height=f"{height}px",
                            config={"responsive": True}))


def save_pngs(figs: list[tuple[go.Figure, Path]], timeout: float = 120.0) -> str | None:
    """All PNGs in one kaleido session (one headless browser); returns a problem or None."""
    if not figs:
        return None
    try:
        import kaleido
    except ImportError:
        return (f"PNGs skipped: kaleido is not installed ({NEEDS_BROWSER}); "
                "the HTML figures are written")

    jobs = [{"fig": fig.to_dict(), "path": str(path),
             "opts": {"format": "png", "width": fig.layout.width, "height": fig.layout.height}}
            for fig, path in figs]
    try:
        kaleido.write_fig_from_object_sync(jobs, kopts={"timeout": timeout})
    except Exception as exc:  # noqa: BLE001 - no browser for kaleido: the HTML still stands
        if type(exc).__name__ == "ChromeNotFoundError":
            return (f"PNGs skipped: kaleido found no Chromium or Chrome ({NEEDS_BROWSER}); "
                    "the HTML figures are written")
        first = first_line(exc, 160)
        return f"PNGs not written ({type(exc).__name__}: {first}); the HTML figures are written"
    missing = [str(p) for _, p in figs if not p.is_file()]
    return f"PNGs missing: {', '.join(missing)}" if missing else None
