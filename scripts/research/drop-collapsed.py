"""A copy of a study folder's probe results without its collapsed models, to decide again.

A model is collapsed when its best validation accuracy over its rows (an E model's τ sweep
included) is at most 1.5 × chance, the rule `seqsearch.train.collapsed` now applies while
training. Copies `runs.csv` (without those models' rows), `samples.json`, `environment.json`
and `baseline/` into OUT; then `seqsearch order STUDY --out OUT` decides the pairs as a probe
that had failed those units would have. Nothing is trained:

    python scripts/research/drop-collapsed.py reports/resnet20-fashionmnist6k /tmp/fm-excl
    seqsearch order studies/resnet20-fashionmnist6k.yaml --out /tmp/fm-excl
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

CHANCE_FACTOR = 1.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = pd.read_csv(args.folder / "runs.csv")
    best = runs.groupby(["order", "sample", "seed"])["val_accuracy"].transform("max")
    bad = best <= CHANCE_FACTOR / args.classes
    models = runs[bad].groupby(["order", "sample", "seed"]).size()
    runs[~bad].to_csv(args.out / "runs.csv", index=False)
    for name in ("samples.json", "environment.json"):
        if (args.folder / name).is_file():
            shutil.copy2(args.folder / name, args.out / name)
    if (args.folder / "baseline").is_dir():
        shutil.copytree(args.folder / "baseline", args.out / "baseline", dirs_exist_ok=True)
    print(f"dropped {len(models)} collapsed models ({int(bad.sum())} rows):")
    for (order, sample, seed), _ in models.items():
        print(f"  {order} sample {sample} seed {seed}")


if __name__ == "__main__":
    main()
