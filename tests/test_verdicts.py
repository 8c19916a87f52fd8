"""Verdicts that decide (no training): the matched-compression gap, Holm over the DAG's pairs,
equivalence, power lines, the label-swap null, added samples, and the defects of the old rule
(each test below fails on the rule before issue 21)."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from seqsearch.search.gap import attainment, matched_gap
from seqsearch.search.null import label_swap_null
from seqsearch.search.order import Criteria, compare, decide, noise, rank_orders
from seqsearch.search.stats import (
    bootstrap_sign,
    equivalence_p,
    holm,
    power_line,
    sign_flip_p,
)

BASE = 0.98


def row(order, sample, seed, acc, cr, *, tau=None, test=None, kind="pair"):
    return {"order": order, "kind": kind, "sample": sample, "seed": seed, "tau": tau,
            "val_accuracy": acc, "test_accuracy": acc if test is None else test,
            "val_bitops_cr": cr, "bitops_cr": cr}


def pair_table(gaps, *, pair="AB", base_acc=0.95, cr=20.0, seeds=(0,)):
    """One unit per gap (fraction): AB at base_acc + gap, BA at base_acc, same BitOpsCR."""
    rows = []
    for k, g in enumerate(gaps):
        for s in seeds:
            rows += [row(pair, k, s, base_acc + g, cr), row(pair[::-1], k, s, base_acc, cr)]
    return pd.DataFrame(rows)


def split(table, pair="AB"):
    return table[table["order"] == pair], table[table["order"] == pair[::-1]]


# --- the statistic --------------------------------------------------------------------------


def test_matched_gap_compares_where_both_runs_reach():
    # one point each: the less compressed run against the other's accuracy at >= its CR
    assert matched_gap([(0.95, 2.0)], [(0.93, 3.0)]) == pytest.approx(2.0)
    assert matched_gap([(0.93, 3.0)], [(0.95, 2.0)]) == pytest.approx(-2.0)
    # two τ sweeps: the mean over [max of mins, min of maxes] = [1, 3] of the step curves
    a = [(0.97, 1.0), (0.95, 2.0), (0.90, 3.0)]
    b = [(0.96, 0.5), (0.94, 3.0), (0.80, 4.0)]
    # on (1, 2]: 0.95 vs 0.94; on (2, 3]: 0.90 vs 0.94
    assert matched_gap(a, b) == pytest.approx(100 * ((0.95 - 0.94) + (0.90 - 0.94)) / 2)
    assert matched_gap(b, a) == pytest.approx(-matched_gap(a, b))
    assert attainment(a, 2.5) == 0.90 and attainment(a, 9.0) == -math.inf
    assert matched_gap([], a) is None


def test_the_gap_sees_runs_below_the_reference():
    """Every run is 5 points below the baseline, under the hypervolume's reference (2 points):
    the old statistic was identically zero (p = 1 by construction); the gap decides."""
    table = pair_table([0.01] * 8, base_acc=BASE - 0.05)
    ab, ba = split(table)
    hv = compare(ab, ba, Criteria(BASE, bootstrap=0, statistic="hypervolume"),
                 first="AB", second="BA")
    assert hv["p_value"] == 1.0 and hv["informative_units"] == 0
    assert not hv["decidable"]  # old: True, counting units whose statistic cannot move
    assert hv["outcome"] == "undecided"  # a censored zero is not evidence of equivalence
    gap = compare(ab, ba, Criteria(BASE, bootstrap=0), first="AB", second="BA")
    assert gap["effect"] == pytest.approx(1.0) and gap["p_value"] == pytest.approx(2 / 256)
    assert gap["outcome"] == "order" and gap["winner"] == "AB"


def test_the_effect_is_in_points_not_relative():
    """Hypervolumes near zero made the old relative margin ±1: a 0.05-point difference just
    above the reference looked like a full-size effect. Now it is below min_effect."""
    table = pair_table([0.0005] * 8, base_acc=BASE - 0.0199)
    ab, ba = split(table)
    v = compare(ab, ba, Criteria(BASE, bootstrap=0, statistic="hypervolume"),
                first="AB", second="BA")
    assert v["p_value"] == pytest.approx(2 / 256)
    assert abs(v["effect"]) < 0.5 and not v["decided"]
    assert v["outcome"] == "equivalent"  # 0.05 point apart on every unit: either order


def test_one_highly_compressed_unit_does_not_outweigh_the_rest():
    """Seven units favour BA by a point at ~7x, one favours AB at ~160,000x: the raw
    hypervolume sum followed the wide unit; per log-CR span it follows the seven."""
    rows = []
    for k in range(7):
        rows += [row("AB", k, 0, 0.969, 7.0), row("BA", k, 0, 0.979, 7.0)]
    rows += [row("AB", 7, 0, 0.979, 160_000.0), row("BA", 7, 0, 0.961, 160_000.0)]
    ab, ba = split(pd.DataFrame(rows))
    v = compare(ab, ba, Criteria(BASE, bootstrap=0, statistic="hypervolume"),
                first="AB", second="BA")
    raw = sum(u["AB"] - u["BA"] for u in v["unit_statistic"].values())
    assert raw > 0  # what the old rule summed
    assert v["effect"] < 0


def test_the_test_split_uses_its_own_baseline():
    """Test accuracies 1 point below a test baseline that is 3 points under validation's: the
    old rule measured them against the validation reference (all censored to zero)."""
    rows = []
    for k in range(4):
        rows += [row("AB", k, 0, 0.97, 10.0, test=0.94), row("BA", k, 0, 0.97, 10.0, test=0.93)]
    ab, ba = split(pd.DataFrame(rows))
    crit = Criteria(BASE, bootstrap=0, statistic="hypervolume", test_baseline_accuracy=0.95)
    assert compare(ab, ba, crit, first="AB", second="BA")["test_effect"] > 0
    old_like = Criteria(BASE, bootstrap=0, statistic="hypervolume")
    assert compare(ab, ba, old_like, first="AB", second="BA")["test_effect"] == 0


def test_seed_gap_counts_chains_without_early_exit():
    """τ is NaN for a chain without E: pandas >= 3 kept it missing and groupby dropped it."""
    rows = []
    for k in range(3):
        rows += [row("AB", k, 0, 0.95, 5.0), row("AB", k, 1, 0.93, 5.0)]
        rows += [row("AE", k, 0, 0.95, 5.0, tau=0.9), row("AE", k, 1, 0.94, 5.0, tau=0.9)]
    n = noise(pd.DataFrame(rows), Criteria(BASE, bootstrap=0))
    assert n["seed_gap_runs"] == 6
    assert n["seed_gap_points"] == pytest.approx((3 * 2.0 + 3 * 1.0) / 6)


def test_seed_gap_is_split_by_order_and_by_student():
    """The gap of chains with a student (D) is reported apart from the rest, and per order."""
    rows = []
    for k in range(2):
        rows += [row("PQ", k, 0, 0.95, 5.0), row("PQ", k, 1, 0.945, 5.0)]
        rows += [row("DQ", k, 0, 0.95, 5.0), row("DQ", k, 1, 0.92, 5.0)]
    n = noise(pd.DataFrame(rows), Criteria(BASE, bootstrap=0))  # D: distill, a student
    assert n["seed_gap_points_without_student"] == pytest.approx(0.5)
    assert n["seed_gap_points_with_student"] == pytest.approx(3.0)
    assert n["seed_gap_runs_with_student"] == n["seed_gap_runs_without_student"] == 2
    assert n["seed_gap_by_order"]["DQ"] == {"points": pytest.approx(3.0), "runs": 2}
    assert n["seed_gap_points"] == pytest.approx(1.75)


def test_bootstrap_with_no_draws_claims_nothing():
    assert bootstrap_sign([1.0, 2.0], draws=0) is None
    assert bootstrap_sign([], draws=10) == 0.5


def test_top_set_uses_the_per_look_level():
    """An order 1 point behind the best on 7 of 8 units (p = 18/256 = 0.070): with two looks
    the level is 0.05, so it stays in the top set (the old rule compared p to alpha 0.1)."""
    rows = []
    for k in range(8):
        worse = 0.01 if k < 7 else -0.01
        rows += [row("ABC", k, 0, 0.975, 10.0, kind="brute"),
                 row("CBA", k, 0, 0.975 - worse, 10.0, kind="brute")]
    ranking = rank_orders(pd.DataFrame(rows), Criteria(BASE, bootstrap=0, alpha=0.1, looks=2))
    cba = next(r for r in ranking if r["order"] == "CBA")
    assert cba["p_vs_best"] == pytest.approx(18 / 256)
    assert cba["in_top_set"]


# --- the family, equivalence and power ------------------------------------------------------


def test_holm_step_down():
    got = holm([0.01, 0.04, 0.03, 0.2], 0.1)
    assert [lvl for lvl, _ in got] == pytest.approx([0.025, 0.05, 0.1 / 3, 0.1])
    assert [r for _, r in got] == [True, True, True, False]
    # stops at the first miss even where a later p meets its own level
    assert [r for _, r in holm([0.03, 0.031], 0.05)] == [False, False]


def test_pairs_are_corrected_together():
    """Three pairs each with 7 of 7 units one way (p = 1/64 each) and three null pairs, alpha
    0.05: alone each of the three met 0.05 (the old rule drew three edges); as a family of six
    the first Holm step is 0.05 / 6 = 0.0083 and none is an edge."""
    rng = random.Random(3)
    parts = []
    for name in ("AB", "AC", "AD"):
        parts.append(pair_table([0.01 + rng.uniform(0, 0.002) for _ in range(7)], pair=name))
    for name in ("BC", "BD", "CD"):
        parts.append(pair_table([rng.gauss(0, 0.01) for _ in range(7)], pair=name))
    crit = Criteria(BASE, bootstrap=0, alpha=0.05)
    alone = compare(*split(parts[0]), crit, first="AB", second="BA")
    assert alone["p_value"] == pytest.approx(1 / 64) and alone["decided"]
    result = decide(pd.concat(parts), "ABCD", crit)
    assert result["edges"] == [] and result["decided"] == []
    levels = sorted(result["criteria"]["family_levels"].values())
    assert levels[0] == pytest.approx(0.05 / 6)


def test_equivalent_orders_are_a_verdict():
    """Sixteen units whose gaps are within ±0.2 point: TOST puts the mean inside ±0.5."""
    rng = random.Random(7)
    table = pair_table([rng.uniform(-0.002, 0.002) for _ in range(16)])
    result = decide(table, "AB", Criteria(BASE, bootstrap=0, alpha=0.1))
    (v,) = result["pairs"]
    assert v["outcome"] == "equivalent" and v["equivalent"] and not v["decided"]
    assert result["equivalent"] == ["AB"] and result["undecided"] == [] and not result["edges"]
    assert equivalence_p([0.1] * 8, 0.5) == pytest.approx(1 / 256)
    assert equivalence_p([0.1] * 8, 0.0) == 1.0
    # a big consistent effect is not equivalent
    big = decide(pair_table([0.02] * 16), "AB", Criteria(BASE, bootstrap=0))["pairs"][0]
    assert big["outcome"] == "order" and big["equivalence_p"] == 1.0


def test_power_line():
    """The detectable effect is the exact sign-flip test's (noncentral t at the attainable
    level, tests/test_decision_rule.py checks its power by simulation): above the normal
    approximation's, which overstated the power."""
    diffs = [1.0, -1.0] * 4  # sd 1.069, mean 0
    pw = power_line(diffs, 0.05)
    z = 1.959963984540054 + 0.8416212335729143
    assert pw["sd"] == pytest.approx(1.0690449676)
    assert pw["detectable"] > z * pw["sd"] / math.sqrt(8)
    assert pw["units_needed"] is None  # no effect seen
    need = power_line([1.0, 2.0, 3.0], 0.05, effect=0.5)["units_needed"]
    assert need > math.ceil((z * 1.0 / 0.5) ** 2)
    from seqsearch.search.stats import detectable_effect

    assert detectable_effect(need, 1.0, 0.05) <= 0.5 < detectable_effect(need - 1, 1.0, 0.05)


