"""The paired decision rule on planted data (no training): it decides a real order effect,
decides a null pair at most about alpha of the time, and spends seeds only on undecided pairs."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from seqsearch.search.order import Criteria, compare, decide, rank_orders
from seqsearch.search.stats import look_alpha, sign_flip_p, smallest_p

BASE = 0.98
CRIT = Criteria(baseline_accuracy=BASE, bootstrap=0, alpha=0.1)


def planted_rows(rng: random.Random, effect: float, *, k: int = 8, seeds: tuple[int, ...] = (0,),
                 noise: float = 0.006, orders: tuple[str, str] = ("AB", "BA")
                 ) -> pd.DataFrame:
    """Per sample a shared difficulty and BitOpsCR; each run adds its own accuracy noise. The
    first order gains `effect` (fraction) over the second."""
    rows = []
    for sample in range(k):
        shared = rng.gauss(-0.008, 0.004)
        cr = math.exp(rng.uniform(2.0, 4.0))
        for seed in seeds:
            for i, order in enumerate(orders):
                acc = BASE + shared + rng.gauss(0.0, noise) + (effect if i == 0 else 0.0)
                rows.append({"order": order, "kind": "pair", "sample": sample, "seed": seed,
                             "tau": None, "val_accuracy": acc, "test_accuracy": acc,
                             "val_bitops_cr": cr, "bitops_cr": cr})
    return pd.DataFrame(rows)


def test_sign_flip_p_is_exact_on_small_cases():
    assert sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)
    assert sign_flip_p([1.0, -1.0]) == 1.0
    assert sign_flip_p([0.0, 0.0]) == 1.0  # no evidence either way
    assert sign_flip_p([3.0, 1.0, 1.0, 1.0, -0.5]) == pytest.approx(4 / 32)
    assert smallest_p(4) == pytest.approx(0.125) and smallest_p(5) == pytest.approx(0.0625)
    assert look_alpha(0.1, 2) == pytest.approx(0.05)


def test_a_planted_order_effect_is_decided():
    rng = random.Random(1)
    wins = 0
    for _ in range(60):
        table = planted_rows(rng, 0.015)
        v = compare(table[table["order"] == "AB"], table[table["order"] == "BA"], CRIT,
                    first="AB", second="BA")
        assert v["units"] == 8 and v["decidable"]
        if v["decided"]:
            assert v["winner"] == "AB" and v["p_value"] <= 0.1
            wins += 1
    assert wins >= 54  # power at least 0.9 for an effect of 1.5 pt with 0.6 pt run noise


def test_no_effect_is_decided_at_most_about_alpha_of_the_time():
    rng = random.Random(2)
    n, decided = 400, 0
    for _ in range(n):
        table = planted_rows(rng, 0.0)
        v = compare(table[table["order"] == "AB"], table[table["order"] == "BA"], CRIT,
                    first="AB", second="BA")
        decided += v["decided"]
        assert v["decided"] or v["winner"] is None
    # the test is exact, so the rate is at most alpha up to sampling error (3 standard errors)
    assert decided / n <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / n)


def test_seeds_are_repeats_inside_a_unit_not_new_units():
    rng = random.Random(3)
    table = planted_rows(rng, 0.01, k=4, seeds=(0, 1, 2))
    v = compare(table[table["order"] == "AB"], table[table["order"] == "BA"], CRIT,
                first="AB", second="BA")
    assert v["units"] == 4 and v["seeds"] == [0, 1, 2]
    assert not v["decided"] and not v["decidable"]  # 4 units cannot reach p <= 0.1
    assert v["p_value"] >= smallest_p(4)


def test_only_decided_pairs_become_edges():
    rng = random.Random(4)
    strong = planted_rows(rng, 0.01, orders=("DP", "PD"))
    null = planted_rows(rng, 0.0, orders=("PQ", "QP"))
    other = planted_rows(rng, 0.01, orders=("DQ", "QD"))
    result = decide(pd.concat([strong, null, other]), list("DPQ"), CRIT)
    by_pair = {p["pair"]: p for p in result["pairs"]}
    assert by_pair["DP"]["decided"] and by_pair["DQ"]["decided"]
    edges = {(e["from"], e["to"]) for e in result["edges"]}
    assert edges == {(p["winner"][0], p["winner"][1]) for p in result["pairs"] if p["decided"]}
    if not by_pair["PQ"]["decided"]:  # undecided: both orders of P and Q stay candidates
        assert set(result["orders"]) == {"DPQ", "DQP"}
        assert result["undecided"] == ["PQ"]
    assert result["criteria"]["alpha"] == 0.1 and result["criteria"]["max_drop"] == 2.0


def test_brute_force_ranking_carries_intervals_and_a_top_set():
    """Six orders on the same 8 samples: two clearly worse than the rest."""
    rng = random.Random(5)
    offsets = {"ABC": 0.004, "ACB": 0.0035, "BAC": 0.003, "BCA": 0.003, "CAB": -0.01,
               "CBA": -0.012}
    rows = []
    for sample in range(8):
        shared = rng.gauss(-0.008, 0.002)
        cr = math.exp(rng.uniform(2.0, 4.0))
        for order, off in offsets.items():
            acc = BASE + shared + off + rng.gauss(0.0, 0.002)
            rows.append({"order": order, "kind": "brute", "sample": sample, "seed": 0,
                         "tau": None, "val_accuracy": acc, "test_accuracy": acc,
                         "val_bitops_cr": cr, "bitops_cr": cr})
    crit = Criteria(baseline_accuracy=BASE, bootstrap=100, alpha=0.1)
    ranking = rank_orders(pd.DataFrame(rows), crit)
    assert [r["rank"] for r in ranking] == list(range(1, 7))
    assert ranking[0]["in_top_set"] and ranking[0]["p_vs_best"] == 1.0
    assert {r["order"] for r in ranking[-2:]} == {"CAB", "CBA"}
    assert not any(r["in_top_set"] for r in ranking[-2:])
    for r in ranking:
        low, high = r["rank_interval"]
        assert 1 <= low <= high <= 6
        assert r["in_top_set"] == (r["p_vs_best"] > 0.1)


def test_adaptive_seeds_go_only_to_undecided_pairs(tmp_path):
    """D before P is planted strongly, P and Q have no order effect: DP is decided on seed 0
    and never runs seed 1; PQ (and DQ) get seed 1; the cost is below the fixed allocation."""
    from seqsearch.config import StudyConfig
    from seqsearch.pipeline import run_pairs
    from seqsearch.search.probe import Prober, UnitResult, make_samples
    from seqsearch.search.storage import open_storage

    letter = {"distill": "D", "prune": "P", "quantize": "Q"}

    def execute(steps, seed):
        letters = "".join(letter[name] for name, _ in steps)
        noise = random.Random(repr((steps, seed))).gauss(0.0, 0.004)
        acc = BASE - 0.008 + noise + (0.02 if letters == "DP" else 0.0)
        cr = 2.0 + sum(len(repr(p)) for _, p in steps) % 13  # > 1: every unit counts
        row = {"val_accuracy": acc, "test_accuracy": acc, "val_bitops_cr": cr,
               "bitops_cr": cr, "tau": None}
        return UnitResult([row], 1, len(steps) - 1, 0.0)

    study = StudyConfig.model_validate({
        "version": 1, "name": "adaptive", "model": {"name": "tiny"},
        "stages": ["distill", "prune", "quantize"],
        "probe": {"samples": 8, "seeds": [0, 1], "bootstrap": 0, "max_samples": 8}})
    samples = make_samples(study.stages, 8, 0, {})
    prober = Prober(tmp_path, open_storage(None, tmp_path), "adaptive-probe", execute, samples)
    crit = Criteria(baseline_accuracy=BASE, bootstrap=0, alpha=0.1, looks=2)
    used = run_pairs(study, prober, crit)
    assert used["seeds_per_pair"]["DP"] == [0]
    assert used["seeds_per_pair"]["PQ"] == [0, 1]
    assert used["stage_trainings"] < used["fixed_allocation_stage_trainings"] == 3 * 3 * 8 * 2
    seeds_run = {(u["unit"]["order"], u["unit"]["seed"]) for u in prober.load_units()}
    assert ("DP", 1) not in seeds_run and ("PD", 1) not in seeds_run
    assert ("PQ", 1) in seeds_run and ("Q", 1) in seeds_run


def test_noise_counts_models_not_tau_rows():
    """An E model's eight τ rows are one model: its seed gap is their mean. The old count took
    every τ row as a run (8 of 9 'runs' here, half the models) and so reported 0.2 points
    over 9 runs where the two models say 0.55 over 2."""
    from seqsearch.search.order import noise

    rows = []
    for seed, shift in ((0, 0.0), (1, 0.001)):
        for tau in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01):
            rows.append({"kind": "pair", "order": "PE", "sample": 0, "seed": seed, "tau": tau,
                         "val_accuracy": 0.97 + shift})
    for seed, shift in ((0, 0.0), (1, 0.01)):
        rows.append({"kind": "pair", "order": "DP", "sample": 0, "seed": seed, "tau": None,
                     "val_accuracy": 0.96 + shift})
    n = noise(pd.DataFrame(rows), CRIT)
    assert n["seed_gap_runs"] == 2 and n["seed_gap_unit"] == "model"
    assert n["seed_gap_points"] == pytest.approx(0.55)
    # the student split comes from the stage registry (distill says it trains a new network)
    assert n["students"] == ["D"]
    assert n["seed_gap_points_with_student"] == pytest.approx(1.0)
    assert n["seed_gap_points_without_student"] == pytest.approx(0.1)


def _verdict(pair: str, p: float, effect: float) -> dict:
    units = {str(i): {"value": effect + (0.1 if i % 2 else -0.1)} for i in range(16)}
    return {"pair": pair, "orders": [pair, pair[::-1]], "p_value": p, "effect": effect,
            "equivalence_p": 1.0, "units": 16, "informative_units": 16,
            "unit_statistic": units}


def test_an_edge_decided_at_an_interim_look_stands():
    """At look 1, EF is significant but too small to be an edge (0.2 < 0.5 points), so it
    gets more data; AB (p 0.0045) is rejected at Holm's second step and stops. At the final
    look EF's p has risen to 0.3: recomputing Holm over all pairs puts AB first, at the
    stricter first step, and un-decides it. Kept, AB's interim rejection stands and the final
    Holm runs over the rest."""
    from seqsearch.search.order import family

    crit = Criteria(baseline_accuracy=BASE, bootstrap=0, alpha=0.01)
    look1 = family([_verdict("EF", 0.002, 0.2), _verdict("AB", 0.0045, 1.0),
                    _verdict("CD", 0.5, 0.1)], crit)
    ab = next(v for v in look1 if v["pair"] == "AB")
    assert ab["outcome"] == "order" and ab["alpha"] == pytest.approx(0.005)
    final = [_verdict("EF", 0.3, 0.2), _verdict("AB", 0.0045, 1.0), _verdict("CD", 0.5, 0.1)]
    recomputed = family([dict(v) for v in final], crit)
    assert next(v for v in recomputed if v["pair"] == "AB")["outcome"] == "undecided"
    kept = {"AB": {"look": 1, "winner": "AB", "p_value": 0.0045, "alpha": ab["alpha"]}}
    stood = next(v for v in family(final, crit, kept) if v["pair"] == "AB")
    assert stood["outcome"] == "order" and stood["winner"] == "AB"
    assert stood["alpha"] == pytest.approx(0.005) and stood["family"]["decided_at_look"] == 1


def test_adaptive_replay_claims_no_saving_for_a_design_that_did_not_run():
    """An adaptive probe gave seed 1 to one of two pairs: the fixed allocation (both pairs on
    both seeds) never ran, so the replay neither measures its cost nor claims a saving; a
    probe that ran every seed on every pair is replayed."""
    from seqsearch.search.order import adaptive_replay

    rng = random.Random(3)
    ab = planted_rows(rng, 0.0, seeds=(0, 1))
    cd = planted_rows(rng, 0.0, seeds=(0,), orders=("AC", "CA"))
    table = pd.concat([ab, cd]).assign(trained=1)
    got = adaptive_replay(table, ["A", "B", "C"], CRIT)
    assert got is not None and got["replayed"] is False and "stage_trainings" not in got
    full = pd.concat([ab, planted_rows(rng, 0.0, seeds=(0, 1), orders=("AC", "CA"))])
    again = adaptive_replay(full.assign(trained=1), ["A", "B", "C"], CRIT)
    assert again is not None and again["replayed"] is True and "stage_trainings" in again


def _sign_flip_power(units: int, effect: float, level: float, draws: int = 2000) -> float:
    """The exact sign-flip test's power on normal differences (sd 1, mean `effect`), by
    simulation: each draw's p-value over all 2^units sign patterns."""
    import numpy as np

    rng = np.random.default_rng(units)
    bits = np.arange(2 ** units)[:, None] >> np.arange(units)[None, :] & 1
    signs = (1 - 2 * bits).astype(np.float32)
    hits = 0
    for start in range(0, draws, 100):
        d = rng.normal(effect, 1.0, (min(100, draws - start), units)).astype(np.float32)
        sums = np.abs(signs @ d.T)
        observed = np.abs(d.sum(1)) * (1 - 1e-6)
        hits += int(((sums >= observed).mean(0) <= level).sum())
    return hits / draws


