"""Measure an ONNX model in onnxruntime: latency at batch 1 (median, p90), images/s at batch
64, per thread count; predictions over a split; the cost of an exit that fires vs a full pass.

Every figure is this CPU and this onnxruntime build, one process, sessions built with full
graph optimisation and `intra_op_num_threads` fixed (the inter-op pool unused: sequential)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BenchSettings:
    threads: tuple[int, ...]
    batch1_runs: int = 300
    batch64_runs: int = 20
    warmup: int = 10
    large_batch: int = 64


def default_threads() -> tuple[int, ...]:
    """1 and all cores (affinity-aware)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return tuple(sorted({1, max(1, cores)}))


def session(path: Path, threads: int, *, fuse_qdq: bool = True) -> Any:
    """An onnxruntime CPU session; `fuse_qdq=False` keeps Q/DQ as written (float kernels on
    dequantized values: the graph's own semantics, no integer kernels)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not fuse_qdq:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _times(run: Callable[[], object], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        out.append(time.perf_counter() - t)
    return out


def _runner(sess: Any, x: np.ndarray) -> Callable[[], object]:
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def latency_ms(sess: Any, x: np.ndarray, runs: int, warmup: int) -> tuple[float, float]:
    """(median, p90) milliseconds of one call on `x`."""
    t = np.array(_times(_runner(sess, x), runs, warmup)) * 1e3
    return float(np.median(t)), float(np.percentile(t, 90))


def measure(path: Path, images: np.ndarray, settings: BenchSettings,
            tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Latency and throughput of one file for every thread count in `settings`."""
    one = images[:1]
    reps = -(-settings.large_batch // len(images))
    big = np.concatenate([images] * reps)[:settings.large_batch]
    by_threads: dict[str, Any] = {}
    for t in settings.threads:
        if tick:
            tick(f"{path.name}, {t} thread(s)")
        sess = session(path, t)
        med, p90 = latency_ms(sess, one, settings.batch1_runs, settings.warmup)
        big_t = _times(_runner(sess, big), settings.batch64_runs, max(2, settings.warmup // 5))
        by_threads[str(t)] = {"batch1_median_ms": med, "batch1_p90_ms": p90,
                              f"batch{settings.large_batch}_images_per_s":
                                  settings.large_batch / statistics.median(big_t)}
    return {"file": str(path), "size_bytes": path.stat().st_size, "by_threads": by_threads}


def predictions(path: Path, images: np.ndarray, batch: int = 256, *, fuse_qdq: bool = True
                ) -> np.ndarray:
    """argmax of the model's logits over `images`."""
    sess = session(path, 1, fuse_qdq=fuse_qdq)
    name = sess.get_inputs()[0].name
    out = [np.asarray(sess.run(None, {name: images[i:i + batch]})[0]).argmax(axis=1)
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


def best(runs: dict[str, Any], key: str, lower_is_better: bool) -> tuple[str, float]:
    """(thread count, value) of the best figure for `key` over thread counts."""
    items = [(t, float(v[key])) for t, v in runs["by_threads"].items()]
    pick = min if lower_is_better else max
    return pick(items, key=lambda kv: kv[1])
