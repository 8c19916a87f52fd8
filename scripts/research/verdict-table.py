"""The committed studies' verdicts before and after issue 21, recomputed from their runs (no
training): per pair the old rule's p-value (hypervolume above baseline - 2 points) and verdict,
the new rule's (matched-compression gap, Holm over the pairs) and its power line. Given a later
revision, the "old" columns are that revision's committed verdicts under its own statistic (e.g.
0281368: the 1-epoch runs under the gap rule, against the re-run on the new budgets).

    python scripts/research/verdict-table.py [OLD_REVISION]   (default: f745ab0, before the change)

Run `seqsearch order seqsearch/studies/NAME.yaml` first so reports/NAME/order.json is new."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from seqsearch.report.verdicts import counts, verdict_word

ROOT = Path(__file__).resolve().parents[2]


def old_order(rev: str, study: str) -> dict:
    text = subprocess.run(["git", "show", f"{rev}:reports/{study}/order.json"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout
    return json.loads(text)


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "f745ab0"
    for study in ("resnet20-mnist5k", "vgg11-mnist5k"):
        old_doc = old_order(rev, study)
        old = {p["pair"]: p for p in old_doc["pairs"]}
        stat = "HV" if "criteria" not in old_doc else old_doc["criteria"]["statistic"]
        new = json.loads((ROOT / "reports" / study / "order.json").read_text())
        c = new["criteria"]
        print(f"\n{study}: new rule {c['statistic']}, alpha {c['alpha']:g} over {c['looks']} "
              f"look(s), Holm over {c['pairs']} pairs, min_effect {c['min_effect']:g} pts\n")
        print(f"| pair | old p ({stat}) | old | new p (gap) | Holm level | new | effect (pts) "
              "| detectable (pts) | units needed |")
        print("|---|---|---|---|---|---|---|---|---|")
        for p in new["pairs"]:
            o = old[p["pair"]]
            pw = p.get("power") or {}
            det = "" if pw.get("detectable") is None else f"{pw['detectable']:.2f}"
            was = verdict_word(o) if "outcome" in o else (o["winner"] or "undecided")
            print(f"| {p['pair']} | {o['p_value']:.3g} | {was} "
                  f"| {p['p_value']:.3g} | {p['alpha']:.3g} | {verdict_word(p)} "
                  f"| {p['effect']:+.2f} | {det} | {pw.get('units_needed') or ''} |")
        n_old = sum(1 for p in old.values() if p["decided"] or p.get("equivalent"))
        null = new["null_check"]
        print(f"\ndecided: old {n_old} of {len(old)}; new {counts(new)}. Label-swap null: a "
              f"false edge in {100 * null['study_false_edge_rate']:.2f} % of "
              f"{null['draws']:,} drawn studies (family level {null['alpha']:.3g}); per pair "
              "exact: " + ", ".join(f"{k} {v['false_edge_rate']:.4f} (level {v['level']:.3g})"
                                    for k, v in null["pairs"].items()))
        gap = new["noise"]
        print(f"seed gap {gap['seed_gap_points']:.2f} pts over {gap['seed_gap_runs']} runs"
              + ("" if "seed_gap_points_without_student" not in gap else
                 f" ({gap['seed_gap_points_without_student']:.2f} without a student over "
                 f"{gap['seed_gap_runs_without_student']}, "
                 f"{gap['seed_gap_points_with_student']:.2f} with one over "
                 f"{gap['seed_gap_runs_with_student']})"))


if __name__ == "__main__":
    main()
