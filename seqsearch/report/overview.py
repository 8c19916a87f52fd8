"""Several studies' claims, goal budgets and search cost side by side, as markdown.

Reads only what `seqsearch report` wrote into each study folder (tables/claims.csv,
tables/goals.csv, tables/cost.csv, tables/budgets.csv, baseline.json, brute.json,
confirm.json), so the overview is as
recomputable as the reports. `python -m seqsearch.report.overview FOLDER [FOLDER …]` prints it;
`--write FILE` replaces the part of FILE between the overview markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from seqsearch import atomic
from seqsearch.errors import SeqsearchError
from seqsearch.report import display as D
from seqsearch.report.tables import brute_sentence

BEGIN = "<!-- overview:begin (python -m seqsearch.report.overview) -->"
END = "<!-- overview:end -->"


_cr = D.ratio


def _load(folder: Path) -> dict[str, Any]:
    tables = folder / "tables"
    need = [tables / "claims.csv", tables / "goals.csv", tables / "cost.csv",
            folder / "baseline.json"]
    for path in need:
        if not path.is_file():
            raise SeqsearchError(f"{path}: missing; run 'seqsearch report' on that study first")
    brute = folder / "brute.json"
    confirm = folder / "confirm.json"
    budgets = tables / "budgets.csv"
    seed_means = tables / "seed_means.csv"
    samples = folder / "samples.json"
    return {"name": folder.name,
            "methods": probe_methods(json.loads(samples.read_text())) if samples.is_file()
            else None,
            "confirm": json.loads(confirm.read_text()) if confirm.is_file() else None,
            "budgets": pd.read_csv(budgets) if budgets.is_file() else None,
            "seed_means": pd.read_csv(seed_means) if seed_means.is_file() else None,
            "claims": pd.read_csv(tables / "claims.csv"),
            "goals": pd.read_csv(tables / "goals.csv"),
            "cost": pd.read_csv(tables / "cost.csv"),
            "baseline": json.loads((folder / "baseline.json").read_text())["metrics"],
            "brute": json.loads(brute.read_text()) if brute.is_file() else None}


# The method choices a verdict depends on, and the stages' defaults where a sample does not
# name them (an E sample before early_exit.training existed trained its heads on a frozen body)
METHOD_KEYS = {"D": {"init": "scratch"}, "Q": {"method": "dorefa"}, "E": {"training": "heads"}}
METHOD_NAMES = {"D": "distill", "Q": "quantize", "E": "early_exit"}


def probe_methods(samples: dict[str, list[dict[str, Any]]]) -> str:
    """The probe's method choices from its samples (`samples.json`), e.g. 'distill.init scratch,
    quantize.method dorefa, early_exit.training heads'; a choice that varies between samples
    reads 'sampled'."""
    parts = []
    for letter, keys in METHOD_KEYS.items():
        rows = samples.get(letter) or []
        if not rows:  # the study has no such stage
            continue
        for key, default in keys.items():
            values = {str(r.get(key, default)) for r in rows}
            value = values.pop() if len(values) == 1 else "sampled"
            parts.append(f"{METHOD_NAMES[letter]}.{key} {value}")
    return ", ".join(parts) or "–"


def claims_section(studies: Sequence[dict[str, Any]]) -> list[str]:
    names = [s["name"] for s in studies]
    order: list[str] = []
    for s in studies:
        order += [c for c in s["claims"]["claim"] if c not in order]
    lines = ["| claim | paper | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names),
             "| _verdicts measured with_ | the design's reading of §2: distill.init scratch, "
             "quantize.method dorefa, early_exit.training heads | "
             + " | ".join(s.get("methods") or "not recorded" for s in studies) + " |"]
    for claim in order:
        paper, cells = "", []
        for s in studies:
            row = s["claims"][s["claims"]["claim"] == claim]
            if row.empty:
                cells.append("–")
                continue
            r = row.iloc[0]
            paper = str(r["paper"])
            p = r.get("p_value")
            conf = "" if p is None or pd.isna(p) else f", p {float(p):.2g}"
            cells.append(f"**{r['verdict']}** ({r['ours']}{conf})")
        lines.append(f"| {claim} | {paper} | " + " | ".join(cells) + " |")
    return lines


def goals_section(s: dict[str, Any]) -> list[str]:
    g = s["goals"]
    if g.empty:
        return ["_(no budget reached)_"]
    singles = [c for c in g.columns if c.startswith("single ")]
    cols = ["tuned", "best pair", "best full order"]
    head = ["budget (points)"] + cols + singles
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in g.iterrows():
        cells = [f"≤ {float(r['budget']):g}"]
        for c in cols:
            if c not in g:
                cells.append("–")
                continue
            which = r.get(f"{c} order")
            cells.append(_cr(r[c]) + ("" if pd.isna(which) or which is None
                                      else f" ({which})"))
        cells += [_cr(r[c]) for c in singles]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def export_section(s: dict[str, Any], budget: float) -> list[str]:
    """The exported (confirmed) chain against the best single stage, pair and full order that
    the same validation rule picks at the budget: test BitOpsCR and test drop of each."""
    c, b = s["confirm"], s["budgets"]
    if not c:
        return ["_(nothing exported)_"]
    ex = c["exported"]
    i = ex.get("candidate")
    cand = c["candidates"][i] if isinstance(i, int) and i < len(c["candidates"]) else next(
        (x for x in c["candidates"] if x["chain"] == ex["chain"] and x["from"] == ex["from"]
         and x["id"] == ex["id"]), None)
    if cand is None or not cand["runs"]:
        return ["_(confirm.json does not hold the exported candidate's runs)_"]
    base = s["baseline"]
    run = cand["runs"][0]
    mean_test = sum(r["test_accuracy"] for r in cand["runs"]) / len(cand["runs"])
    mean_val = sum(r["val_accuracy"] for r in cand["runs"]) / len(cand["runs"])
    mean_cr = sum(r["bitops_cr"] for r in cand["runs"]) / len(cand["runs"])
    drop = 100 * (base["test_accuracy"] - run["test_accuracy"])
    lines = [f"| at ≤ {budget:g} point (validation) | chain | test BitOpsCR | test drop "
             "(points) | note |", "|---|---|---|---|---|",
             f"| **exported** ({'confirmed' if ex['feasible'] else 'INFEASIBLE'}) | "
             f"{ex['chain']} (from {ex['from']} {ex['id']}) | {_cr(run['bitops_cr'])} | "
             f"{drop:+.2f} | mean of {len(cand['runs'])} seeds: test "
             f"{_cr(mean_cr)}, test drop {100 * (base['test_accuracy'] - mean_test):+.2f}, "
             f"val drop {100 * (base['val_accuracy'] - mean_val):+.2f}"
             + (f"; bound {cand['bound']:.2f}, σ_run {cand['sigma_run']:.2f}, margin "
                f"{cand['margin']:+.2f} at confidence {cand['confidence']:g}"
                if cand.get("bound") is not None else "; no bound (old rule)") + " |"]
    means = s.get("seed_means")
    if means is not None and "order" in means and means["order"].notna().any():
        return lines + _seed_mean_lines(means)
    col, dcol = f"bitops_cr@{budget:g}", f"test_drop@{budget:g}"
    for label, kind in (("best single stage", "single"), ("best pair", "pair"),
                        ("best full order", "brute")):
        rows = (b[(b["kind"] == kind) & b[col].notna()] if b is not None and col in b
                else pd.DataFrame())
        if rows.empty:
            swept = b is not None and (b["kind"] == kind).any()
            lines.append(f"| {label} | – | – | – | "
                         + ("nothing within budget" if swept else "no sweep") + " |")
            continue
        r = rows.loc[rows[col].idxmax()]
        lines.append(f"| {label} | {r['order']} | {_cr(r[col])} | {float(r[dcol]):+.2f} | "
                     "one run, picked on validation |")
    return lines


def _seed_mean_lines(means: pd.DataFrame) -> list[str]:
    """The rows of tables/seed_means.csv: the same rule on seed-averaged probe points."""
    lines = []
    for _, r in means.iterrows():
        if "order" not in r or pd.isna(r["order"]):
            lines.append(f"| {r['label']} | – | – | – | "
                         + ("nothing within budget" if r["points"] else "no point on two seeds")
                         + " |")
            continue
        tau = "" if pd.isna(r["tau"]) else f", τ {float(r['tau']):g}"
        lines.append(f"| {r['label']} | {r['order']} (sample {int(r['sample'])}{tau}) | "
                     f"{_cr(r['bitops_cr'])} | {float(r['test_drop']):+.2f} | mean of "
                     f"{int(r['seeds'])} seeds (val drop {float(r['val_drop']):+.2f}), picked on "
                     "validation by the export's rule |")
    return lines


def cost_section(s: dict[str, Any]) -> list[str]:
    shown = D.cost(s["cost"])
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in shown.itertuples(index=False)]
    b = s["brute"]
    if b:
        lines += ["", brute_sentence(b)]
    return lines


def overview(folders: Sequence[Path]) -> str:
    studies = [_load(f) for f in folders]
    lines = [BEGIN, "", "### Verdicts on the paper's claims", ""]
    lines += claims_section(studies)
    for s in studies:
        b = s["baseline"]
        lines += ["", f"### {s['name']}: best test BitOpsCR within a validation-drop budget",
                  "", f"Baseline: val {100 * b['val_accuracy']:.2f} %, test "
                  f"{100 * b['test_accuracy']:.2f} %, {b['bitops']:,} BitOps.", ""]
        lines += goals_section(s)
        budget = float(s["goals"]["budget"].max()) if not s["goals"].empty else 1.0
        if s["confirm"] and s["confirm"]["candidates"]:
            budget = float(s["confirm"].get("budget", budget))
        lines += ["", f"### {s['name']}: the exported chain against what the study measured",
                  ""]
        lines += export_section(s, budget)
        lines += ["", f"### {s['name']}: search cost", ""]
        lines += cost_section(s)
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_into(path: Path, text: str) -> None:
    """Replace the marked overview in `path` (append it when the markers are missing)."""
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + tail
    else:
        new = old + ("\n" if old else "") + text
    atomic.write_bytes(path, new.encode())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqsearch.report.overview",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="study folders (reports/<study>)")
    parser.add_argument("--write", type=Path, help="markdown file to update between markers")
    args = parser.parse_args(argv)
    try:
        text = overview(args.folders)
    except SeqsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        write_into(args.write, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
