"""Measured batch-1 speed-up of a tuning trial's model (`tune.objective: latency | both`):
the model lowered to ONNX and timed on `tune.runtime` beside the fp32 baseline, alternately,
in one process.

Trials that differ only in training give the same network to run: the result is cached by the
network's structure — every conv/linear layer's shape, stride, padding, groups and bits, the
exit points and policy — in memory and in a JSON file of the study folder, so a trial that
lowers to a network already measured costs no timing. (With exits, how many images leave
early depends on the weights too: the cached figure is that of the first trial measured with
that structure and τ.)"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqsearch import atomic


def structure_key(model: nn.Module, input_shape: tuple[int, ...], runtime: str) -> str:
    """A hash of what decides the lowered network's speed: layer shapes and bits, exits."""
    parts: list[Any] = [runtime, list(input_shape)]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            parts.append(["conv", list(m.weight.shape), list(m.stride), str(m.padding),
                          list(m.dilation), m.groups, m.bias is not None,
                          getattr(m, "weight_bits", 32), getattr(m, "act_bits", 32)])
        elif isinstance(m, nn.Linear):
            parts.append(["linear", list(m.weight.shape), getattr(m, "weight_bits", 32),
                          getattr(m, "act_bits", 32)])
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            parts.append(["bn", m.num_features])
        points = getattr(m, "points", None)
        policy = getattr(m, "policy", None)
        if points is not None and policy is not None:
            parts.append(["exits", list(points), policy.criterion, float(policy.threshold)])
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


class LatencyMeter:
    """Speed-up of a compressed model over the baseline at batch 1 on one runtime.

    The baseline is exported once; each new structure is exported, then both files are timed
    in `rounds` alternating rounds over `images` (one image per call, cycling, so exits see
    real samples); the figure is baseline median / model median."""

    def __init__(self, baseline: nn.Module, images: torch.Tensor, *, runtime: str,
                 cache_file: Path | None = None, runs: int = 60, rounds: int = 3) -> None:
        from seqsearch.deploy.onnx_export import export_float

        self.runtime = runtime
        self.images = images[:8].detach().cpu().float()
        self.calibration = images[:256].detach().cpu().float()
        self.input_shape = tuple(self.images.shape[1:])
        self.cache_file = cache_file
        self.runs, self.rounds = runs, rounds
        self.measured = 0  # timings run by this meter (cache misses)
        self._dir = tempfile.TemporaryDirectory(prefix="seqsearch-latency-")
        self.baseline_path = Path(self._dir.name) / "baseline.onnx"
        export_float(baseline, self.input_shape, self.baseline_path)
        self.cache: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, key: str, entry: dict[str, Any]) -> None:
        if self.cache_file is None:
            return
        merged = {**self._read(), key: entry}  # other workers' entries kept
        atomic.write_json(self.cache_file, merged)

    def speedup(self, model: nn.Module) -> dict[str, Any]:
        """{"speedup", "model_ms", "baseline_ms", "runtime", "key", "cached"}."""
        key = structure_key(model, self.input_shape, self.runtime)
        if key not in self.cache:
            self.cache.update(self._read())
        if key in self.cache:
            return {**self.cache[key], "key": key, "cached": True}
        try:
            entry = self._measure(model)
        except Exception as exc:  # noqa: BLE001 - export or runtime failure: this trial fails
            from seqsearch.errors import SeqsearchError, first_line

            raise SeqsearchError(f"latency: cannot lower or time this model on "
                                 f"{self.runtime}: {type(exc).__name__}: {first_line(exc)}"
                                 ) from None
        self.cache[key] = entry
        self._write(key, entry)
        self.measured += 1
        return {**entry, "key": key, "cached": False}

    def _measure(self, model: nn.Module) -> dict[str, Any]:
        from seqsearch.deploy.measure import times
        from seqsearch.deploy.onnx_export import export_compressed
        from seqsearch.deploy.runtimes import runner

        path = Path(self._dir.name) / "trial.onnx"
        export_compressed(model.cpu().float().eval(), self.calibration, path)
        runs = [runner(self.runtime, p, 1, batch=1) for p in (self.baseline_path, path)]
        xs = [np.ascontiguousarray(self.images[i:i + 1].numpy())
              for i in range(len(self.images))]
        samples: list[list[float]] = [[], []]
        per_image = max(1, self.runs // (self.rounds * len(xs)))
        for _ in range(self.rounds):
            for i, run in enumerate(runs):
                for x in xs:
                    samples[i] += times(partial(run, x), per_image, 2)
        base_ms, model_ms = (statistics.median(s) * 1e3 for s in samples)
        return {"speedup": base_ms / model_ms, "model_ms": model_ms, "baseline_ms": base_ms,
                "runtime": self.runtime}
