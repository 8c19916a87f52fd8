"""What `seqsearch export` adds (model.onnx) and what `seqsearch bench-model` does: the
exported network and the fp32 baseline, both as ONNX, measured side by side in each runtime
(onnxruntime, OpenVINO); results to deploy.json and a `real_cost` block in chain.yaml."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from seqsearch import atomic
from seqsearch.deploy import missing_line
from seqsearch.deploy.measure import (
    BenchSettings,
    Entry,
    batch1_inputs,
    best,
    measure_alternately,
    times,
)
from seqsearch.deploy.runtimes import session
from seqsearch.errors import SeqsearchError
from seqsearch.progress import note

MEANING = {
    "bitops_cr": "theoretical: BitOps of the baseline over BitOps of the compressed model at "
                 "the chosen bits (a 1-bit layer counted as 1 bit, whether or not any "
                 "hardware runs it so)",
    "cr": "parameter bits of the baseline over those of the compressed model, at the chosen "
          "bits",
    "latency": "measured: this CPU, the named runtime's CPU kernels (int8 where the runtime "
               "runs integer ops, float elsewhere; nothing on x86 runs below 8 bits), median "
               "of repeated runs in one process, the files timed alternately; batch 1 cycles "
               "over test images spread over the split (machine.batch1_images), so a model "
               "with exits is timed on its mix of exits (exits: each path alone)",
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


def _exit_cost(runtime: str, path: Path, images: np.ndarray, taken: np.ndarray, last: int,
               threads: int, settings: BenchSettings) -> dict[str, Any] | None:
    """Batch-1 latency of an image that leaves at each exit (as the fake-quant model decides)."""
    from seqsearch.deploy.runtimes import runner

    if taken.max(initial=-1) < 0:
        return None
    run = runner(runtime, path, threads, batch=1)
    out: dict[str, Any] = {"threads": threads}
    for k in sorted(set(taken.tolist())):
        idx = int(np.flatnonzero(taken == k)[0])
        one = np.ascontiguousarray(images[idx:idx + 1])
        t = np.array(times(partial(run, one), settings.batch1_runs,
                            settings.warmup)) * 1e3
        label = "full path" if k == last else f"exit {k}"
        out[label] = {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                      "share_of_test_images": float((taken == k).mean())}
    return out


def _rel(path: Path, root: Path) -> str:
    """`path` relative to `root` (the study folder), as deploy.json stores every path."""
    return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def _speedups(runs: dict[str, Any], big: str) -> dict[str, Any]:
    """Speedups of the model over the baseline in one runtime: best thread counts, and each
    thread count alike."""
    t1, base1 = best(runs["baseline"], "batch1_median_ms", True)
    m1, model1 = best(runs["model"], "batch1_median_ms", True)
    tb, base_big = best(runs["baseline"], big, False)
    mb, model_big = best(runs["model"], big, False)
    n = big.split("_")[0]
    return {"batch1": base1 / model1, "batch1_threads": {"baseline": t1, "model": m1},
            n: model_big / base_big, f"{n}_threads": {"baseline": tb, "model": mb},
            "same_threads": _same_threads(runs, big)}


def best_of(per: dict[str, Any], big: str) -> dict[str, Any]:
    """The model on its best runtime against the baseline on *its* best runtime (any thread
    count), at batch 1 (latency) and at the large batch (images/s). `runtime` is where the
    model runs fastest at batch 1. Batch 1 also gives `speedup_mean`: the same pair's mean
    latencies, which for a model with exits weigh every path by its share (where the median
    is the path most images take)."""
    def pick(label: str, key: str, low: bool) -> dict[str, Any]:
        items = [(r, t, float(v[key]), v) for r, block in per.items()
                 for t, v in block["runs"][label]["by_threads"].items()]
        r, t, value, v = (min if low else max)(items, key=lambda x: x[2])
        extra = {"batch1_mean_ms": float(v["batch1_mean_ms"])} \
            if key == "batch1_median_ms" and "batch1_mean_ms" in v else {}
        return {"runtime": r, "threads": int(t), key: value, **extra}

    m1, b1 = pick("model", "batch1_median_ms", True), pick("baseline", "batch1_median_ms", True)
    mb, bb = pick("model", big, False), pick("baseline", big, False)
    mean = ({"speedup_mean": b1["batch1_mean_ms"] / m1["batch1_mean_ms"]}
            if "batch1_mean_ms" in m1 and "batch1_mean_ms" in b1 else {})
    return {"runtime": m1["runtime"],
            "batch1": {"model": m1, "baseline": b1,
                       "speedup": b1["batch1_median_ms"] / m1["batch1_median_ms"], **mean},
            big.split("_")[0]: {"model": mb, "baseline": bb, "speedup": mb[big] / bb[big]}}


def bench_folder(folder: Path, settings: BenchSettings, *, runtime: str = "all",
                 reexport: bool = False, requant: bool = False) -> dict[str, Any]:
    """Measure a study folder's exported model against its baseline in each runtime; write
    deploy.json (a block per runtime, paths relative to the folder) and chain.yaml's
    `real_cost` (the best runtime's figures)."""
    line = missing_line("bench-model")
    if line is not None:
        raise SeqsearchError(line)
    from seqsearch.deploy import machine, runtimes
    from seqsearch.deploy.onnx_export import export_compressed, export_float, file_notes

    names = runtimes.resolve(runtime, say=lambda s: note(f"[bench-model] {s}"))
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
    per: dict[str, Any] = {}
    for r in names:
        onnx_pred = runtimes.predictions(r, onnx_path, images)
        base_pred = runtimes.predictions(r, base_path, images)
        acc: dict[str, Any] = {"test_images": len(y), "onnx": float((onnx_pred == y).mean()),
               "fake_quant": float((fq_pred == y).mean()),
               "baseline_onnx": float((base_pred == y).mean()),
               "identical_predictions": float((onnx_pred == fq_pred).mean())}
        if r == "onnxruntime":
            # the same file with onnxruntime's Q/DQ fusions off: float kernels on the
            # dequantized values, i.e. what the graph itself says
            graph_pred = runtimes.predictions(r, onnx_path, images, fuse_qdq=False)
            acc["identical_predictions_without_int8_kernels"] = float(
                (graph_pred == fq_pred).mean())
        if r == "openvino":
            # as on a CPU without VNNI: oneDNN limited to AVX2 (saturating u8 x s8 pairs)
            low = runtimes.ov_predictions_at_isa(onnx_path, images, "AVX2")
            acc["avx2_mode"] = low.mode
            if low.predictions is not None:
                acc["identical_predictions_avx2_kernels"] = float(
                    (low.predictions == fq_pred).mean())
                acc["avx2_kernels"] = low.kernels
        per[r] = {"version": runtimes.version(r), "accuracy": acc,
                  "graph": runtimes.executed(r, onnx_path, deploy_dir / "model.optimized.onnx")}
    entries = [Entry(r, label, path) for r in names
               for label, path in (("baseline", base_path), ("model", onnx_path))]
    runs = measure_alternately(entries, images, settings,
                               tick=lambda s: note(f"[bench-model] timing {s}"))
    big = f"batch{settings.large_batch}_images_per_s"
    for r in names:
        per[r]["runs"] = {label: {"file": _rel(path, folder), **runs[r][label]}
                          for label, path in (("baseline", base_path), ("model", onnx_path))}
        per[r]["speedup"] = _speedups(per[r]["runs"], big)
        m1 = per[r]["speedup"]["batch1_threads"]["model"]
        per[r]["exits"] = _exit_cost(r, onnx_path, images, taken,
                                     len(getattr(model, "heads", ())), int(m1), settings)
    top = best_of(per, big)
    n = big.split("_")[0]
    sizes = {"baseline_bytes": base_path.stat().st_size, "model_bytes": onnx_path.stat().st_size}
    result: dict[str, Any] = {
        "files": {"model": _rel(onnx_path, folder), "baseline": _rel(base_path, folder)},
        "machine": {**machine.describe({r: runtimes.version(r) for r in runtimes.RUNTIMES}),
                    "threads": list(settings.threads), "rounds": settings.rounds,
                    "batch1_images": len(batch1_inputs(images, settings.batch1_images))},
        "runtime": top["runtime"],
        "best": top,
        # the model on its best runtime against the baseline on its best runtime
        "speedup": {"batch1": top["batch1"]["speedup"], n: top[n]["speedup"],
                    **({"batch1_mean": top["batch1"]["speedup_mean"]}
                       if "speedup_mean" in top["batch1"] else {}),
                    "runtime_batch1": top["batch1"]["model"]["runtime"],
                    f"runtime_{n}": top[n]["model"]["runtime"],
                    "baseline_runtime_batch1": top["batch1"]["baseline"]["runtime"],
                    f"baseline_runtime_{n}": top[n]["baseline"]["runtime"]},
        "size": {**sizes, "ratio": sizes["baseline_bytes"] / sizes["model_bytes"]},
        "accuracy": per[top["runtime"]]["accuracy"],
        "runtimes": per,
        "lowering_notes": file_notes(onnx_path),
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


def real_cost(result: dict[str, Any]) -> dict[str, Any]:
    """The block chain.yaml carries beside `metrics`: measured cost (the model on its best
    runtime against the baseline on its best runtime) and what it means."""
    from seqsearch.deploy.machine import label

    s, a, m = result["speedup"], result["accuracy"], result["machine"]
    versions = ", ".join(f"{r} {v}" for r, v in m["runtimes"].items() if v)
    per = result.get("runtimes", {})
    return {
        "runtime": result["runtime"],
        "speedup_batch1": round(float(s["batch1"]), 3),
        **({"speedup_batch1_mean": round(float(s["batch1_mean"]), 3)}
           if "batch1_mean" in s else {}),
        "speedup_batch64": round(float(s.get("batch64", float("nan"))), 3),
        "runtime_batch64": s.get("runtime_batch64"),
        "baseline_runtime": {"batch1": s.get("baseline_runtime_batch1"),
                             "batch64": s.get("baseline_runtime_batch64")},
        "size_ratio": round(float(result["size"]["ratio"]), 3),
        "model_bytes": int(result["size"]["model_bytes"]),
        "onnx_test_accuracy": float(a["onnx"]),
        "identical_predictions": float(a["identical_predictions"]),
        "identical_predictions_by_runtime": {
            r: float(b["accuracy"]["identical_predictions"]) for r, b in per.items()},
        "measured_on": f"{label(m)}, {versions}",
        "meaning": {"bitops_cr": MEANING["bitops_cr"], "latency": MEANING["latency"]},
        "details": "deploy.json",
    }


def write_real_cost(chain: Path, result: dict[str, Any]) -> None:
    doc = yaml.safe_load(chain.read_text())
    doc["real_cost"] = real_cost(result)
    atomic.write_bytes(chain, yaml.safe_dump(doc, sort_keys=False).encode())


def bench_file(path: Path, baseline: Path | None, settings: BenchSettings, *,
               runtime: str = "all") -> dict[str, Any]:
    """Latency and size of a lone ONNX file (and of a baseline file beside it, if given), on
    random inputs of its input shape, in each runtime: no accuracy without a study folder.
    deploy.json goes beside the file, its paths relative to that folder."""
    line = missing_line("bench-model")
    if line is not None:
        raise SeqsearchError(line)
    from seqsearch.deploy import machine, runtimes

    for p in (path, baseline):
        if p is not None and not p.is_file():
            raise SeqsearchError(f"{p}: no such ONNX file")
    names = runtimes.resolve(runtime, say=lambda s: note(f"[bench-model] {s}"))
    try:
        shape = session(path, 1).get_inputs()[0].shape
    except Exception as exc:  # noqa: BLE001 - a foreign or broken file: one line
        from seqsearch.errors import first_line

        raise SeqsearchError(f"{path}: onnxruntime cannot load it ({first_line(exc)})"
                             ) from None
    dims = [d if isinstance(d, int) else 1 for d in shape[1:]]
    images = np.random.default_rng(0).standard_normal((64, *dims)).astype(np.float32)
    files = [("model", path)] + ([("baseline", baseline)] if baseline is not None else [])
    entries = [Entry(r, label, p) for r in names for label, p in files]
    measured = measure_alternately(entries, images, settings,
                                   tick=lambda s: note(f"[bench-model] timing {s}"))
    root = path.parent
    per: dict[str, dict[str, Any]] = {
        r: {"version": runtimes.version(r),
            "runs": {label: {"file": _rel(p, root), **measured[r][label]} for label, p in files}}
        for r in names}
    big = f"batch{settings.large_batch}_images_per_s"
    for r in per.values():
        if baseline is not None:
            r["speedup"] = _speedups(r["runs"], big)
    result = {"machine": {**machine.describe({r: runtimes.version(r)
                                              for r in runtimes.RUNTIMES}),
                          "threads": list(settings.threads), "rounds": settings.rounds,
                          "batch1_images": len(batch1_inputs(images,
                                                             settings.batch1_images))},
              "runtimes": per, "meaning": MEANING,
              **({"best": best_of(per, big)} if baseline is not None else {}),
              "note": "random inputs: latency and size only (no data to measure accuracy)"}
    atomic.write_json(root / "deploy.json", result)
    return result
