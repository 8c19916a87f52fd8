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


def pinned_policy(cfg: RunSection, out_dir: Path,
                  threads: Sequence[int | None] | None = None) -> dict[str, Any]:
    """The precision and memory format the study's numbers ran under, as explicit settings:
    from environment.json where the study recorded them, else `train` resolved here (said).
    `threads` (the baseline's, then each stage's, as trained) are pinned where all are known:
    one count when they agree, else the list."""
    from seqsearch.environment import recorded_policy
    from seqsearch.precision import policy_settings, resolve_policy
    from seqsearch.train import resolve_device

    kept = recorded_policy(out_dir)
    out: dict[str, Any]
    if kept is not None:
        out = {**kept, "recorded_from": "environment.json"}
    else:
        policy = resolve_policy(cfg.train.precision, cfg.train.memory_format,
                                resolve_device(cfg.device))
        out = {**policy_settings(policy),
               "recorded_from": "resolved at export (the study recorded none)"}
    if threads and all(t is not None for t in threads):
        counts = [int(t) for t in threads if t is not None]
        out["threads"] = counts[0] if len(set(counts)) == 1 else counts
    return out


def chain_document(cfg: RunSection, steps: Sequence[tuple[str, Mapping[str, Any]]],
                   metrics: Mapping[str, float], *, name: str, output: str | None = None,
                   policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A chain file: model, data, train, seed, bits, every stage with every param filled in,
    library versions, and the test metrics it reached (`accuracy`, `bitops_cr`, `cr`).

    `policy` pins the precision and memory format the figures were measured under, so that
    `seqsearch apply` reproduces them on a machine where `train.precision: auto` means
    something else (bf16 on a CPU with AMX, fp32 on one without); `train` keeps the
    study's own settings, which decide the baseline's cache key."""
    doc = {
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
    if policy is not None:
        doc["policy"] = dict(policy)
    return doc


def write_chain(path: Path, doc: Mapping[str, Any]) -> None:
    atomic.write_bytes(path, yaml.safe_dump(dict(doc), sort_keys=False).encode())
