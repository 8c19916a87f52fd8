"""How far a study's test drops sit from its validation drops, over all its points: the
baseline's share of the export bound's noise (`search.bound`, the 1 / m term).

Every drop is measured against one baseline run. Its image noise on the validation split and
on the test split is shared by every point of the study, so the mean of (test drop −
validation drop) over many points estimates it (each point's own image noise averages out);
the spread between studies with different baselines is the baseline term's size. Prints, per
study folder, that mean over the points whose validation accuracy is within `--window` points
of the baseline's, their per-point standard deviation, σ_run · sqrt(1 + n_val / n_test) from
its confirm.json where it has one, and the root mean square of the studies' means. Nothing is
trained:

    python scripts/research/baseline-offset.py reports/resnet20-mnist5k reports/vgg11-mnist5k \
        reports/vgg11-mnist5k-eheads reports/resnet20-fashionmnist6k
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd


def offsets(folder: Path, window: float) -> tuple[float, float, int, float | None]:
    """(mean, sd, points) of test drop − validation drop, and σ_run · sqrt(1 + r)."""
    base = json.loads((folder / "baseline.json").read_text())["metrics"]
    runs = pd.read_csv(folder / "runs.csv")
    runs = runs[runs["val_accuracy"].notna() & runs["test_accuracy"].notna()]
    near = runs[runs["val_accuracy"] >= base["val_accuracy"] - window / 100]
    off = 100 * ((base["test_accuracy"] - near["test_accuracy"])
                 - (base["val_accuracy"] - near["val_accuracy"]))
    predicted = None
    confirm = folder / "confirm.json"
    if confirm.exists():
        rule = json.loads(confirm.read_text()).get("rule") or {}
        if rule.get("sigma_run") is not None:
            ratio = 1 + rule.get("val_images", base["val_images"]) / rule.get(
                "test_images", base["test_images"])
            predicted = float(rule["sigma_run"]) * math.sqrt(ratio)
    return float(off.mean()), float(off.std()), len(off), predicted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--window", type=float, default=5.0,
                    help="points below the baseline's validation accuracy (default 5)")
    args = ap.parse_args()
    means = []
    print("| study | baseline val / test | points | mean (test − val drop) | sd per point "
          "| σ_run · sqrt(1 + r) |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        base = json.loads((folder / "baseline.json").read_text())["metrics"]
        mean, sd, n, predicted = offsets(folder, args.window)
        means.append(mean)
        pred = "–" if predicted is None else f"{predicted:.2f}"
        print(f"| `{folder.name}` | {100 * base['val_accuracy']:.2f} / "
              f"{100 * base['test_accuracy']:.2f} | {n} | {mean:+.2f} | {sd:.2f} | {pred} |")
    rms = math.sqrt(sum(m * m for m in means) / len(means))
    print(f"\nroot mean square of the studies' means: {rms:.2f} points over {len(means)} studies")


if __name__ == "__main__":
    main()
