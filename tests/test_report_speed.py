"""Does BitOps predict speed? The table of timed tuning trials (one row per timed network)
and the Spearman rank correlation of BitOpsCR and measured speed-up."""

from __future__ import annotations

import pandas as pd
import pytest

from seqsearch.report.figures import speed_figure
from seqsearch.report.speed import rank_correlation, speed_table


def _tuning(rows):
    return pd.DataFrame(rows, columns=["number", "state", "chain", "val_bitops_cr", "speedup",
                                       "latency_key", "latency_runtime", "constraint"])


def test_one_row_per_timed_network_and_rank_correlation():
    t = _tuning([
        (0, "COMPLETE", "PQ", 10.0, 1.5, "a", "onnxruntime", -1.0),
        (1, "COMPLETE", "PQ", 12.0, 1.5, "a", "onnxruntime", -1.0),  # same network: cached
        (2, "COMPLETE", "Q", 50.0, 1.1, "b", "onnxruntime", 0.5),
        (3, "COMPLETE", "DPQ", 200.0, 3.0, "c", "onnxruntime", -0.2),
        (4, "PRUNED", "P", 3.0, None, None, None, 2.0),
        (5, "COMPLETE", "D", 4.0, 1.2, "d", "onnxruntime", -2.0),
    ])
    table = speed_table(t)
    assert table["number"].tolist() == [5, 0, 2, 3]  # by BitOpsCR, the duplicate and pruned out
    assert table["feasible"].tolist() == [True, True, False, True]
    corr = rank_correlation(table)
    assert corr["n"] == 4
    # ranks of BitOpsCR 1,2,3,4 vs speed-up 2,3,1,4: rho = 1 - 6*(1+1+4+0)/(4*15) = 0.4
    assert corr["spearman"] == pytest.approx(0.4)
    fig = speed_figure(table, corr["spearman"])
    assert "+0.40" in fig.layout.title.text
    assert sum(len(tr.x) for tr in fig.data) == 4


def test_no_timed_trials_no_table():
    assert speed_table(pd.DataFrame()).empty
    t = pd.DataFrame({"number": [0], "state": ["COMPLETE"], "val_bitops_cr": [3.0]})
    assert speed_table(t).empty
    assert rank_correlation(speed_table(t))["spearman"] is None