def test_undecided_pairs_carry_a_power_line():
    rng = random.Random(2)
    table = pair_table([rng.gauss(0.003, 0.01) for _ in range(8)])
    (v,) = decide(table, "AB", Criteria(BASE, bootstrap=0))["pairs"]
    assert v["outcome"] == "undecided"
    assert v["power"]["detectable"] > abs(v["effect"])
    assert v["power"]["units_needed"] > 8


# --- the label-swap null --------------------------------------------------------------------


def planted_null(rng: random.Random, pairs=("AB", "AC", "AD", "BC", "BD", "CD"), k=8):
    """No order effect: per unit both orders share a difficulty, each run adds noise."""
    parts = []
    for name in pairs:
        rows = []
        for s in range(k):
            shared = rng.gauss(0.95, 0.01)
            rows += [row(name, s, 0, shared + rng.gauss(0, 0.01), 10.0),
                     row(name[::-1], s, 0, shared + rng.gauss(0, 0.01), 10.0)]
        parts.append(pd.DataFrame(rows))
    return pd.concat(parts)


def test_label_swap_null_stays_within_alpha():
    crit = Criteria(BASE, bootstrap=0, alpha=0.1, min_effect=0.0)
    result = decide(planted_null(random.Random(11)), "ABCD", crit)
    null = result["null_check"]
    se = math.sqrt(0.1 * 0.9 / null["draws"])
    assert null["study_false_edge_rate"] <= 0.1 + 3 * se
    for pair in null["pairs"].values():
        assert pair["exact"] and pair["false_edge_rate"] <= pair["level"] + 1e-12
        assert pair["false_edge_rate_at_largest"] <= pair["largest_level"] + 1e-12
    # the check has teeth: six pairs each at 0.1 without the family correction exceed it
    loose = label_swap_null(result["pairs"], 0.1, 0.0, draws=20_000, holm=False)
    assert loose["study_false_edge_rate"] > 0.2


