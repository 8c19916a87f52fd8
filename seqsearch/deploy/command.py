"""What `seqsearch export` adds (model.onnx) and what `seqsearch bench-model` does: the
exported network and the fp32 baseline, both as ONNX, measured side by side in onnxruntime;
results to deploy.json and a `real_cost` block in chain.yaml."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from seqsearch import atomic
from seqsearch.deploy import missing_line
from seqsearch.deploy.bench import BenchSettings, best, measure, predictions, session
from seqsearch.errors import SeqsearchError
from seqsearch.progress import note

MEANING = {
    "bitops_cr": "theoretical: BitOps of the baseline over BitOps of the compressed model at "
                 "the chosen bits (a 1-bit layer counted as 1 bit, whether or not any "
                 "hardware runs it so)",
    "cr": "parameter bits of the baseline over those of the compressed model, at the chosen "
          "bits",
    "latency": "measured: this CPU, onnxruntime's CPU kernels (int8 where the graph has "
               "integer ops, float elsewhere; nothing on x86 runs below 8 bits), median of "
               "repeated runs in one process",
    "size": "bytes of the ONNX file; sub-8-bit weights are carried in int8, so the file is "
            "at best 4x smaller than fp32 whatever the bits",
}


def write_model_onnx(out_dir: Path, model: nn.Module, calibration: torch.Tensor, *,
                     requant: bool = False, name: str = "model.onnx",
                     label: str = "export") -> Path | None:
    """`name` (model.onnx) in `out_dir`, beside model.pt, or one line saying why not (the
    rest of the export stands). `seqsearch export` and `seqsearch apply` both write it here."""
    line = missing_line(name)
    if line is not None:
        note(f"[{label}] {line}")
        return None
    from seqsearch.deploy.onnx_export import export_compressed

    path = out_dir / name
    try:
        info = export_compressed(model, calibration.cpu().float(), path, requant=requant)
    except Exception as exc:  # noqa: BLE001 - the float export stands; say why in one line
        from seqsearch.errors import first_line

        note(f"[{label}] {name} not written: {type(exc).__name__}: {first_line(exc)}")
        return None
    for n in info.notes:
        note(f"[{label}] {name}: {n}")
    note(f"[{label}] {path}: {info.quantized_layers} quantized layer(s), "
         f"{info.exact_layers} carried exactly; exits as If: {info.exits_as_if}")
    return path


def _load_folder(folder: Path) -> tuple[Any, Any, nn.Module, nn.Module]:
    """(chain config, data, baseline model, compressed model) of an exported study folder."""
    from seqsearch.baseline import baseline_path, build_data, build_model
    from seqsearch.chain import load_model
    from seqsearch.config import load_chain

    chain = folder / "chain.yaml"
    if not chain.is_file():
        raise SeqsearchError(f"{folder}: no chain.yaml; run 'seqsearch export' first")
    cfg = load_chain(chain)
    base_file = baseline_path(cfg, folder)
    if not base_file.is_file():
        # `seqsearch apply` keys its baseline under the pinned precision policy: a folder
        # holding a single baseline checkpoint is that chain's baseline
        found = sorted(base_file.parent.glob("*.pt")) if base_file.parent.is_dir() else []
        if len(found) != 1:
            raise SeqsearchError(f"{base_file}: no baseline checkpoint for this chain")
        note(f"[bench-model] baseline: {found[0]} (the folder's only checkpoint)")
        base_file = found[0]
    data = build_data(cfg, torch.device("cpu"))
    baseline = build_model(cfg, data)
    baseline.load_state_dict(torch.load(base_file, map_location="cpu",
                                        weights_only=True)["state_dict"])
    model = load_model(folder / "model.pt")
    return cfg, data, baseline.eval(), model.float().eval()


def _fake_quant_predictions(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, exit taken; -1 without exits) of the fake-quant model per image."""
    from seqsearch.models.multi_exit import MultiExit, exit_decisions

    with torch.no_grad():
        out = model(x)
    if isinstance(model, MultiExit):
        assert isinstance(out, list)
        taken, preds = exit_decisions(out, model.policy.threshold, model.policy.criterion)
        return preds.numpy(), taken.numpy()
    return out.argmax(1).numpy(), np.full(len(x), -1)


