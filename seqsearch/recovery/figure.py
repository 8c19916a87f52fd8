"""The recovery figure: each stage's drop against SGD steps (seed mean; bars: the seeds'
range; ring: the knee), one panel per stage, each with its own scale (a scratch student or
exit heads sit points away from a fine-tune). Drawn from `analysis.analyse`'s rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots


def panel_title(name: str, stage: Mapping[str, Any]) -> str:
    what = "exit heads' mean accuracy" if stage.get("metric") == "exit heads" else "accuracy"
    return f"{stage['letter']} {name}: {what}"


def recovery_figure(stages: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """`stages` as `analysis.analyse` returns it."""
    names = list(stages)
    cols = min(2, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.1,
                        vertical_spacing=0.3 / rows,
                        subplot_titles=[panel_title(n, stages[n]) for n in names] or None)
    colors = qualitative.Plotly
    steps_seen: list[int] = []
    for i, name in enumerate(names):
        s = stages[name]
        row, col = i // cols + 1, i % cols + 1
        color = colors[i % len(colors)]
        points = [r for r in s["curve"] if "drop" in r]
        steps_seen += [r["steps"] for r in points]
        fig.add_trace(go.Scatter(
            x=[r["steps"] for r in points], y=[r["drop"] for r in points],
            mode="lines+markers", name=f"{s['letter']} {name}", line={"color": color},
            error_y={"type": "data", "symmetric": False,
                     "array": [r["drop_max"] - r["drop"] for r in points],
                     "arrayminus": [r["drop"] - r["drop_min"] for r in points]},
            customdata=[[r["epochs"], r["seeds"]] for r in points],
            hovertemplate="%{x} steps (%{customdata[0]} epochs): drop %{y:.2f} pt, mean of "
                          "%{customdata[1]} seed(s)<extra></extra>"), row=row, col=col)
        k = s.get("knee")
        if k:
            fig.add_trace(go.Scatter(
                x=[k["steps"]], y=[k["drop"]], mode="markers", showlegend=False,
                name=f"{s['letter']} knee", hovertemplate="knee: %{x} steps, drop %{y:.2f} "
                "pt<extra></extra>", marker={"symbol": "circle-open", "size": 18,
                                             "color": color, "line": {"width": 2}}),
                row=row, col=col)
        fig.add_hline(y=0, line={"color": "#333", "width": 1}, row=row, col=col)
        fig.update_yaxes(title_text="drop vs baseline (pt)" if col == 1 else None,
                         row=row, col=col)
    log = bool(steps_seen) and min(steps_seen) > 0
    fig.update_xaxes(type="log" if log else "linear")
    for col in range(1, cols + 1):
        fig.update_xaxes(title_text="SGD steps" + (" (log)" if log else ""), row=rows, col=col)
    fig.update_layout(title=title, template="plotly_white", showlegend=False,
                      width=900, height=120 + 300 * rows)
    return fig