@pytest.mark.parametrize("units, level", [(16, 0.1 / 6), (16, 0.1 / 3 / 6), (12, 0.1 / 6),
                                          (10, 0.05), (9, 0.1 / 3 / 6)])
def test_the_power_line_states_the_exact_tests_power(units, level):
    """At the effect the power line calls detectable with 80 % power, the exact sign-flip test
    finds it in at least 80 % of simulated studies (within the simulation's ±0.009). The old
    normal approximation stated 0.80 where the test had 0.64-0.70."""
    from statistics import mean, stdev

    from seqsearch.search.stats import power_line

    raw = [float(i) for i in range(units)]
    diffs = [(x - mean(raw)) / stdev(raw) for x in raw]  # sd exactly 1
    line = power_line(diffs, level)
    assert line["power"] == 0.8
    assert _sign_flip_power(units, float(line["detectable"]), level) >= 0.785


def test_looks_that_cannot_reject_get_no_alpha_for_edges():
    """The committed studies' design (8 samples on seeds 0 and 1, then 16; six pairs at alpha
    0.1): looks 1 and 2 have 8 units, whose smallest p (2/2^8 = 0.0078) is above Holm's first
    step of the even split (0.1 / 3 / 6 = 0.0056), so the even split spent two thirds of alpha
    on looks that could not reject. Now look 3 gets it all: a 16-unit pair at p 0.01 is an
    edge (it was not), and an 8-unit pair has level 0 for edges."""
    from seqsearch.config import load_study
    from seqsearch.pipeline import criteria
    from seqsearch.search.order import family
    from seqsearch.search.plan import dry_run

    study = load_study("seqsearch/studies/vgg11-mnist5k.yaml")
    crit = criteria(study, {"val_accuracy": BASE}, 1800)
    assert (crit.looks, crit.edge_looks, crit.edge_units) == (3, 1, 16)
    assert crit.edge_level == pytest.approx(0.1)
    pairs = [_verdict("DP", 0.01, 1.0), _verdict("DQ", 0.5, 0.1), _verdict("DE", 0.5, 0.1),
             _verdict("PQ", 0.5, 0.1), _verdict("PE", 0.5, 0.1),
             dict(_verdict("QE", 0.0078, 1.0), units=8, informative_units=8)]
    got = {v["pair"]: v for v in family(pairs, crit)}
    assert got["DP"]["outcome"] == "order" and got["DP"]["alpha"] == pytest.approx(0.1 / 6)
    assert got["QE"]["outcome"] == "undecided" and got["QE"]["alpha"] == 0.0
    plan = dry_run(study)
    assert plan["min_samples_to_decide"] == 16
    assert plan["sequential"]["looks_with_edge_alpha"] == 1


