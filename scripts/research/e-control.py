"""The E control (issue 31): do VGG-11's E-first verdicts survive when E trains jointly?

Reads three study folders' order.json (no training): the committed vgg11-mnist5k (heads-only E,
bf16 on the AMX machine that ran it, 16 samples x 2 seeds), and the control's two arms,
vgg11-mnist5k-eheads and vgg11-mnist5k-ejoint (fp32, 8 samples, the same samples and seeds in
both arms; they differ only in `early_exit.training`). Per E pair it prints each arm's effect
(first order minus second, accuracy points), its interval, p, Holm level and verdict. Where the
two control arms share units (same sample, both seeds), it also gives the per-unit change of the
statistic from heads to joint, with a sign-flip p-value over those units: whether joint training
moves the effect, on the very same parameter samples.

    PYTHONPATH=. python scripts/research/e-control.py \
        [--json reports/vgg11-mnist5k-ejoint/e-control.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seqsearch import atomic
from seqsearch.report.verdicts import verdict_word
from seqsearch.search.stats import sign_flip_p

ROOT = Path(__file__).resolve().parents[2]
ARMS = (("committed heads (bf16, 16 samples)", "vgg11-mnist5k"),
        ("control heads (fp32, 8 samples)", "vgg11-mnist5k-eheads"),
        ("control joint (fp32, 8 samples)", "vgg11-mnist5k-ejoint"))
PAIRS = ("DE", "PE", "QE")


def pair_rows(folder: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((folder / "order.json").read_text())
    return {p["pair"]: p for p in doc["pairs"] if p["pair"] in PAIRS}


def unit_values(p: dict[str, Any]) -> dict[str, float]:
    return {u: float(v["value"]) for u, v in (p.get("unit_statistic") or {}).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    arms = {label: pair_rows(ROOT / "reports" / name) for label, name in ARMS
            if (ROOT / "reports" / name / "order.json").is_file()}
    out: dict[str, Any] = {"arms": {}, "paired": {}}
    print("| pair | arm | effect (pts) | interval | units | p | Holm level | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for pair in PAIRS:
        for label, rows in arms.items():
            p = rows.get(pair)
            if p is None:
                continue
            lo, hi = p.get("interval") or (float("nan"), float("nan"))
            print(f"| {pair} | {label} | {p['effect']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
                  f"{p['units']} | {p['p_value']:.3g} | {p['alpha']:.3g} | {verdict_word(p)} |")
            out["arms"].setdefault(label, {})[pair] = {
                k: p.get(k) for k in ("effect", "interval", "units", "p_value", "alpha",
                                      "outcome", "winner")}
    heads, joint = (arms.get(ARMS[1][0]), arms.get(ARMS[2][0]))
    if heads and joint:
        print("\nSame units, heads -> joint (per-unit statistic, joint minus heads):")
        for pair in PAIRS:
            a, b = unit_values(heads[pair]), unit_values(joint[pair])
            shared = sorted(set(a) & set(b), key=int)
            if not shared:
                continue
            diffs = [b[u] - a[u] for u in shared]
            mean = sum(diffs) / len(diffs)
            pval = sign_flip_p(diffs)
            print(f"- {pair}: {len(shared)} shared units, mean change {mean:+.2f} pts "
                  f"(heads {sum(a[u] for u in shared) / len(shared):+.2f} -> joint "
                  f"{sum(b[u] for u in shared) / len(shared):+.2f}), sign-flip p {pval:.3g}")
            out["paired"][pair] = {"units": len(shared), "mean_change": mean, "p_value": pval}
    if args.json is not None:
        out["command"] = "PYTHONPATH=. python scripts/research/e-control.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        atomic.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
