"""The report's "real cost" paragraph: what `seqsearch bench-model` measured (deploy.json)
beside the theoretical BitOpsCR and CR, with what each figure means. Empty until measured."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from seqsearch.report.display import ratio


def deploy_figures(out_dir: Path) -> dict[str, Any] | None:
    """deploy.json of a study folder, or None when bench-model has not run (or it is not a
    study folder's measurement)."""
    path = out_dir / "deploy.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "speedup" in data else None


def deploy_text(out_dir: Path) -> str:
    """The paragraph in plain text (summary.md), or "" when not measured."""
    d = deploy_figures(out_dir)
    if d is None:
        return ""
    s, a, z, m = d["speedup"], d["accuracy"], d["size"], d["machine"]
    theory = ""
    if d.get("bitops_cr") is not None and d.get("cr") is not None:
        theory = (f"BitOpsCR {ratio(d['bitops_cr'])} and CR {ratio(d['cr'])} are "
                  "theoretical: BitOps and parameter bits at the chosen bits. ")
    text = (
        f"{theory}Measured (model.onnx vs the fp32 baseline's ONNX, onnxruntime "
        f"{m['onnxruntime']}, this CPU: {m['cpu']}, {m['cores']} cores, best of threads "
        f"{m['threads']}): speedup {float(s['batch1']):.2f}× at batch 1 (latency), "
        f"{float(s['batch64']):.2f}× at batch 64 (images/s); file {float(z['ratio']):.2f}× smaller "
        f"({int(z['model_bytes']):,} bytes); test accuracy {100 * a['onnx']:.2f} % in ONNX vs "
        f"{100 * a['fake_quant']:.2f} % fake-quant, {100 * a['identical_predictions']:.2f} % "
        "identical predictions. Below 8 bits no x86 kernel runs the layer faster: sub-8-bit "
        "weights are a size result (carried in int8), BitOps the theoretical one.")
    return text


def deploy_html(out_dir: Path) -> str:
    text = deploy_text(out_dir)
    if not text:
        return ""
    return (f"<p><b>Real cost (deployed):</b> {html.escape(text)} "
            "<a href='deploy.json'>deploy.json</a>, <code>model.onnx</code>.</p>")
