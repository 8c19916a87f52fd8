"""How much a `seqsearch bench-model` figure moves from one run to the next on this machine:
runs it `--repeat` times per study folder (each run 3 alternating rounds of 300 batch-1 and 20
batch-64 calls per file, one thread, both runtimes) and prints, per folder, the best-vs-best
speed-ups of every run and their median, minimum and maximum. Each run rewrites the folder's
deploy.json, so the last run is what stays. Nothing is trained:

    python scripts/research/bench-repeat.py reports/vgg11-mnist5k-latency-full --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from seqsearch.deploy.command import bench_folder
from seqsearch.deploy.measure import BenchSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ["SEQSEARCH_QUIET"] = "1"  # the table only
    settings = BenchSettings(threads=(1,), batch1_runs=300, batch64_runs=20, rounds=3)
    print("| folder | batch 1 (median latency) | batch 1 (mean latency) | batch 64 |")
    print("|---|---|---|---|")
    for folder in args.folders:
        got: dict[str, list[float]] = {"batch1": [], "batch1_mean": [], "batch64": []}
        for _ in range(args.repeat):
            s = bench_folder(folder, settings, runtime="all")["speedup"]
            for key, values in got.items():
                if key in s:
                    values.append(float(s[key]))

        def cell(v: list[float]) -> str:
            if not v:
                return "–"
            runs = ", ".join(f"{x:.2f}" for x in v)
            return (f"{statistics.median(v):.2f}× ({min(v):.2f}–{max(v):.2f}; runs {runs})")

        print(f"| {folder} | {cell(got['batch1'])} | {cell(got['batch1_mean'])} | "
              f"{cell(got['batch64'])} |", flush=True)


if __name__ == "__main__":
    main()