def test_a_pair_that_lost_a_unit_to_failed_runs_still_reaches_its_final_look():
    """Both orders of one sample failed on different seeds (collapsed fits fail their unit):
    the pair ran 16 samples but has 15 units. Its look is the one with alpha for edges; it
    used to get level 0 there, so one failed fit made a pair undecidable."""
    from seqsearch.config import load_study
    from seqsearch.pipeline import criteria
    from seqsearch.search.order import family

    crit = criteria(load_study("seqsearch/studies/vgg11-mnist5k.yaml"), {"val_accuracy": BASE},
                    1800)
    lost = dict(_verdict("DQ", 0.00012, 1.7), units=15, informative_units=15, samples=16)
    early = dict(_verdict("QE", 0.0078, 1.0), units=8, informative_units=8, samples=8)
    pairs = [lost, early, *(_verdict(p, 0.5, 0.1) for p in ("DP", "DE", "PQ", "PE"))]
    got = {v["pair"]: v for v in family(pairs, crit)}
    assert got["DQ"]["outcome"] == "order" and got["DQ"]["alpha"] == pytest.approx(0.1 / 6)
    assert got["QE"]["outcome"] == "undecided" and got["QE"]["alpha"] == 0.0


def test_decide_counts_the_samples_a_pair_ran_beside_its_units():
    rng = random.Random(5)
    table = planted_rows(rng, 0.02)
    one = table[(table["order"] == "AB") & (table["sample"] == 0)].index
    pair = decide(table.drop(one), ["A", "B"], CRIT)["pairs"][0]
    assert pair["samples"] == pair["units"] + 1


def test_decide_judges_only_the_pairs_probed():
    """A re-probe of a subset (probe.pairs) in a folder that holds other pairs' rows: the
    family is the subset, so the others neither appear nor dilute its Holm levels."""
    from dataclasses import replace

    rng = random.Random(4)
    table = pd.concat([planted_rows(rng, 0.02), planted_rows(rng, 0.0, orders=("AC", "CA"))])
    every = decide(table, ["A", "B", "C"], CRIT)
    subset = decide(table, ["A", "B", "C"], replace(CRIT, pairs=("AB",)))
    assert [p["pair"] for p in every["pairs"]] == ["AB", "AC"]
    assert [p["pair"] for p in subset["pairs"]] == ["AB"]
    assert subset["pairs"][0]["family"]["pairs"] == 1