def test_exact_enumeration_is_the_sign_flip_distribution():
    """Per pair, the share of the 2^K swaps whose p meets a level is at most that level."""
    verdicts = [{"pair": "AB", "unit_statistic": {str(i): {"value": v} for i, v in
                                                   enumerate([0.3, 1.2, -0.7, 2.0, 0.1, 0.9])}}]
    values = [float(u["value"]) for u in verdicts[0]["unit_statistic"].values()]
    out = label_swap_null(verdicts, 0.2, 0.0, draws=10)
    by_hand = sum(sign_flip_p([v * (1 - 2 * (m >> i & 1)) for i, v in enumerate(values)])
                  <= 0.2 for m in range(64)) / 64
    assert out["pairs"]["AB"]["false_edge_rate"] == pytest.approx(by_hand)
    assert 0 < by_hand <= 0.2


# --- samples added where a pair is contested ------------------------------------------------


def test_contested_pairs_get_more_samples(tmp_path):
    """D before P is planted at 3 points (decided on 8 samples); Q after P at 2 points with
    1-point run noise (undecided on 8, decided on 16); D and Q do not interact, with little
    noise (equivalent or undecided). Only the undecided pairs get samples 8-15, on the same
    params for every pair that shares a stage, and the cost is below the fixed plan."""
    from seqsearch.config import StudyConfig
    from seqsearch.pipeline import criteria, run_pairs
    from seqsearch.search.probe import Prober, UnitResult, make_samples
    from seqsearch.search.storage import open_storage

    letter = {"distill": "D", "prune": "P", "quantize": "Q"}
    seen: dict[tuple[str, int], list[str]] = {}

    def execute(steps, seed):
        letters = "".join(letter[name] for name, _ in steps)
        for name, params in steps:
            seen.setdefault((letter[name], repr(sorted(params.items()))), []).append(letters)
        r = random.Random(repr((steps, seed)))
        acc = 0.95 + {"DP": 0.03, "PQ": 0.02}.get(letters, 0.0) + r.gauss(0.0, 0.01 if "P" in
                                                                            letters else 0.001)
        return UnitResult([row(letters, 0, seed, acc, 10.0)], 1, len(steps) - 1, 0.0)

    study = StudyConfig.model_validate({
        "version": 1, "name": "more-samples", "model": {"name": "tiny"},
        "stages": ["distill", "prune", "quantize"],
        "probe": {"samples": 8, "max_samples": 16, "seeds": [0], "bootstrap": 0}})
    assert study.probe.planned_looks() == 2 and study.probe.sample_looks() == [16]
    samples = make_samples(study.stages, study.probe.most_samples(), 0, {})
    assert make_samples(study.stages, 8, 0, {})["P"] == samples["P"][:8]  # a sequence
    prober = Prober(tmp_path, open_storage(None, tmp_path), "more", execute, samples)
    crit = criteria(study, {"val_accuracy": BASE, "test_accuracy": BASE})
    used = run_pairs(study, prober, crit)
    assert used["samples_per_pair"]["DP"] == 8
    assert used["samples_per_pair"]["PQ"] == 16
    assert [look["samples"] for look in used["looks"]] == [8, 16]
    assert "DP" not in used["looks"][1]["pairs"]
    assert used["stage_trainings"] < used["fixed_allocation_stage_trainings"] == 3 * 3 * 16
    final = decide(prober.table(), "DPQ", crit)
    assert final["criteria"]["looks"] == 2
    outcome = {p["pair"]: p["outcome"] for p in final["pairs"]}
    assert outcome["DP"] == "order" and outcome["PQ"] == "order"
    # a new sample of P is the same params in PQ and PD: P's sample 12 ran in both
    p12 = repr(sorted(samples["P"][12].items()))
    assert {"PQ", "QP"} <= set(seen[("P", p12)])


