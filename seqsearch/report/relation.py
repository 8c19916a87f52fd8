"""How the exported chain relates to the proposed orders, and whether order mattered at all.

The probe proposes full orders; tuning switches each stage on or off, so the export is
usually a sub-chain of a proposed order. These sentences say which order it is a sub-chain
of, why each stage of that order is missing (the best feasible tuning trial that kept it
against the export), and, plainly, when the study found that the order barely matters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from seqsearch.report.results import Results, Tables, exported_candidate


def is_subchain(chain: str, order: str) -> bool:
    """`chain`'s letters appear in `order` in the same sequence (each stage on or off)."""
    it = iter(order)
    return all(c in it for c in chain)


def _best_with(tuning: pd.DataFrame, letter: str) -> dict[str, Any] | None:
    if tuning.empty or "chain" not in tuning or "val_bitops_cr" not in tuning:
        return None
    done = tuning[(tuning["state"] == "COMPLETE") & tuning["chain"].astype(str).str.contains(
        letter, regex=False)]
    if "constraint" in done:
        done = done[done["constraint"] <= 0]
    if done.empty:
        return None
    row = done.loc[done["val_bitops_cr"].idxmax()]
    return {"number": int(row["number"]), "chain": str(row["chain"]),
            "val_bitops_cr": float(row["val_bitops_cr"])}


def relation_sentences(exported: str | None, exported_val_cr: float | None,
                       orders: Sequence[str], tuning: pd.DataFrame) -> list[str]:
    """Which proposed orders the exported chain is a sub-chain of, and why each skipped
    stage was left out."""
    if not exported or not orders:
        return []
    parents = [o for o in orders if is_subchain(exported, o)]
    if not parents:
        return [f"The exported chain {exported} is a sub-chain of none of the proposed orders: "
                "it comes from a measured point of another order (the probe's, or a warm "
                "start), which confirmed best within the budget."]
    shown = ", ".join(parents[:6]) + (f" and {len(parents) - 6} more" if len(parents) > 6
                                      else "")
    out = [f"The exported chain {exported} keeps the order of the proposed "
           + ("order " if len(parents) == 1 else "orders ") + shown
           + ": tuning switches each stage on or off, so a chain is a proposed order with "
           "some stages left out."]
    skipped = [c for c in parents[0] if c not in exported]
    for letter in skipped:
        best = _best_with(tuning, letter)
        if best is None:
            out.append(f"{letter} was left out: no tuning trial with {letter} met the budget.")
        elif exported_val_cr is not None and math.isfinite(exported_val_cr):
            out.append(f"{letter} was left out: the best tuning trial with it within the budget "
                       f"(trial {best['number']}, {best['chain']}) reached "
                       f"{best['val_bitops_cr']:.1f}× validation BitOpsCR against the "
                       f"export's {exported_val_cr:.1f}×.")
        else:
            out.append(f"{letter} was left out: the best tuning trial with it within the budget "
                       f"is trial {best['number']} ({best['chain']}, "
                       f"{best['val_bitops_cr']:.1f}× validation BitOpsCR).")
    return out


def order_matters_sentence(order: dict[str, Any], brute: dict[str, Any] | None,
                           stages: int) -> str | None:
    """A plain sentence when the study finds that the order barely matters: no pair decided
    (equivalent or undecided), or the brute force cannot tell most orders from the best."""
    total = math.factorial(stages)
    decided = len(order.get("decided", []))
    pairs = len(order.get("pairs", []))
    if brute and brute.get("top_set") and len(brute["ranking"]) == total \
            and len(brute["top_set"]) >= total / 2:
        return (f"Order barely matters here: {len(brute['top_set']) - 1} of the other "
                f"{total - 1} full orders are not distinguishable from the best one "
                "(brute force over every order); choose the chain on its compression and cost, "
                "not on its order.")
    if pairs and decided == 0:
        eq = len(order.get("equivalent", []))
        if eq == pairs:
            return (f"Order barely matters here: all {pairs} pairs are equivalent (their two "
                    "orders within the practical effect), so every order is a candidate; "
                    "choose the chain on its compression and cost, not on its order.")
        return (f"No order was shown to matter here: no pair was decided ({eq} of {pairs} "
                "equivalent, the rest undecided at this study's power, each pair's line says "
                "what it could detect), so every order is a candidate; choose the chain on its "
                "compression and cost, not on its order.")
    return None


def relation_lines(r: Results, t: Tables) -> list[str]:
    """How the export relates to the proposed orders, and whether order mattered at all."""
    c = exported_candidate(r.export)
    chain = c["chain"] if c else None
    cr = float(c["val_bitops_cr"]) if c and c.get("val_bitops_cr") is not None else None
    out = relation_sentences(chain, cr, r.order.get("orders", []), t.tuning)
    plain = order_matters_sentence(r.order, r.brute, len(r.order.get("letters", "")))
    return out + ([plain] if plain else [])
