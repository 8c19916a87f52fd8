"""Measure ONNX files in their runtimes: latency at batch 1 (median, p90), images/s at batch
64, per runtime and thread count; predictions over a split; the cost of an exit that fires vs
a full pass.

Every figure is this CPU and this runtime build, one process. Files compared with each other
are timed alternately: every round times each (runtime, file) in turn, so a neighbour's load
on a shared machine falls on all of them alike; each figure is the median over the rounds'
samples. onnxruntime sessions are built with full graph optimisation and
`intra_op_num_threads` fixed (the inter-op pool unused: sequential); OpenVINO's with one
stream, the thread count fixed and fp32 float layers (runtimes.py)."""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from seqsearch.deploy.runtimes import session


@dataclass(frozen=True)
class BenchSettings:
    threads: tuple[int, ...]
    batch1_runs: int = 300
    batch64_runs: int = 20
    warmup: int = 10
    large_batch: int = 64
    rounds: int = 3
    batch1_images: int = 100  # batch 1 cycles over this many images, spread over the split


def batch1_inputs(images: np.ndarray, n: int) -> list[np.ndarray]:
    """One-image inputs spread evenly over `images` (a class-ordered split gives every class):
    batch-1 calls cycle over them, so a model with exits is timed on its real mix of exits
    and not on whichever path one image takes."""
    idx = np.unique(np.linspace(0, len(images) - 1, max(1, min(n, len(images)))).astype(int))
    return [np.ascontiguousarray(images[i:i + 1]) for i in idx]


def cycling(run: Callable[[np.ndarray], object], inputs: list[np.ndarray]
            ) -> Callable[[], object]:
    """A call of `run` on the next of `inputs`, from the first again after the last."""
    it = itertools.cycle(inputs)
    return lambda: run(next(it))


def default_threads() -> tuple[int, ...]:
    """1 and all cores (affinity-aware)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return tuple(sorted({1, max(1, cores)}))


def times(run: Callable[[], object], n: int, warmup: int) -> list[float]:
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
    t = np.array(times(_runner(sess, x), runs, warmup)) * 1e3
    return float(np.median(t)), float(np.percentile(t, 90))


@dataclass(frozen=True)
class Entry:
    """One file in one runtime, timed beside the others."""

    runtime: str
    label: str  # "baseline" or "model"
    path: Path


def measure_alternately(entries: list[Entry], images: np.ndarray, settings: BenchSettings,
                        tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Latency and throughput of every entry for every thread count, timed in
    `settings.rounds` rounds that each time every entry in turn (batch 1, then batch 64).
    Batch 1 cycles over `settings.batch1_images` images spread over `images`, each entry
    from the same first one, so every file sees the same images in the same order.
    Returns {runtime: {label: {"size_bytes", "by_threads": {t: figures}}}}."""
    from seqsearch.deploy.runtimes import runner

    ones = batch1_inputs(images, settings.batch1_images)
    reps = -(-settings.large_batch // len(images))
    big = np.ascontiguousarray(np.concatenate([images] * reps)[:settings.large_batch])
    rounds = max(1, settings.rounds)
    n1 = max(1, -(-settings.batch1_runs // rounds))
    nb = max(1, -(-settings.batch64_runs // rounds))
    key = f"batch{settings.large_batch}_images_per_s"
    out: dict[str, Any] = {}
    for e in entries:
        out.setdefault(e.runtime, {})[e.label] = {"size_bytes": e.path.stat().st_size,
                                                  "by_threads": {}}
    for t in settings.threads:
        if tick:
            tick(f"{len(entries)} file(s) x runtime, {t} thread(s), {rounds} rounds")
        small = [runner(e.runtime, e.path, t, batch=1) for e in entries]
        large = [runner(e.runtime, e.path, t, batch=settings.large_batch) for e in entries]
        t1: list[list[float]] = [[] for _ in entries]
        tb: list[list[float]] = [[] for _ in entries]
        r1: list[list[float]] = [[] for _ in entries]
        rb: list[list[float]] = [[] for _ in entries]
        for _ in range(rounds):
            for i, run in enumerate(small):
                got = times(cycling(run, ones), n1, settings.warmup)
                t1[i] += got
                r1[i].append(statistics.median(got) * 1e3)
            for i, run in enumerate(large):
                got = times(partial(run, big), nb, max(2, settings.warmup // 5))
                tb[i] += got
                rb[i].append(settings.large_batch / statistics.median(got))
        for i, e in enumerate(entries):
            ms = np.array(t1[i]) * 1e3
            out[e.runtime][e.label]["by_threads"][str(t)] = {
                "batch1_median_ms": float(np.median(ms)),
                "batch1_mean_ms": float(np.mean(ms)),  # with exits: the mix's expected cost
                "batch1_p90_ms": float(np.percentile(ms, 90)),
                key: settings.large_batch / statistics.median(tb[i]),
                "rounds": {"batch1_median_ms": r1[i], key: rb[i]}}
    return out


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
