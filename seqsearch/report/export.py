"""Export a chain in the format `seqsearch apply` reads, with seeds, versions and metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from seqsearch import atomic
from seqsearch.config import RunSection


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("seqsearch", "torch", "torchvision", "torch-pruning", "optuna"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def chain_document(cfg: RunSection, steps: Sequence[tuple[str, Mapping[str, Any]]],
                   metrics: Mapping[str, float], *, name: str, output: str | None = None
                   ) -> dict[str, Any]:
    """A chain file: model, data, train, seed, bits, every stage with every param filled in,
    library versions, and the test metrics it reached (`accuracy`, `bitops_cr`, `cr`)."""
    return {
        "version": 1,
        "name": name,
        "output": output if output is not None else cfg.output,
        "seed": cfg.seed,
        "device": cfg.device,
        "model": cfg.model.model_dump(),
        "data": cfg.data.model_dump(),
        "train": cfg.train.model_dump(),
        "first_last_bits": list(cfg.first_last_bits),
        "stages": [{"stage": stage, "params": dict(params)} for stage, params in steps],
        "metrics": {k: float(v) for k, v in metrics.items()},
        "versions": library_versions(),
    }


def write_chain(path: Path, doc: Mapping[str, Any]) -> None:
    atomic.write_bytes(path, yaml.safe_dump(dict(doc), sort_keys=False).encode())
