"""Single stages on a study's baseline under two recovery recipes (issue 22's "old → new").

    python scripts/research/recovery-recipes.py seqsearch/studies/resnet20-mnist5k.yaml --out DIR

Each arm is a recipe (quantizer method, recovery loss, BatchNorm re-estimation) at a stage
budget; each stage sample runs on every seed through the chain runner (its own cache under
DIR), and one JSON line per run is appended to DIR/recipes.jsonl as it finishes, so a killed
run resumes where it stopped. The table printed at the end is the seed mean of the validation
drop (points) per stage sample and arm, with the seed gap.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from seqsearch.baseline import get_baseline
from seqsearch.chain import plan, runner_for
from seqsearch.config import load_study

SAMPLES = {  # stage sample name -> (stage, params)
    "Q w2a2": ("quantize", {"weight_bits": 2, "act_bits": 2}),
    "Q w1a2": ("quantize", {"weight_bits": 1, "act_bits": 2}),
    "P 0.5": ("prune", {"ratio": 0.5}),
    "D scratch w0.5": ("distill", {"width": 0.5, "init": "scratch"}),
}
ARMS = {  # arm -> (train overrides, quantize method)
    "old (dorefa, ce, stage_epochs 1, student 2)":
        ({"stage_epochs": 1, "student_epochs": 2}, "dorefa"),
    "new@1 (lsq, kd, bn 20, stage_epochs 1, student 2)":
        ({"stage_epochs": 1, "student_epochs": 2, "recovery": "kd", "bn_recalibration": 20},
         "lsq"),
    "new@4 (lsq, kd, bn 20, stage_epochs 4, student 6)":
        ({"stage_epochs": 4, "student_epochs": 6, "recovery": "kd", "bn_recalibration": 20},
         "lsq"),
    # one change at a time at the longer budget
    "old@4 (dorefa, ce, stage_epochs 4, student 6)":
        ({"stage_epochs": 4, "student_epochs": 6}, "dorefa"),
    "kd@4 (dorefa, kd, stage_epochs 4)": ({"stage_epochs": 4, "recovery": "kd"}, "dorefa"),
    "bn@4 (dorefa, bn 20, stage_epochs 4)": ({"stage_epochs": 4, "bn_recalibration": 20},
                                              "dorefa"),
    "lsq@4 (lsq, ce, stage_epochs 4)": ({"stage_epochs": 4}, "lsq"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--samples", default=",".join(SAMPLES))
    ap.add_argument("--arms", default="", help="arm name prefixes, comma-separated (all)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "recipes.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    done = {(r["arm"], r["sample"], r["seed"]) for r in map(json.loads, lines)}
    study = load_study(args.study)
    base = get_baseline(study, out_dir=out)
    base_val = float(base.metrics["val_accuracy"])
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.samples.split(",")
    arms = [a for a in ARMS if not args.arms or any(a.startswith(p) for p in args.arms.split(","))]
    jobs = [(a, n, s) for a in arms for n in names for s in seeds if (a, n, s) not in done]
    start = time.perf_counter()
    for k, (arm, name, seed) in enumerate(jobs, start=1):
        train, method = ARMS[arm]
        cfg = study.model_copy(update={"train": study.train.model_copy(update=train)})
        stage, params = SAMPLES[name]
        if stage == "quantize":
            params = {**params, "method": method}
        eta = (time.perf_counter() - start) / (k - 1) * (len(jobs) - k + 1) if k > 1 else 0
        print(f"[recipes] run {k}/{len(jobs)}: {arm} | {name} | seed {seed} (ETA {eta:.0f} s)",
              flush=True)
        runner = runner_for(cfg, base, out / "cache", seed=seed, progress=False)
        rec = runner.run(plan([(stage, params)])).records[-1]
        row = {"arm": arm, "sample": name, "seed": seed, "stage": stage, "params": params,
               "val_accuracy": rec["val_accuracy"], "test_accuracy": rec["accuracy"],
               "val_drop": round(100 * (base_val - rec["val_accuracy"]), 3),
               "bitops_cr": rec["bitops_cr"], "seconds": rec["seconds"]}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    print(f"baseline val {100 * base_val:.2f} %")
    print("| sample | arm | val drop seed mean | seeds | seed gap | test acc mean | s/run |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for arm in ARMS:
            got = [r for r in rows if r["sample"] == name and r["arm"] == arm]
            if not got:
                continue
            drops = [r["val_drop"] for r in got]
            gap = max(drops) - min(drops)
            print(f"| {name} | {arm} | {statistics.mean(drops):.2f} | {len(got)} | {gap:.2f} | "
                  f"{100 * statistics.mean(r['test_accuracy'] for r in got):.2f} | "
                  f"{statistics.mean(r['seconds'] for r in got):.0f} |")


if __name__ == "__main__":
    main()
