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


def _where(d: dict[str, Any]) -> str:
    """Which runtime(s) and CPU the figures are for (older deploy.json: onnxruntime only)."""
    m = d["machine"]
    if "runtimes" not in m:
        return (f"model.onnx vs the fp32 baseline's ONNX, onnxruntime {m['onnxruntime']}, this "
                f"CPU: {m['cpu']}, {m['cores']} cores, best of threads {m['threads']}")
    from seqsearch.deploy.machine import label

    s = d["speedup"]
    versions = ", ".join(f"{r} {v}" for r, v in m["runtimes"].items() if v)
    base1, base64 = s.get("baseline_runtime_batch1"), s.get("baseline_runtime_batch64")
    return (f"model.onnx on its best runtime, {d['runtime']}, vs the fp32 baseline's ONNX on "
            f"its best runtime ({base1} at batch 1, {base64} at batch 64; model at batch 64 "
            f"on {s.get('runtime_batch64')}); {label(m)}; {versions}; best of threads "
            f"{m['threads']}, {m.get('rounds', 1)} alternating rounds")


def _per_runtime(d: dict[str, Any]) -> str:
    per = d.get("runtimes")
    if not isinstance(per, dict) or len(per) < 2:
        return ""
    parts = [f"{r}: {float(b['speedup']['batch1']):.2f}× / {float(b['speedup']['batch64']):.2f}× "
             f"against its own fp32 run, {100 * b['accuracy']['identical_predictions']:.2f} % "
             "identical" for r, b in per.items()]
    return " Per runtime (batch 1 / batch 64): " + "; ".join(parts) + "."


def deploy_text(out_dir: Path) -> str:
    """The paragraph in plain text (summary.md), or "" when not measured."""
    d = deploy_figures(out_dir)
    if d is None:
        return ""
    s, a, z = d["speedup"], d["accuracy"], d["size"]
    theory = ""
    if d.get("bitops_cr") is not None and d.get("cr") is not None:
        theory = (f"BitOpsCR {ratio(d['bitops_cr'])} and CR {ratio(d['cr'])} are "
                  "theoretical: BitOps and parameter bits at the chosen bits. ")
    mean = (f", {float(s['batch1_mean']):.2f}× on the mean over its exits' mix"
            if "batch1_mean" in s and d["runtimes"].get(d["runtime"], {}).get("exits") else "")
    text = (
        f"{theory}Measured ({_where(d)}): speedup {float(s['batch1']):.2f}× at batch 1 "
        f"(median latency{mean}), {float(s['batch64']):.2f}× at batch 64 (images/s); file "
        f"{float(z['ratio']):.2f}× smaller ({int(z['model_bytes']):,} bytes); test accuracy "
        f"{100 * a['onnx']:.2f} % in ONNX vs {100 * a['fake_quant']:.2f} % fake-quant, "
        f"{100 * a['identical_predictions']:.2f} % identical predictions."
        f"{_per_runtime(d)} Below 8 bits no x86 kernel runs the layer faster: sub-8-bit "
        "weights are a size result (carried in int8), BitOps the theoretical one.")
    return text


def deploy_html(out_dir: Path) -> str:
    text = deploy_text(out_dir)
    if not text:
        return ""
    return (f"<p><b>Real cost (deployed):</b> {html.escape(text)} "
            "<a href='deploy.json'>deploy.json</a>, <code>model.onnx</code>.</p>")
