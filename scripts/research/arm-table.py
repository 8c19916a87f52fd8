"""One markdown row per exported study folder: what it exported and how it runs.

Reads each folder's `chain.yaml` (confirmation, source, real_cost), `confirm.json` and
`deploy.json`; nothing is trained or timed. Used for the latency-against-BitOps tables of
reports/README.md (issue 32):

    python scripts/research/arm-table.py reports/resnet20-mnist5k-bitops \
        reports/resnet20-mnist5k-latency
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

HEADER = ("| folder | exported chain (from) | mean test BitOpsCR (seeds) | "
          "mean test drop (judging runs) | bound at confidence (margin) | batch 1 | batch 64 | "
          "identical predictions | file |\n"
          "|---|---|---|---|---|---|---|---|---|")


def row(folder: Path) -> str:
    chain: dict[str, Any] = yaml.safe_load((folder / "chain.yaml").read_text())
    deploy: dict[str, Any] = json.loads((folder / "deploy.json").read_text())
    c, src = chain["confirmation"], chain["source"]
    seeds = len(c.get("seeds") or [])
    feasible = "" if chain.get("feasible") else ": **infeasible**"
    sp = deploy["speedup"]
    same = sp["runtime_batch64"] == sp["baseline_runtime_batch64"]
    b64_rt = sp["runtime_batch64"] if same else \
        f"{sp['runtime_batch64']} vs {sp['baseline_runtime_batch64']}"
    b1_rt = sp["runtime_batch1"] if sp["runtime_batch1"] == sp["baseline_runtime_batch1"] else \
        f"{sp['runtime_batch1']} vs {sp['baseline_runtime_batch1']}"
    ident = min(r["accuracy"]["identical_predictions"] for r in deploy["runtimes"].values())
    return (f"| `{folder.name}` | {src['chain']} ({src['from']} {src['id']}) | "
            f"{c['mean_bitops_cr']:,.0f}× ({seeds}) | "
            f"{c['mean_test_drop']:+.2f} ({len(c['judging_seeds'])}) | "
            f"{c['bound']:.2f} at {c['confidence']} ({c['margin']:+.2f}){feasible} | "
            f"{sp['batch1']:.2f}× ({b1_rt}) | {sp['batch64']:.2f}× ({b64_rt}) | "
            f"{ident:.1%} (worst runtime) | {deploy['size']['ratio']:.1f}× smaller |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args()
    print(HEADER)
    for f in args.folders:
        print(row(f))


if __name__ == "__main__":
    main()
