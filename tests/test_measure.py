"""Batch-1 timing cycles over real images, the same for every file (deploy/measure.py)."""

from __future__ import annotations

import numpy as np

from seqsearch.deploy import runtimes
from seqsearch.deploy.measure import BenchSettings, Entry, batch1_inputs, measure_alternately


def test_batch1_inputs_spread_over_a_class_ordered_split():
    images = np.repeat(np.arange(10, dtype=np.float32), 50)[:, None, None, None]  # 10 classes
    ones = batch1_inputs(images, 20)
    assert len(ones) == 20 and all(x.shape == (1, 1, 1, 1) for x in ones)
    assert {float(x[0, 0, 0, 0]) for x in ones} == set(range(10))  # every class, not the first
    assert len(batch1_inputs(images[:5], 100)) == 5


def test_every_file_is_timed_at_batch_1_on_the_same_images_in_the_same_order(tmp_path,
                                                                              monkeypatch):
    seen: dict[str, list[float]] = {}

    def runner(runtime, path, threads, batch):
        def run(x):
            if batch == 1:
                seen.setdefault(path.name, []).append(float(x[0, 0, 0, 0]))
        return run

    monkeypatch.setattr(runtimes, "runner", runner)
    files = []
    for name in ("baseline.onnx", "model.onnx"):
        (tmp_path / name).write_bytes(b"x")
        files.append(Entry("onnxruntime", name.split(".")[0], tmp_path / name))
    images = np.arange(40, dtype=np.float32)[:, None, None, None]
    settings = BenchSettings(threads=(1,), batch1_runs=30, batch64_runs=3, warmup=2,
                             rounds=3, batch1_images=8)
    measure_alternately(files, images, settings)
    assert seen["baseline.onnx"] == seen["model.onnx"]
    assert len(set(seen["model.onnx"])) == 8  # one model call per image, cycling


def test_best_pairs_report_the_mean_beside_the_median():
    from seqsearch.deploy.command import best_of

    def runs(median: float, mean: float, ips: float) -> dict:
        return {"by_threads": {"1": {"batch1_median_ms": median, "batch1_mean_ms": mean,
                                     "batch64_images_per_s": ips}}}

    per = {"onnxruntime": {"runs": {"baseline": runs(0.2, 0.2, 100.0),
                                    "model": runs(0.1, 0.16, 150.0)}}}
    b1 = best_of(per, "batch64_images_per_s")["batch1"]
    assert b1["speedup"] == 2.0  # the median: most images leave at the first exit
    assert b1["speedup_mean"] == 1.25  # the mean weighs the late exits in