def _exit_cost(path: Path, images: np.ndarray, taken: np.ndarray, last: int, threads: int,
               settings: BenchSettings) -> dict[str, Any] | None:
    """Batch-1 latency of an image that leaves at each exit (as the fake-quant model decides)."""
    from seqsearch.deploy.bench import latency_ms

    if taken.max(initial=-1) < 0:
        return None
    sess = session(path, threads)
    out: dict[str, Any] = {"threads": threads}
    for k in sorted(set(taken.tolist())):
        idx = int(np.flatnonzero(taken == k)[0])
        med, p90 = latency_ms(sess, images[idx:idx + 1], settings.batch1_runs, settings.warmup)
        label = "full path" if k == last else f"exit {k}"
        out[label] = {"median_ms": med, "p90_ms": p90, "share_of_test_images":
                      float((taken == k).mean())}
    return out


def bench_folder(folder: Path, settings: BenchSettings, *, reexport: bool = False,
                 requant: bool = False) -> dict[str, Any]:
    """Measure a study folder's exported model against its baseline; write deploy.json and
    chain.yaml's `real_cost`."""
    line = missing_line("bench-model")
    if line is not None:
        raise SeqsearchError(line)
    from seqsearch.deploy.graph_pass import optimized_ops
    from seqsearch.deploy.onnx_export import export_compressed, export_float, file_notes

    cfg, data, baseline, model = _load_folder(folder)
    onnx_path = folder / "model.onnx"
    if reexport or requant or not onnx_path.is_file() or \
            onnx_path.stat().st_mtime < (folder / "model.pt").stat().st_mtime:
        note(f"[bench-model] exporting {onnx_path}")
        export_compressed(model, data.train.x[:256].cpu().float(), onnx_path,
                          requant=requant)
    deploy_dir = folder / "deploy"
    base_path = deploy_dir / "baseline.onnx"
    note(f"[bench-model] exporting the fp32 baseline to {base_path}")
    export_float(baseline, data.input_shape, base_path)
    x = data.test.x.cpu().float()
    y = data.test.y.cpu().numpy()
    images = x.numpy()
    note(f"[bench-model] predictions on {len(y)} test images")
    fq_pred, taken = _fake_quant_predictions(model, x)
    onnx_pred = predictions(onnx_path, images)
    graph_pred = predictions(onnx_path, images, fuse_qdq=False)
    base_pred = predictions(base_path, images)
    runs: dict[str, Any] = {}
    for label, path in (("baseline", base_path), ("model", onnx_path)):
        runs[label] = measure(path, images, settings,
                              tick=lambda s: note(f"[bench-model] timing {s}"))
    big = f"batch{settings.large_batch}_images_per_s"
    t1, base1 = best(runs["baseline"], "batch1_median_ms", True)
    m1, model1 = best(runs["model"], "batch1_median_ms", True)
    tb, base_big = best(runs["baseline"], big, False)
    mb, model_big = best(runs["model"], big, False)
    result: dict[str, Any] = {
        "folder": str(folder),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count(),
                    "onnxruntime": _ort_version(), "threads": list(settings.threads)},
        "runs": runs,
        "speedup": {"batch1": base1 / model1, "batch1_threads": {"baseline": t1, "model": m1},
                    f"batch{settings.large_batch}": model_big / base_big,
                    f"batch{settings.large_batch}_threads": {"baseline": tb, "model": mb},
                    "same_threads": _same_threads(runs, big)},
        "size": {"baseline_bytes": runs["baseline"]["size_bytes"],
                 "model_bytes": runs["model"]["size_bytes"],
                 "ratio": runs["baseline"]["size_bytes"] / runs["model"]["size_bytes"]},
        "accuracy": {"test_images": len(y),
                     "onnx": float((onnx_pred == y).mean()),
                     "fake_quant": float((fq_pred == y).mean()),
                     "baseline_onnx": float((base_pred == y).mean()),
                     "identical_predictions": float((onnx_pred == fq_pred).mean()),
                     # the same file with onnxruntime's Q/DQ fusions off: float kernels on
                     # the dequantized values, i.e. what the graph itself says
                     "identical_predictions_without_int8_kernels":
                         float((graph_pred == fq_pred).mean())},
        "graph": optimized_ops(str(onnx_path), str(deploy_dir / "model.optimized.onnx")),
        "lowering_notes": file_notes(onnx_path),
        "exits": _exit_cost(onnx_path, images, taken, len(getattr(model, "heads", ())),
                            int(m1), settings),
        "bitops_cr": (cfg.metrics or {}).get("bitops_cr"),
        "cr": (cfg.metrics or {}).get("cr"),
        "meaning": MEANING,
    }
    atomic.write_json(folder / "deploy.json", result)
    write_real_cost(folder / "chain.yaml", result)
    return result


