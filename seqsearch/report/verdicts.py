"""The words for a pair's verdict, its power line and the rule, shared by the CLI, summary.md
and the page (order.json holds the figures; see `search.order`)."""

from __future__ import annotations

from typing import Any

from seqsearch.search.stats import units_needed_text


def outcome(p: dict[str, Any]) -> str:
    """`order` (a winner), `equivalent` or `undecided` (order.json of an older seqsearch:
    decided or undecided)."""
    return str(p.get("outcome") or ("order" if p.get("decided") else "undecided"))


def verdict_word(p: dict[str, Any]) -> str:
    """What a user reads: 'DQ first', 'either order (±0.5 pt)', 'undecided'."""
    o = outcome(p)
    if o == "order":
        return f"{p['winner']} first"
    if o == "equivalent":
        return f"either order (±{p.get('min_effect', 0):g} pt)"
    return "undecided"


def effect(p: dict[str, Any]) -> float:
    return float(p.get("effect", p.get("margin", 0.0)))


def power_text(p: dict[str, Any]) -> str:
    """One line: what the pair's units could detect and what the seen effect would need."""
    pw = p.get("power") or {}
    if pw.get("detectable") is None:
        return f"{p['units']} unit(s): too few to estimate the noise"
    first = p["orders"][0]
    need = units_needed_text(pw)
    size = abs(effect(p))
    if need is None:
        seen = "no effect seen"
    elif size < 0.005:  # "the 0.00-pt effect seen" reads as no effect; say how small it is
        seen = f"the effect seen is under 0.01 pt (it would need {need} units)"
    else:
        seen = f"the {size:.2f}-pt effect seen would need {need} units"
    at_max = (f"; {pw['max_samples']} units would detect {pw['detectable_at_max_samples']:.2f}"
              if pw.get("detectable_at_max_samples") is not None
              and pw["max_samples"] > p["units"] else "")
    return (f"{p['units']} units (sd {pw['sd']:.2f} pts) detect {pw['detectable']:.2f} pts "
            f"({first} − {p['orders'][1]}) with 80 % power at {pw.get('level', p['alpha']):.3g}; "
            f"{seen}{at_max}")


def rule_text(c: dict[str, Any]) -> str:
    """The decision rule as a sentence, from order.json's criteria."""
    stat = {"gap": "matched-compression accuracy gap",
            "hypervolume": "hypervolume difference per log BitOpsCR"}.get(
        c.get("statistic", "hypervolume"), "statistic")
    if "min_effect" not in c:  # an older order.json
        return (f"A pair is decided when a paired sign-flip test of the per-unit hypervolume "
                f"difference gives p ≤ {c.get('level_per_look', c.get('alpha', 0.1)):.3g}.")
    return (f"Per pair, a paired sign-flip test over the parameter samples (units; seeds "
            f"averaged inside a unit) of the {stat} in accuracy points on the validation "
            f"split. The {c.get('pairs', '?')} pairs are one family: Holm's step-down at alpha "
            f"{c['alpha']:g} / {c['looks']} planned look(s), so the chance of any false edge "
            f"in the DAG is at most {c['alpha']:g}; each pair's level is in its row. A pair "
            f"is ordered when its test rejects and its mean effect is at least "
            f"{c['min_effect']:g} points; equivalent ('either order is fine', no edge by "
            f"evidence) when two one-sided tests put the mean inside ±{c['min_effect']:g} "
            f"points at {c.get('equivalence_level', 0):.3g}; undecided otherwise.")


def counts(order: dict[str, Any]) -> str:
    """'2 ordered, 1 equivalent, 3 undecided'."""
    got = [outcome(p) for p in order["pairs"]]
    return (f"{got.count('order')} ordered, {got.count('equivalent')} equivalent, "
            f"{got.count('undecided')} undecided")


def seed_gap_text(n: dict[str, Any]) -> str | None:
    """'0.31 points over 272 pair runs (0.25 without a student, 0.40 with one)', or None
    where no pair ran two seeds."""
    if n.get("seed_gap_points") is None:
        return None
    parts = [f"{n[f'seed_gap_points_{side}']:.2f} {label}"
             for side, label in (("without_student", "without a student"),
                                 ("with_student", "with one"))
             if n.get(f"seed_gap_points_{side}") is not None]
    split = f" ({', '.join(parts)})" if parts else ""
    unit = "pair models" if n.get("seed_gap_unit") == "model" else "pair runs"
    return f"{n['seed_gap_points']:.2f} points over {n['seed_gap_runs']} {unit}{split}"


def methods_text(probe: dict[str, Any], tune: dict[str, Any]) -> str:
    """Which methods the verdicts were measured with against those the export tunes with:
    'Verdicts measured with quantize.method dorefa, distill.init scratch; the export uses
    quantize.method lsq, distill.init teacher: the verdicts are about other methods.'"""
    shown = [k for k in probe if probe[k] != "sampled" or tune.get(k) != "sampled"]
    differ = [k for k in shown if tune.get(k) != probe[k]]

    def listed(m: dict[str, Any], keys: list[str]) -> str:
        return ", ".join(f"{k} {m.get(k)}" for k in keys) or "the stages' defaults"

    if not differ:
        return f"Verdicts measured with the methods the export uses: {listed(probe, shown)}."
    return (f"Verdicts measured with {listed(probe, shown)}; the export tunes with "
            f"{listed(tune, differ)}: where these differ, the verdicts are about methods the "
            "exported chain does not use (the study's probe.fixed says so).")
