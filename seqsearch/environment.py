"""What a study's numbers depend on besides its file: versions, threads, device and policy.

Each step that produces numbers (baseline, probe, tune) records them in the study folder's
`environment.json` under its own name, so a verdict that differs between two machines (or
between 1 and 2 threads, or bf16 and fp32) can be traced to what differed. The policy is the
one the step's training actually ran under (`train.precision: auto` resolved on this machine).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from seqsearch import atomic
from seqsearch.precision import native_bf16, policy_settings, resolve_policy
from seqsearch.version import __version__

if TYPE_CHECKING:
    from seqsearch.config import TrainSection


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device | str | None = None,
             train: TrainSection | None = None) -> dict[str, Any]:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "seqsearch": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_name(),
        "threads": torch.get_num_threads(), "device": str(dev),
        "native_bf16": native_bf16(dev),
    }
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cap:  # the kernels this run used, when capped below what the CPU has
        info["onednn_max_cpu_isa"] = cap
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
    if train is not None:
        policy = resolve_policy(train.precision, train.memory_format, dev)
        info["policy"] = {"requested": {"precision": train.precision,
                                        "memory_format": train.memory_format},
                          **policy_settings(policy)}
        if policy.dtype is not None and dev.type == "cpu":
            info["policy"]["fp32_inside"] = (
                "fake quantizers, losses and softmaxes; strided convs with a 1-wide output "
                "(a CPU bf16 kernel bug: seqsearch.kernel_guards)")
    return info


def record(out_dir: Path, step: str, device: torch.device | str | None = None,
           train: TrainSection | None = None) -> None:
    """Add (or replace) this step's entry in out_dir/environment.json, atomically."""
    path = out_dir / "environment.json"
    try:
        kept = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        kept = {}
    kept[step] = describe(device, train)
    atomic.write_json(path, kept)


def recorded_policy(out_dir: Path) -> dict[str, str] | None:
    """The precision and memory format the study's numbers ran under, from environment.json
    (baseline first, then probe and tune); None for a study recorded before policies were."""
    try:
        kept = json.loads((out_dir / "environment.json").read_text())
    except (OSError, ValueError):
        return None
    steps = sorted(kept, key=lambda s: (s != "baseline", s != "probe", s))
    for step in steps:
        policy = kept[step].get("policy") if isinstance(kept[step], dict) else None
        if policy:
            return {"precision": policy["precision"], "memory_format": policy["memory_format"]}
    return None
