"""The paper-claims tables on hand-made results: verdicts, Table 1, goal budgets, search cost."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from seqsearch.report import claims as C


def _pair(pair: str, winner: str | None, confidence: float, margin: float = 0.2,
          p_value: float = 0.01) -> dict:
    """A verdict as order.json holds it: a winner only where the paired test decided."""
    return {"pair": pair, "winner": winner, "tie": winner is None, "decided": winner is not None,
            "p_value": p_value if winner else 0.5, "confidence": confidence, "margin": margin}


def test_paper_winner_follows_the_law():
    assert [C.paper_winner(p) for p in ("DP", "QP", "ED", "EQ")] == ["DP", "PQ", "DE", "QE"]


def test_pairwise_verdicts_need_a_decided_test():
    order = {"pairs": [_pair("DP", "DP", 0.95), _pair("PQ", "QP", 0.9),
                       _pair("QE", None, 0.99), _pair("DE", None, 0.5)]}
    df = C.pairwise_claims(order).set_index("paper")
    assert df.loc["DP", "verdict"] == "agree"
    assert df.loc["PQ", "verdict"] == "disagree"
    # leans one way on the bootstrap, but the paired test did not decide it
    assert df.loc["QE", "ours"] == "undecided" and df.loc["QE", "verdict"] == "inconclusive"
    assert df.loc["DE", "p_value"] == 0.5 and df.loc["DE", "verdict"] == "inconclusive"


def test_law_disagrees_when_not_proposed_and_brute_rank_is_reported():
    order = {"letters": list("DPQE"), "orders": ["PDQE"],
             "pairs": [_pair("DP", "PD", 0.97)]}
    pairs = C.pairwise_claims(order)
    brute = {"ranking": [{"order": "PDQE", "hypervolume": 2.0, "rank": 1, "in_top_set": True,
                          "rank_interval": [1, 1], "p_vs_best": 1.0},
                         {"order": "DPQE", "hypervolume": 1.5, "rank": 2, "in_top_set": False,
                          "rank_interval": [2, 2], "p_vs_best": 0.01}]}
    df = C.law_claim(order, pairs, brute)
    assert list(df["verdict"]) == ["disagree", "disagree"]
    assert df.iloc[0]["confidence"] == pytest.approx(0.97)
    assert "DPQE ranks 2 of 2" in df.iloc[1]["ours"]
    assert df.iloc[1]["margin"] == pytest.approx(-0.25)
    # not distinguishable from the best: the brute force cannot say the law is wrong
    brute["ranking"][1].update(in_top_set=True, p_vs_best=0.4)
    assert C.law_claim(order, pairs, brute).iloc[1]["verdict"] == "inconclusive"


def test_table1_and_its_claim():
    budget = pd.DataFrame([
        {"order": "DPQE", "kind": "brute", "bitops_cr@0.5": 100.0, "bitops_cr@1": 400.0,
         "bitops_cr@2": 400.0, "test_drop@1": 0.3},
        {"order": "DQPE", "kind": "brute", "bitops_cr@0.5": 150.0, "bitops_cr@1": 410.0,
         "bitops_cr@2": 900.0, "test_drop@1": 0.8},
        {"order": "PDQE", "kind": "brute", "bitops_cr@0.5": 999.0, "bitops_cr@1": 999.0,
         "bitops_cr@2": 999.0, "test_drop@1": 0.1},
        {"order": "DQ", "kind": "pair", "bitops_cr@0.5": 999.0, "bitops_cr@1": 999.0,
         "bitops_cr@2": 999.0, "test_drop@1": 0.1},
    ])
    t1 = C.table1(budget)
    assert list(t1["order"]) == ["DPQE", "DQPE"]  # D-first full orders only
    assert list(t1.columns) == ["order", "bitops_cr@0.5", "bitops_cr@1", "bitops_cr@2"]
    claim = C.table1_claim(t1, 0.05).iloc[0]
    assert claim["verdict"] == "disagree"  # DQPE wins at 0.5 and 2.0; 1.0 is within the tie
    assert claim["confidence"] == pytest.approx(2 / 3)
    assert C.table1_claim(pd.DataFrame(), 0.05).iloc[0]["verdict"] == "inconclusive"


def test_insertion_and_repetition_verdicts():
    insert = [{"pair": "DP", "inserted": "Q", "holds": True, "tie": False, "confidence": 0.9},
              {"pair": "PQ", "inserted": "E", "holds": False, "tie": False, "confidence": 0.85},
              {"pair": "QE", "inserted": "D", "holds": False, "tie": True, "confidence": 0.5}]
    row = C.insertion_claim(insert).iloc[0]
    assert row["verdict"] == "disagree" and "PEQ" in row["ours"]
    assert C.insertion_claim(insert[:1]).iloc[0]["verdict"] == "agree"
    repeat = [{"stage": "D", "winner": None, "tie": True, "confidence": 0.5, "margin": 0.01},
              {"stage": "P", "winner": "PP", "tie": False, "confidence": 0.9, "margin": 0.2},
              {"stage": "Q", "winner": "QQ", "tie": False, "confidence": 0.95, "margin": 0.1}]
    df = C.repetition_claims(repeat).set_index("claim")
    assert list(df["verdict"]) == ["agree", "disagree", "agree"]


def test_goal_budgets_pick_best_of_each_kind():
    budget = pd.DataFrame([
        {"order": "P", "kind": "single", "bitops_cr@0.5": 2.0, "bitops_cr@1": 3.0},
        {"order": "PQ", "kind": "pair", "bitops_cr@0.5": 50.0, "bitops_cr@1": None},
        {"order": "QP", "kind": "pair", "bitops_cr@0.5": 40.0, "bitops_cr@1": 60.0},
        {"order": "DPQE", "kind": "tuned", "bitops_cr@0.5": None, "bitops_cr@1": 500.0},
    ])
    g = C.goal_budgets(budget).set_index("budget")
    assert g.loc[0.5, "best pair order"] == "PQ" and g.loc[1.0, "best pair order"] == "QP"
    assert pd.isna(g.loc[0.5, "tuned"]) and g.loc[1.0, "tuned"] == 500.0
    assert g.loc[1.0, "single P"] == 3.0


def test_training_cost_counts_distinct_prefixes_and_their_seconds():
    seconds = {("A", 0, 0): 2.0, ("B", 0, 0): 3.0, ("AB", 0, 0): 7.0, ("BA", 0, 0): 4.0}
    n, s = C.training_cost(["AB", "BA"], 1, [0], seconds)
    assert n == 4 and s == pytest.approx(2 + 3 + 5 + 1)
    n, s = C.training_cost(["AB", "BA"], 2, [0], seconds)  # sample 1 never timed
    assert n == 8 and s is None
    # 4 stages, K = 8, 2 seeds: 16 * (4 + 12 + 24 + 24) trainings for every full order
    assert C.training_cost(["".join(p) for p in itertools.permutations("DPQE")], 8, [0, 1],
                           {})[0] == 1024


def test_training_cost_covers_an_untimed_prefix_through_its_only_child():
    seconds = {("A", 0, 0): 1.0, ("AB", 0, 0): 3.0, ("ABC", 0, 0): 10.0}
    assert C.training_cost(["ABC"], 1, [0], {k: v for k, v in seconds.items()
                                              if k[0] != "AB"}) == (3, 10.0)
    # an untimed prefix with two children cannot be split between them
    two = {("A", 0, 0): 1.0, ("ABC", 0, 0): 10.0, ("ABD", 0, 0): 12.0}
    assert C.training_cost(["ABC", "ABD"], 1, [0], two) == (4, None)


def test_probe_cost_is_what_ran():
    """An adaptive probe: AB and BA on samples 0-1 for seed 0, then seed 1 only for sample 0.
    Its cost is the six single and pair chains that ran, each pair's own stage timed as the
    pair's seconds minus its first stage's."""
    rows = []
    for sample, seed in ((0, 0), (1, 0), (0, 1)):
        rows += [{"kind": "single", "order": "A", "sample": sample, "seed": seed, "seconds": 2.0},
                 {"kind": "single", "order": "B", "sample": sample, "seed": seed, "seconds": 3.0},
                 {"kind": "pair", "order": "AB", "sample": sample, "seed": seed, "seconds": 5.5},
                 {"kind": "pair", "order": "BA", "sample": sample, "seed": seed, "seconds": 4.0}]
    rows.append({"kind": "brute", "order": "ABC", "sample": 0, "seed": 0, "seconds": 9.0})
    runs = pd.DataFrame(rows)
    n, secs = C.ran_cost(runs, C.chain_seconds(runs))
    assert n == 12 and secs == pytest.approx(3 * (2.0 + 3.0 + 3.5 + 1.0))
    cost = C.cost_table(runs, "AB", 2, [0, 1], None, None)
    assert cost.loc[0, "stage_trainings"] == 12  # not 2 samples x 2 seeds x 4 prefixes = 16
    del rows[0]  # A's sample 0 seed 0 lost: AB's own stage cannot be told from it
    assert C.ran_cost(pd.DataFrame(rows), C.chain_seconds(pd.DataFrame(rows)))[1] is None
