"""Write a chain.yaml that rebuilds one measured candidate of a committed study folder, for
`seqsearch apply` and `seqsearch bench-model`.

A study folder committed before 2026-12-07 has neither its prefix cache nor its models, so
the chain the export rule picks from its probe points (`export-replay.json`) exists only as
figures. This takes the folder's exported chain.yaml (the study's model, data, train settings
and recorded policy), puts the candidate's steps in place of its stages (`search.confirm`
reads them from runs.csv and samples.json, as the export does), and writes it to OUT with
`output: OUT` and a `source` naming the candidate. Rebuilding trains the baseline and the
chain at the study seed under the recorded policy on this machine, so its accuracy is this
machine's, not the committed figure; its shapes and bits, and so its speed, are the
candidate's. Nothing is trained here:

    python scripts/research/rebuild-candidate.py reports/vgg11-mnist5k EQP \\
        "sample 5 seeds 0, 1 tau 0.9" reports/vgg11-mnist5k/rebuilt
    seqsearch apply reports/vgg11-mnist5k/rebuilt/chain.yaml \\
        --out reports/vgg11-mnist5k/rebuilt/model.pt
    seqsearch bench-model reports/vgg11-mnist5k/rebuilt --threads 1 --runtime all
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from seqsearch.search.confirm import measured_candidates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("chain", help="the candidate's order, e.g. EQP")
    ap.add_argument("ident", help='its id as confirm.json names it, e.g. "sample 5 seeds 0, 1"')
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    runs = pd.read_csv(args.folder / "runs.csv")
    samples = json.loads((args.folder / "samples.json").read_text())
    found = [c for c in measured_candidates(runs, samples)
             if c.chain == args.chain and c.ident == args.ident]
    if not found:
        print(f"{args.folder}: no measured candidate {args.chain} {args.ident!r}", file=sys.stderr)
        return 2
    c = found[0]
    doc = yaml.safe_load((args.folder / "chain.yaml").read_text())
    doc["stages"] = [{"stage": stage, "params": params} for stage, params in c.steps]
    doc["output"] = str(args.out)
    doc["name"] = f"{doc['name']}-rebuilt-{args.chain.lower()}"
    doc["source"] = {"from": c.source, "id": c.ident, "study": str(args.folder),
                     "committed_runs": [{k: r[k] for k in ("seed", "val_accuracy",
                                                           "test_accuracy", "bitops_cr")}
                                        for r in c.runs]}
    for key in ("metrics", "feasible", "confirmation", "real_cost"):
        doc.pop(key, None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chain.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"wrote {args.out / 'chain.yaml'}: {args.chain} {args.ident}, "
          f"{len(c.steps)} stages, policy {doc.get('policy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
