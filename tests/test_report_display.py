"""The page's tables as people read them (seqsearch.report.display): units in the column
names, thousands separators, ratios as '2,047×', p-values without exponents, and no bootstrap
`confidence` column; checked on hand-made frames and on a committed study folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from seqsearch.config import load_study
from seqsearch.report import display as D

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("value, text", [
    (6349.689, "6,350"), (0.000275, "0.000275"), (0.0365, "0.0365"), (1.5, "1.5"),
    (12.0, "12"), (None, "–"), (float("nan"), "–")])
def test_plain_never_uses_exponents(value, text):
    assert D.plain(value) == text


def test_figures_formatted_for_people():
    assert D.p_value(0.006317138671875) == "0.0063"
    assert D.p_value(0.000275) == "0.00028"
    assert D.p_value(3e-7) == "< 0.0001"
    assert D.ratio(2046.633) == "2,047×" and D.ratio(4.458) == "4.46×"
    assert D.ratio(None) == "–"
    assert D.points(0.1545) == "+0.15" and D.points(-0.6358) == "-0.64"
    assert D.share(0.5894679841936863) == "58.9 %" and D.count(1024) == "1,024"
    assert D.accuracy(0.9761) == "97.61 %"


def test_cost_table_names_its_columns_and_units():
    raw = pd.DataFrame([
        {"search": "pairwise probe", "stage_trainings": 512, "train_seconds": 6349.689,
         "wall_seconds": 7384.7, "share_of_brute_trainings": 0.5,
         "share_of_brute_seconds": 0.5894679841936863},
        {"search": "brute force (all orders)", "stage_trainings": 1024,
         "train_seconds": 10771.898, "wall_seconds": None, "share_of_brute_trainings": 1.0,
         "share_of_brute_seconds": 1.0}])
    shown = D.cost(raw)
    assert list(shown.columns) == ["search", "stage trainings", "training time (s)",
                                   "wall time (s)", "trainings, share of the brute force's",
                                   "training time, share of the brute force's"]
    assert shown.iloc[0].tolist() == ["pairwise probe", "512", "6,350", "7,385", "50.0 %",
                                      "58.9 %"]
    assert shown.iloc[1].tolist() == ["brute force (all orders)", "1,024", "10,772", "–",
                                      "100.0 %", "100.0 %"]


def test_verdict_table_has_no_confidence_column():
    order = {"pairs": [{"pair": "DE", "orders": ["DE", "ED"], "winner": "ED", "decided": True,
                        "outcome": "order", "effect": -0.6358, "margin": -0.6358,
                        "p_value": 0.006317, "alpha": 0.008333, "units": 16, "seeds": [0, 1],
                        "confidence": 1.0, "power": {"detectable": 0.7612,
                                                     "units_needed": 23}}]}
    shown = D.verdicts(order)
    assert "confidence" not in shown.columns
    assert shown.iloc[0].to_dict() == {
        "pair": "DE", "verdict": "ED first", "effect (points)": "-0.64", "p-value": "0.0063",
        "Holm level": "0.0083", "units": "16", "seeds": "2", "detectable (points)": "0.76",
        "units needed": "23"}
    order["pairs"][0]["power"] = {"detectable": 0.7612, "units_needed": None,
                                  "units_needed_over": 100_000}
    assert D.verdicts(order).iloc[0]["units needed"] == "over 100,000"


def test_budget_and_goal_tables_show_ratios():
    budget = pd.DataFrame([{"order": "DQP", "kind": "tuned", "points": 2,
                            "bitops_cr@0.5": 399.3, "test_drop@0.5": 0.3,
                            "bitops_cr@1": 2046.63, "test_drop@1": 1.4}])
    shown = D.budgets(budget)
    assert list(shown.columns) == ["order", "kind", "points evaluated", "≤ 0.5 pt", "≤ 1 pt"]
    assert shown.iloc[0].tolist() == ["DQP", "tuned", "2", "399×", "2,047×"]
    goals = pd.DataFrame([{"budget": 1.0, "tuned": 2046.63, "tuned order": "DQP",
                           "best pair": None, "best pair order": None, "single D": 4.458}])
    assert D.goals(goals).iloc[0].to_dict() == {"budget (points)": "≤ 1", "tuned":
                                                "2,047× (DQP)", "best pair": "–",
                                                "single D": "4.46×"}


def test_committed_study_page_reads_for_people(tmp_path):
    """index.html and summary.md rebuilt from a committed folder (no figures): every table
    in words and units, no raw column names, no exponents, no confidence column."""
    from seqsearch.report.build import _write_summary, derive_tables
    from seqsearch.report.page import write_index
    from seqsearch.report.results import load_results

    folder = tmp_path / "vgg11-mnist5k"
    shutil.copytree(ROOT / "reports" / "vgg11-mnist5k", folder,
                    ignore=shutil.ignore_patterns("figures", "recovery", "*.html", "*.md"))
    r = load_results(load_study(ROOT / "studies" / "vgg11-mnist5k.yaml"), folder)
    t = derive_tables(r)
    write_index(r, t, [], tmp_path / "plotly.min.js", [])
    _write_summary(r, t, [])
    page = (folder / "index.html").read_text()
    summary = (folder / "summary.md").read_text()
    for text in (page, summary):
        for raw in ("share_of_brute", "train_seconds", "bitops_cr@", "p_value", "e+0",
                    "e-0", "best full order order", "effect_pts"):
            assert raw not in text, raw
        assert "6,350" in text and "7,385" in text and "10,772" in text
        assert "2,047× (DQP)" in text and "trainings, share of the brute force's" in text
    assert "<th>confidence</th>" not in page and "| confidence" not in summary
    assert "<th>effect (points)</th>" in page and "<th>Holm level</th>" in page
    assert "BitOpsCR 2,047×" in page and "1,800 images" in page
    assert "differs by a mean of 0.35 points over 192 pair models" in page  # per model
