"""Replay a committed study's export under the predictive bound, without training.

Reads the study folder's runs.csv, samples.json, confirm.json, tune/trials.csv and
baseline.json; judges every candidate the committed export had (the measured probe points and
the re-run candidates with the runs confirm.json holds) by `search.bound`'s rule at
`--confidence`, and prints what the new rule would export beside what the old one did. Only
what was run counts: a re-run candidate of the committed export had one fresh seed (now two),
so it is judged on that one run, and the extra rounds the new rule would confirm are not run.

    PYTHONPATH=. python scripts/research/replay-export.py reports/vgg11-mnist5k [--confidence 0.9]
        [--json reports/vgg11-mnist5k/export-replay.json]

`--json` writes the same verdicts as data (atomically): the old export judged under the bound,
and the candidate the bound exports, with the figures the page and reports/README.md quote.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from seqsearch.search.confirm import Candidate, judgement, make_rule, measured_candidates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--images", type=int, nargs=2, default=(1800, 1000),
                    metavar=("VAL", "TEST"))
    ap.add_argument("--json", type=Path, default=None, help="also write the verdicts here")
    args = ap.parse_args(argv)
    d = args.folder
    base = json.loads((d / "baseline.json").read_text())["metrics"]
    base_val, base_test = float(base["val_accuracy"]), float(base["test_accuracy"])
    runs = pd.read_csv(d / "runs.csv")
    samples = json.loads((d / "samples.json").read_text())
    old = json.loads((d / "confirm.json").read_text())
    budget = float(old["budget"])
    measured = measured_candidates(runs, samples)
    keys = {c.key for c in measured}
    rerun = []
    for x in old["candidates"]:
        key = json.dumps(x["steps"], sort_keys=True, default=str)
        if key in keys or not any(r.get("from") == "confirm" for r in x["runs"]):
            continue
        seed = 0 if x["from"] == "tune" or " seed 0" in x["id"] else None
        rerun.append(Candidate(x["from"], x["id"], x["chain"], x["steps"], x["val_accuracy"],
                               x["val_bitops_cr"], list(x["runs"]), selected_seed=seed))
    trials = pd.read_csv(d / "tune" / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    tune = [SimpleNamespace(val_accuracy=float(t.val_accuracy),
                            val_bitops_cr=float(t.val_bitops_cr)) for t in done.itertuples()]
    rule = make_rule(measured, rerun, runs, tune, base_val, budget, args.confidence,
                     tuple(args.images))  # type: ignore[arg-type]

    def judged(c: Candidate) -> dict[str, object]:
        return judgement(c, rule, base_val, base_test)

    def cr(c: Candidate) -> float:
        runs_ = c.judging
        return sum(float(r["bitops_cr"]) for r in runs_) / len(runs_)

    passing = [c for c in measured + rerun if (judged(c).get("margin") or -1) >= -1e-4]
    best = max(passing, key=lambda c: (c.judged_mean("val_bitops_cr"),
                                       c.judged_mean("val_accuracy")), default=None)
    ex = old["exported"]
    mine = next(x for x in old["candidates"] if x["chain"] == ex["chain"] and x["id"] == ex["id"])
    n = len(mine["runs"])
    old_test = 100 * (base_test - sum(r["test_accuracy"] for r in mine["runs"]) / n)
    old_cr = math.exp(sum(math.log(r["bitops_cr"]) for r in mine["runs"]) / n)
    print(f"{d.name}: budget {budget:g}, confidence {args.confidence:g}; sigma_run "
          f"{rule.sigma_run:.3f} from {rule.sigma_from}")
    print(f"  old rule exported {ex['chain']} ({ex['from']} {ex['id']}): mean test drop "
          f"{old_test:+.2f} over {n} runs, test BitOpsCR {old_cr:.0f}x (geometric mean)")
    was = next((c for c in measured + rerun if c.chain == ex["chain"] and c.ident == ex["id"]),
               None)
    if was is not None and was.judging:
        w = judged(was)
        print(f"    under the bound: {w['judging_runs']} judging run(s) (seeds "
              f"{w['judging_seeds']}), mean val drop {w['mean_val_drop']:+.2f}, bound "
              f"{w['bound']:.2f}, margin {w['margin']:+.2f}")
    doc: dict[str, object] = {
        "study": d.name, "budget": budget, "confidence": args.confidence,
        "images": {"val": args.images[0], "test": args.images[1]},
        "sigma_run": rule.sigma_run, "sigma_from": rule.sigma_from,
        "old": {"chain": ex["chain"], "from": ex["from"], "id": ex["id"], "runs": n,
                "mean_test_drop": old_test, "test_bitops_cr_geomean": old_cr,
                "under_bound": judged(was) if was is not None and was.judging else None},
        "candidates": len(measured) + len(rerun), "passing": len(passing),
        "command": "PYTHONPATH=. python scripts/research/replay-export.py " + " ".join(
            sys.argv[1:] if argv is None else argv)}
    if best is None:
        print("  the bound passes no candidate the committed export ran: infeasible")
        doc["new"] = None
        _write(args.json, doc)
        return 0
    j = judged(best)
    doc["new"] = {"chain": best.chain, "from": best.source, "id": best.ident,
                  "test_bitops_cr_mean": cr(best), **j}
    _write(args.json, doc)
    print(f"  bound exports {best.chain} ({best.source} {best.ident}): bound {j['bound']:.2f} "
          f"(mean val drop {j['mean_val_drop']:+.2f}, adjusted {j['adjusted_val_drop']:+.2f}, "
          f"noise margin {j['noise_margin']:.2f}), margin {j['margin']:+.2f}; mean test drop "
          f"{j['mean_test_drop']:+.2f} over {j['judging_runs']} runs, test BitOpsCR "
          f"{cr(best):.0f}x; {len(passing)} of {len(measured) + len(rerun)} candidates pass")
    return 0


def _write(path: Path | None, doc: dict[str, object]) -> None:
    if path is None:
        return
    from seqsearch import atomic

    atomic.write_json(path, doc)


if __name__ == "__main__":
    sys.exit(main())
