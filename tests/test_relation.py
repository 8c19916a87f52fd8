"""The page says how the exported chain relates to the proposed orders, and says plainly when
order barely matters (read from the committed study folders; nothing trains)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from seqsearch.config import load_study
from seqsearch.report.build import derive_tables
from seqsearch.report.relation import (
    is_subchain,
    order_matters_sentence,
    relation_lines,
    relation_sentences,
)
from seqsearch.report.results import load_results

ROOT = Path(__file__).parent.parent


def test_is_subchain():
    assert is_subchain("DQP", "EDQP") and is_subchain("E", "EDQP")
    assert not is_subchain("QD", "EDQP") and not is_subchain("DX", "EDQP")


def test_committed_vgg11_page_relates_export_and_proposal():
    name = "vgg11-mnist5k"
    r = load_results(load_study(ROOT / "studies" / f"{name}.yaml"), ROOT / "reports" / name)
    text = " ".join(relation_lines(r, derive_tables(r)))
    assert "The exported chain DQP keeps the order of the proposed order EDQP" in text
    assert "E was left out: the best tuning trial with it within the budget" in text
    assert "Order barely matters here: 22 of the other 23 full orders" in text


def test_skipped_stage_without_a_feasible_trial_and_undecided_pairs():
    tuning = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "COMPLETE"],
                           "chain": ["QE", "Q"], "val_bitops_cr": [10.0, 5.0],
                           "constraint": [0.5, -0.1]})
    lines = relation_sentences("Q", 5.0, ["EQ"], tuning)
    assert "proposed order EQ" in lines[0]
    assert lines[1] == "E was left out: no tuning trial with E met the budget."
    assert "none of the proposed orders" in relation_sentences("QE", 5.0, ["EQ"], tuning)[0]
    order = {"pairs": [{"pair": "EQ"}], "decided": [], "equivalent": ["EQ"]}
    assert "Order barely matters here: all 1 pairs are equivalent" in \
        order_matters_sentence(order, None, 2)
    order = {"pairs": [{"pair": "EQ"}, {"pair": "PQ"}], "decided": [], "equivalent": ["EQ"]}
    assert "No order was shown to matter here: no pair was decided (1 of 2 equivalent" in \
        order_matters_sentence(order, None, 3)
    assert order_matters_sentence({"pairs": [{}], "decided": ["EQ"]}, None, 2) is None
