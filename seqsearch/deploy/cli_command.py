"""`seqsearch bench-model`: argument parsing and the printed summary (the work is in
command.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from seqsearch.errors import SeqsearchError

RUNTIME_CHOICES = ("onnxruntime", "openvino", "all")


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of thread counts") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts must be at least 1")
    return values


def add_parser(sub: Any, name: str = "bench-model") -> None:
    """Register the command as `name`: `seqsearch bench-model`, and `model` under `bench`."""
    p = sub.add_parser(name, help="measure the exported model (model.onnx) against "
                       "the fp32 baseline in onnxruntime and OpenVINO: latency, images/s, size, "
                       "accuracy")
    p.add_argument("path", help="a study folder with chain.yaml and model.pt (writes "
                   "deploy.json, adds real_cost to chain.yaml), or an .onnx file")
    p.add_argument("--baseline", help="with an .onnx file: a baseline .onnx to compare with")
    p.add_argument("--threads", dest="ort_threads", type=_threads, help="comma list of "
                   "intra-op thread counts (default: 1 and all cores)")
    p.add_argument("--runtime", default="all", choices=RUNTIME_CHOICES,
                   help="runtime(s) to measure in (default all: every one installed; each "
                   "file against the fp32 baseline in the same runtime, timed alternately)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per thread count "
                   "(default 3; each figure is the median over the rounds' samples)")
    p.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per setting "
                   "(default 300; batch 64 gets a fifteenth)")
    p.add_argument("--reexport", action="store_true", help="write model.onnx again from model.pt")
    p.add_argument("--requant", action="store_true", help="re-export model.onnx with an 8-bit "
                   "output requantisation on every quantized conv whose output is not quantized "
                   "next (all convs integer: faster, no longer exact)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_model)


def cmd_bench_model(args: argparse.Namespace) -> int:
    from seqsearch.deploy.command import bench_file, bench_folder
    from seqsearch.deploy.measure import BenchSettings, default_threads

    if args.runs < 1:
        raise SeqsearchError(f"--runs {args.runs}: must be at least 1")
    if args.rounds < 1:
        raise SeqsearchError(f"--rounds {args.rounds}: must be at least 1")
    settings = BenchSettings(threads=args.ort_threads or default_threads(),
                             batch1_runs=args.runs, batch64_runs=max(3, args.runs // 15),
                             rounds=args.rounds)
    path = Path(args.path)
    if path.suffix == ".onnx":
        if (path.parent / "chain.yaml").is_file() and path.name == "model.onnx" \
                and args.baseline is None:
            path = path.parent
        else:
            result = bench_file(path, Path(args.baseline) if args.baseline else None, settings,
                                runtime=args.runtime)
            print(json.dumps(result) if args.json else _file_lines(result))
            return 0
    if not path.is_dir():
        raise SeqsearchError(f"{path}: no such study folder or .onnx file")
    result = bench_folder(path, settings, runtime=args.runtime, reexport=args.reexport,
                          requant=args.requant)
    print(json.dumps(result) if args.json else _folder_lines(result, path))
    return 0


def _runs_lines(per: dict[str, Any]) -> list[str]:
    lines = [f"{'runtime':<12}{'file':<10}{'threads':>8}{'b1 median ms':>14}{'b1 p90 ms':>11}"
             f"{'b64 img/s':>11}{'bytes':>11}"]
    for runtime, block in per.items():
        for label, r in block["runs"].items():
            for t, v in r["by_threads"].items():
                lines.append(f"{runtime:<12}{label:<10}{t:>8}{v['batch1_median_ms']:>14.3f}"
                             f"{v['batch1_p90_ms']:>11.3f}{v['batch64_images_per_s']:>11.0f}"
                             f"{r['size_bytes']:>11}")
    return lines


def _machine_line(m: dict[str, Any]) -> str:
    from seqsearch.deploy.machine import label

    versions = ", ".join(f"{r} {v}" for r, v in m["runtimes"].items() if v)
    return f"machine: {label(m)}; {versions}; {m['rounds']} alternating rounds"


def _best_line(b: dict[str, Any]) -> str:
    b1, b64 = b["batch1"], b["batch64"]
    return (f"best: model on {b1['model']['runtime']} ({b1['model']['threads']} thr) vs fp32 "
            f"baseline on {b1['baseline']['runtime']} ({b1['baseline']['threads']} thr) batch 1 "
            f"{b1['speedup']:.2f}x"
            + (f" (mean latency {b1['speedup_mean']:.2f}x)" if "speedup_mean" in b1 else "")
            + f"; batch 64: model on {b64['model']['runtime']} vs baseline on "
            f"{b64['baseline']['runtime']} {b64['speedup']:.2f}x")


def _file_lines(result: dict[str, Any]) -> str:
    lines = [_machine_line(result["machine"]), *_runs_lines(result["runtimes"])]
    for runtime, block in result["runtimes"].items():
        if "speedup" in block:
            s = block["speedup"]
            lines.append(f"{runtime}: model vs baseline (best thread counts) batch 1 "
                         f"{s['batch1']:.2f}x, batch 64 {s['batch64']:.2f}x")
    if "best" in result:
        lines.append(_best_line(result["best"]))
    return "\n".join([*lines, result["note"]])


def _folder_lines(r: dict[str, Any], folder: Path) -> str:
    z = r["size"]
    lines = [_machine_line(r["machine"]), *_runs_lines(r["runtimes"])]
    for runtime, block in r["runtimes"].items():
        s, a, g = block["speedup"], block["accuracy"], block["graph"]
        lines.append(f"{runtime} {block['version']}: model vs fp32 baseline (best thread "
                     f"counts) batch 1 {s['batch1']:.2f}x, batch 64 {s['batch64']:.2f}x; "
                     f"test accuracy ONNX {100 * a['onnx']:.2f} %, fp32 baseline "
                     f"{100 * a['baseline_onnx']:.2f} %; identical predictions to the "
                     f"fake-quant model {100 * a['identical_predictions']:.2f} %")
        for t, v in s.get("same_threads", {}).items():
            lines.append(f"  at {t} thread(s) each: batch 1 {v['batch1']:.2f}x, batch 64 "
                         f"{v['batch64']:.2f}x")
        if "identical_predictions_without_int8_kernels" in a:
            lines.append("  same file without int8 kernels: identical predictions "
                         f"{100 * a['identical_predictions_without_int8_kernels']:.2f} %")
        mode = a.get("avx2_mode") or "dynamic"
        how = "" if mode == "dynamic" else f"; batch {mode}"
        if "identical_predictions_avx2_kernels" in a:
            lines.append("  with oneDNN limited to AVX2 (a CPU without VNNI; int8 kernels "
                         f"{', '.join(a['avx2_kernels']) or 'none'}{how}): identical "
                         f"predictions {100 * a['identical_predictions_avx2_kernels']:.2f} %")
        elif "avx2_mode" in a:
            lines.append(f"  with oneDNN limited to AVX2 (a CPU without VNNI): did not run: {mode}")
        lines.append(f"  executed: integer {g['integer'] or 'none'}, float conv/matmul "
                     f"{g['float'] or 'none'}"
                     + (f", kernels {g['kernels']}" if g.get("kernels") else ""))
        if block.get("exits"):
            e = block["exits"]
            parts = [f"{k} {v['median_ms']:.3f} ms ({100 * v['share_of_test_images']:.0f} % "
                     "of test images)" for k, v in e.items() if k != "threads"]
            lines.append(f"  batch-1 cost by exit taken ({e['threads']} thread(s)): "
                         + ", ".join(parts))
    lines.append(f"{_best_line(r['best'])}; file {z['ratio']:.2f}x smaller "
                 f"({z['model_bytes']} vs {z['baseline_bytes']} bytes)")
    lines.extend(f"not exact / not lowered: {n}" for n in r["lowering_notes"])
    if r.get("bitops_cr") is not None:
        lines.append(f"BitOpsCR {r['bitops_cr']:.1f}x and CR {r['cr']:.1f}x are theoretical "
                     "(bits as chosen); the figures above are this CPU and these runtimes")
    lines.append(f"written: {folder}/deploy.json, real_cost in chain.yaml")
    return "\n".join(lines)