def test_a_resumed_look_decides_on_the_looks_before_it_only():
    """A probe killed inside look 3 holds some of its units; on resume, the seed look's
    decision must not see them (nor another seed's), or a pair could stop on part of a look."""
    from seqsearch.pipeline import open_at_look

    first = pair_table([0.01, -0.01, 0.01, -0.01, 0.01, -0.01, 0.01, -0.01])
    later = pair_table([0.03] * 8)
    later["sample"] += 8
    other_seed = pair_table([0.03] * 8, seeds=(1,))
    table = pd.concat([first, later, other_seed], ignore_index=True)
    crit = Criteria(BASE, bootstrap=0, looks=3)
    assert open_at_look(first, "AB", crit, 8, [0]) == ["AB"]
    assert open_at_look(table, "AB", crit, 16) == []  # on everything it would stop
    assert open_at_look(table, "AB", crit, 8, [0]) == ["AB"]


def test_insertion_checks_are_one_look_whatever_the_probe_planned():
    """§4's checks run once: six of them on 8 units under a 3-look probe design. At alpha / 3
    looks / 6 = 0.0056 the smallest sign-flip p (2/256 = 0.0078) could never pass; at the
    check's own level the two planted insertions are decided."""
    from seqsearch.search.order import check_insertions

    rows = []
    for k in range(8):
        for order, acc in (("ACB", 0.97), ("BCA", 0.95), ("ADB", 0.97), ("BDA", 0.95),
                           ("CAD", 0.95), ("DAC", 0.951), ("CBD", 0.95), ("DBC", 0.951),
                           ("ABD", 0.95), ("DBA", 0.951), ("ACD", 0.95), ("DCA", 0.951)):
            rows.append(row(order, k, 0, acc + (0.0005 if k % 2 else 0.0), 10.0,
                            kind="insert"))
    crit = Criteria(BASE, bootstrap=0, alpha=0.1, looks=3, max_samples=16)
    checks = check_insertions(pd.DataFrame(rows), ["AB", "CD", "AD"], "ABCD", crit)
    assert len(checks) == 6
    decided = {(c["pair"], c["inserted"]) for c in checks if c["decided"]}
    assert decided == {("AB", "C"), ("AB", "D")}
    assert min(c["alpha"] for c in checks) == pytest.approx(0.1 / 6)


