"""What a study's numbers depend on besides its file: versions, threads and device.

Each step that produces numbers (baseline, probe, tune) records them in the study folder's
`environment.json` under its own name, so a verdict that differs between two machines (or
between 1 and 2 threads) can be traced to what differed.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from seqsearch import __version__, atomic


def describe(device: torch.device | str | None = None) -> dict[str, Any]:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "seqsearch": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "machine": platform.machine(),
        "threads": torch.get_num_threads(), "device": str(dev),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
    return info


def record(out_dir: Path, step: str, device: torch.device | str | None = None) -> None:
    """Add (or replace) this step's entry in out_dir/environment.json, atomically."""
    path = out_dir / "environment.json"
    try:
        kept = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        kept = {}
    kept[step] = describe(device)
    atomic.write_json(path, kept)