def _same_threads(runs: dict[str, Any], big: str) -> dict[str, dict[str, float]]:
    """Speedups with both files at the same thread count (a shared machine makes the best-of
    comparison swing when one file happened to get the spare core)."""
    out = {}
    for t, m in runs["model"]["by_threads"].items():
        b = runs["baseline"]["by_threads"][t]
        out[t] = {"batch1": b["batch1_median_ms"] / m["batch1_median_ms"],
                  "batch64": m[big] / b[big]}
    return out


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


def real_cost(result: dict[str, Any]) -> dict[str, Any]:
    """The block chain.yaml carries beside `metrics`: measured cost and what it means."""
    s, a = result["speedup"], result["accuracy"]
    return {
        "speedup_batch1": round(float(s["batch1"]), 3),
        "speedup_batch64": round(float(s.get("batch64", float("nan"))), 3),
        "size_ratio": round(float(result["size"]["ratio"]), 3),
        "model_bytes": int(result["size"]["model_bytes"]),
        "onnx_test_accuracy": float(a["onnx"]),
        "identical_predictions": float(a["identical_predictions"]),
        "measured_on": f"{result['machine']['cpu']}, {result['machine']['cores']} cores, "
                       f"onnxruntime {result['machine']['onnxruntime']}",
        "meaning": {"bitops_cr": MEANING["bitops_cr"], "latency": MEANING["latency"]},
        "details": "deploy.json",
    }


def write_real_cost(chain: Path, result: dict[str, Any]) -> None:
    doc = yaml.safe_load(chain.read_text())
    doc["real_cost"] = real_cost(result)
    atomic.write_bytes(chain, yaml.safe_dump(doc, sort_keys=False).encode())


def bench_file(path: Path, baseline: Path | None, settings: BenchSettings) -> dict[str, Any]:
    """Latency and size of a lone ONNX file (and of a baseline file beside it, if given), on
    random inputs of its input shape: no accuracy without a study folder."""
    line = missing_line("bench-model")
    if line is not None:
        raise SeqsearchError(line)
    for p in (path, baseline):
        if p is not None and not p.is_file():
            raise SeqsearchError(f"{p}: no such ONNX file")
    try:
        shape = session(path, 1).get_inputs()[0].shape
    except Exception as exc:  # noqa: BLE001 - a foreign or broken file: one line
        from seqsearch.errors import first_line

        raise SeqsearchError(f"{path}: onnxruntime cannot load it ({first_line(exc)})"
                             ) from None
    dims = [d if isinstance(d, int) else 1 for d in shape[1:]]
    images = np.random.default_rng(0).standard_normal((64, *dims)).astype(np.float32)
    runs = {"model": measure(path, images, settings,
                             tick=lambda s: note(f"[bench-model] timing {s}"))}
    if baseline is not None:
        runs["baseline"] = measure(baseline, images, settings,
                                   tick=lambda s: note(f"[bench-model] timing {s}"))
    result = {"file": str(path), "runs": runs, "meaning": MEANING,
              "note": "random inputs: latency and size only (no data to measure accuracy)"}
    atomic.write_json(path.parent / "deploy.json", result)
    return result