def test_power_line_caps_the_units_needed_instead_of_printing_the_normal_approximation():
    """A vanishing effect once gave the normal approximation's 59,224,748,104,581 units: the
    search now stops at UNITS_CAP and says so."""
    from seqsearch.search.stats import UNITS_CAP, units_needed_text

    diffs = [1.65, -1.65] * 8 + [0.0064]  # sd 1.6, mean 0.0004
    pw = power_line(diffs, 0.05)
    assert pw["units_needed"] is None and pw["units_needed_over"] == UNITS_CAP
    assert units_needed_text(pw) == "over 100,000"
    # just under the cap the exact search still answers, and the answer holds
    pw = power_line([1.0, 2.0, 3.0], 0.05, effect=0.5)
    assert units_needed_text(pw) == f"{pw['units_needed']:,}" and "units_needed_over" not in pw
    assert units_needed_text({"units_needed": None}) is None  # no effect seen
    # an order.json written before the cap keeps its raw figure: it reads as over the cap
    assert units_needed_text({"units_needed": 59224748104581}) == "over 100,000"


def test_power_text_names_a_vanishing_effect_instead_of_its_units():
    from seqsearch.report.verdicts import power_text
    pair = {"units": 16, "orders": ["DQ", "QD"], "alpha": 0.05, "effect": 0.0004,
            "power": {"detectable": 1.68, "sd": 1.65, "units_needed": None,
                      "units_needed_over": 100_000}}
    assert "the effect seen is under 0.01 pt (it would need over 100,000 units)" in \
        power_text(pair)
    pair["power"] = {"detectable": 1.68, "sd": 1.65, "units_needed": 59224748104581}
    assert "over 100,000 units" in power_text(pair)  # an older order.json
    pair["effect"] = 2.34
    pair["power"]["units_needed"] = 1054
    assert "the 2.34-pt effect seen would need 1,054 units" in power_text(pair)
