"""Whole-command speed (`seqsearch bench command`): `seqsearch baseline` against a plain PyTorch
script, fresh processes.

    seqsearch bench command [STUDY.yaml] [--limit 2000] [--epochs 3] [--rounds 3]

Each round starts, in alternation and each in a fresh Python process: the plain script (load
the study's samples, build its model, a hand-written fp32 SGD loop, evaluate validation and
test, save the weights), `seqsearch baseline` under fp32 (the same work through seqsearch: its
imports, BitOps count, `fit`, evaluation, checkpoint and environment record), and `seqsearch
baseline` under the study's default policy (`auto`: bf16 where the CPU has it natively). The
parent times each whole process, so imports and start-up count; it prints every round and the
median ratios plain/seqsearch (above 1: seqsearch is faster). Augmentation is off in all
three, so they do the same arithmetic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def _study_copy(source: str | None, folder: Path, precision: str, args: argparse.Namespace
                ) -> Path:
    from seqsearch.config import load_study

    study = load_study(source)
    raw: dict[str, Any] = study.model_dump(mode="json")
    raw["data"] = {**raw["data"], "augment": "none"}
    if args.limit:
        raw["data"]["limit"] = args.limit
    raw["train"] = {**raw["train"], "epochs": args.epochs, "precision": precision,
                    "memory_format": "auto" if precision == "auto" else "contiguous"}
    if args.batch_size:
        raw["train"]["batch_size"] = args.batch_size
    raw["output"] = None
    path = folder / f"study-{precision}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of the whole process, and the seconds of its training loop alone (the last
    line of its JSON: `seconds` of `seqsearch baseline --json`, `loop_seconds` of the plain
    script)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return seconds, float(out.get("loop_seconds", out.get("seconds", math.nan)))


def bench_command(args: argparse.Namespace) -> int:
    import torch

    from seqsearch.environment import cpu_name
    from seqsearch.precision import native_bf16

    env = {**os.environ, "SEQSEARCH_QUIET": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    threads = env.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32 = _study_copy(args.study, folder, "fp32", args)
        auto = _study_copy(args.study, folder, "auto", args)
        py = sys.executable
        arms = {
            "plain": lambda r: [py, "-m", "seqsearch.bench.plain", str(fp32)],
            "fp32": lambda r: [py, "-m", "seqsearch", "baseline", str(fp32),
                               "--out", str(folder / f"fp32-{r}"), "--json"],
            "auto": lambda r: [py, "-m", "seqsearch", "baseline", str(auto),
                               "--out", str(folder / f"auto-{r}"), "--json"],
        }
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
        print(f"whole-command benchmark: {yaml.safe_load(fp32.read_text())['model']['name']}, "
              f"{args.epochs} epoch(s), {threads} thread(s), CPU {cpu_name()}"
              f"{f' capped at ONEDNN_MAX_CPU_ISA={isa}' if isa else ''} (native bf16: "
              f"{native_bf16(torch.device('cpu'))}); fresh process each, alternated")
        wall: dict[str, list[float]] = {k: [] for k in arms}
        loop: dict[str, list[float]] = {k: [] for k in arms}
        for r in range(args.rounds):
            order = list(arms) if r % 2 == 0 else list(arms)[::-1]
            for arm in order:
                w, t = _timed(arms[arm](r), env)
                wall[arm].append(w)
                loop[arm].append(t)
            print(f"round {r + 1}/{args.rounds}: " + "   ".join(
                f"{arm} {wall[arm][-1]:6.2f} s (loop {loop[arm][-1]:6.2f} s)" for arm in arms),
                flush=True)
    for what, times in (("whole process", wall), ("training loop alone", loop)):
        med = {arm: statistics.median(t) for arm, t in times.items()}
        print(f"{what}, median: plain {med['plain']:.2f} s, seqsearch fp32 {med['fp32']:.2f} s, "
              f"seqsearch auto {med['auto']:.2f} s; against the plain fp32 script: seqsearch "
              f"fp32 {med['plain'] / med['fp32']:.3f}x, seqsearch auto "
              f"{med['plain'] / med['auto']:.3f}x")
    return 0
