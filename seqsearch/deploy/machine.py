"""The machine a deploy figure is for: the CPU model, the instruction sets its int8 and bf16
kernels depend on, the cores, and the runtime versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from seqsearch.environment import cpu_name

# what decides which int8 kernels a runtime can use: AVX2 (u8 x s8 pairs into int16, which
# can saturate), AVX-512, VNNI (u8 x s8 into int32, no saturation), AMX (int8 tiles)
ISA_FLAGS = {"AVX2": ("avx2",), "AVX-512": ("avx512f",),
             "VNNI": ("avx512_vnni", "avx_vnni"), "AMX": ("amx_int8",)}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The `flags` of the first CPU in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def isa(flags: set[str]) -> list[str]:
    """The named instruction sets present, in ISA_FLAGS order."""
    return [name for name, keys in ISA_FLAGS.items() if any(k in flags for k in keys)]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe(runtime_versions: dict[str, str | None]) -> dict[str, Any]:
    """The `machine` block of deploy.json."""
    return {"cpu": cpu_name(), "arch": platform.machine(), "isa": isa(cpu_flags()),
            "cores": cores(), "runtimes": dict(runtime_versions)}


def label(machine: dict[str, Any]) -> str:
    """'Intel(R) Xeon(R) Processor (AVX2, AVX-512, VNNI, AMX), 2 cores'."""
    flags = ", ".join(machine.get("isa") or []) or "no AVX2"
    return f"{machine.get('cpu', '?')} ({flags}), {machine.get('cores', '?')} cores"
