"""`seqsearch bench recovery`: argument parsing and the printed tables (the work is in
curve.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from seqsearch.errors import SeqsearchError


def add_parser(sub: Any) -> None:
    """Register `recovery` on `seqsearch bench`'s subparsers."""
    r = sub.add_parser("recovery", help="train one sample of each single stage for growing "
                         "budgets on a few seeds: validation drop vs SGD steps, the knee per "
                         "stage, and what the paper's equal-epochs rule would cost")
    r.add_argument("study", nargs="?", help="study YAML (default: the embedded quickstart)")
    r.add_argument("--out", metavar="DIR", help="study folder (default: the study's output "
                   "setting); the curve goes to its recovery/ folder")
    r.add_argument("--epochs", default="1,2,4,8", metavar="LIST", help="budgets in epochs, "
                   "comma list (default 1,2,4,8): train.stage_epochs, or student_epochs for a "
                   "student")
    r.add_argument("--seeds", default="0,1", metavar="LIST",
                   help="training seeds, comma list (default 0,1)")
    r.add_argument("--stages", metavar="LIST", help="stages (names or letters), comma list "
                   "(default: the study's stages)")
    r.add_argument("--sample", metavar="K", help="take the probe's sample K of each stage "
                   "(default: a demanding sample: Q w2a2, P ratio 0.5, D width 0.5 from "
                   "scratch, E its defaults; the study's probe.fixed applies)")
    r.add_argument("--param", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override one param of a stage's sample (repeatable)")
    r.add_argument("--tolerance", default="0.25", metavar="PTS", help="the knee: the smallest "
                   "budget whose seed-mean drop is within this many points of the best "
                   "budget's (default 0.25)")
    r.add_argument("--threads", type=int, metavar="K", help="torch threads for this process "
                   "(default: torch's own choice)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_recovery)


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SeqsearchError(f"--tolerance {text!r}: expected a number of points, e.g. 0.25"
                             ) from None
    if not 0 <= value <= 100:
        raise SeqsearchError(f"--tolerance {text!r}: must lie in [0, 100] (points)")
    return value


def _sample(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise SeqsearchError(f"--sample {text!r}: expected a probe sample index, e.g. 0"
                             ) from None
    if value < 0:
        raise SeqsearchError(f"--sample {text!r}: must be 0 or more (a probe sample index)")
    return value


def cmd_recovery(args: argparse.Namespace) -> int:
    from seqsearch.config import load_study
    from seqsearch.recovery.curve import CurveOptions, run_curve
    from seqsearch.recovery.plan import parse_list, parse_params, parse_stages

    # every argument is checked before the study's data or baseline is touched
    epochs = parse_list(args.epochs, "--epochs", "1,2,4,8")
    seeds = parse_list(args.seeds, "--seeds", "0,1")
    tolerance = _tolerance(args.tolerance)
    sample = _sample(args.sample)
    study = load_study(args.study)
    args.model_spec = study.model.name
    stages = parse_stages(args.stages, study)
    opts = CurveOptions(stages=stages, epochs=epochs, seeds=seeds, sample=sample,
                        params=parse_params(args.param, stages), tolerance=tolerance)
    out = Path(args.out) if args.out else study.output_dir()
    doc = run_curve(study, out, opts)
    if args.json:
        print(json.dumps(doc, default=str))
        return 0
    print("\n".join(summary_lines(doc)))
    return 0


def _drop(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The printed report: the samples, every budget's drop, then the knees and the cost of
    the paper's rule."""
    b, run = doc["baseline"], doc["run"]
    lines = [
        f"recovery curve {doc['study']}: {doc['model']} on {doc['data']}, baseline val "
        f"{100 * b['val_accuracy']:.2f} % ({b['epochs']} epochs); {doc['train_images']:,} "
        f"train images, batch {doc['batch_size']}: {doc['steps_per_epoch']} SGD steps per "
        f"epoch; seeds {', '.join(map(str, doc['seeds']))}; {run['points']} points, "
        f"{run['trained']} trained now, {run['reused']} already measured",
        f"samples ({doc['sample']}):"]
    for name, s in doc["stages"].items():
        params = " ".join(f"{k}={v}" for k, v in s["params"].items())
        lines.append(f"  {s['letter']} {name}: {params}")
    lines += [
        "", "drop: points below the baseline's validation accuracy, of the model or, for a "
        f"model with exits, of its exit heads' mean (val/test drop: the model at tau "
        f"{doc['tau']:g}); seed mean [min, max]",
        f"{'stage':<14}{'budget':<16}{'epochs':>6}{'steps':>7}  {'drop (seeds)':<26}"
        f"{'val drop':>9}{'test drop':>10}{'BitOpsCR':>9}{'seconds':>9}"]
    for name, s in doc["stages"].items():
        for r in s["curve"]:
            head = f"{s['letter'] + ' ' + name:<14}{r['setting']:<16}{r['epochs']:>6}" \
                f"{r['steps']:>7}  "
            if "drop" not in r:
                lines.append(head + f"all {r['failed']} seed(s) failed")
                continue
            spread = f"{r['drop']:+.2f} [{r['drop_min']:+.2f}, {r['drop_max']:+.2f}]"
            if r["failed"]:
                spread += f" ({r['failed']} failed)"
            lines.append(head + f"{spread:<26}{r['val_drop']:>+9.2f}{r['test_drop']:>+10.2f}"
                         f"{r['val_bitops_cr']:>8.1f}x{r['train_seconds']:>9.1f}")
    lines += ["", f"knee: {doc['knee_rule']} ({doc['tolerance']:g} pt). Paper's rule: every "
              f"stage trains as long as the baseline ({doc['paper_epochs']} epochs); its "
              "seconds are extrapolated from each stage's seconds-per-epoch line unless that "
              "budget was measured.",
              f"{'stage':<14}{'study now':>12}{'knee':>6}{'steps':>7}{'drop':>7}"
              f"{'best':>6}{'drop':>7}   paper's rule vs knee"]
    for name, s in doc["stages"].items():
        k, pr = s["knee"], s["paper_rule"]
        now = str(s["study_epochs"]) + ("" if s["study_drop"] is None
                                        else f" ({_drop(s['study_drop'])})")
        label = f"{s['letter'] + ' ' + name:<14}{now:>12}"
        if k is None:
            lines.append(label + "  no measured budget")
            continue
        cost = "n/a"
        if pr["times_knee"] is not None:
            how = "measured" if pr["measured"] else "extrapolated"
            cost = (f"{pr['seconds']:.1f} s vs {k['train_seconds']:.1f} s = "
                    f"{pr['times_knee']:.1f}x the time ({how})")
            if pr["measured"]:
                cost += f", drop {_drop(pr['drop'])}"
        edge = "  (knee at the largest budget: measure further)" if k["at_largest_budget"] \
            else ""
        lines.append(label + f"{k['epochs']:>6}{k['steps']:>7}{k['drop']:>+7.2f}"
                     f"{k['best_epochs']:>6}{k['best_drop']:>+7.2f}   {cost}{edge}")
    folder = Path(run["folder"])
    files = ["recovery.csv", "recovery.json", "recovery.html"] + (
        ["recovery.png"] if (folder / "recovery.png").is_file() else [])
    lines += ["", f"written to {folder}: {', '.join(files)}"]
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    return lines
