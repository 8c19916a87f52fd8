"""A study's `space:` narrows a stage's search space for the probe and for tuning."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from seqsearch.cli import main
from seqsearch.errors import SeqsearchError
from seqsearch.pipeline import check_same_samples
from seqsearch.search.probe import make_samples
from seqsearch.search.space import check_space, stage_space
from seqsearch.search.tune import search_space, warm_start
from seqsearch.stages import get_stage

NARROW = {"quantize.weight_bits": [4, 8], "prune.ratio": {"low": 0.2, "high": 0.4}}


def test_the_probe_draws_only_from_the_narrowed_space():
    wide = make_samples(["prune", "quantize"], 16, 0, {})
    narrow = make_samples(["prune", "quantize"], 16, 0, {}, NARROW)
    assert {s["weight_bits"] for s in wide["Q"]} & {1, 2}  # the stage's own space has them
    assert {s["weight_bits"] for s in narrow["Q"]} <= {4, 8}
    assert all(0.2 <= s["ratio"] <= 0.4 for s in narrow["P"])
    assert len({s["weight_bits"] for s in narrow["Q"]}) == 2  # both choices drawn
    assert [s["act_bits"] for s in narrow["Q"]] == [s["act_bits"] for s in wide["Q"]]


def test_tuning_suggests_from_the_narrowed_space():
    space = search_space(("PQ",), {}, NARROW)
    assert space["quantize.weight_bits"] == CategoricalDistribution([4, 8])
    assert space["prune.ratio"] == FloatDistribution(0.2, 0.4)
    assert space["quantize.act_bits"] == get_stage("Q").info.space["quantize.act_bits"]


def test_a_warm_start_point_outside_the_narrowed_space_is_left_out():
    samples = {"Q": [{"weight_bits": 2, "act_bits": 8}, {"weight_bits": 4, "act_bits": 8}]}
    runs = pd.DataFrame({"kind": ["single", "single"], "order": ["Q", "Q"], "sample": [0, 1],
                         "val_accuracy": [0.9, 0.9], "val_bitops_cr": [30.0, 10.0]})
    assert [p["quantize.weight_bits"] for p in warm_start(runs, samples, {}, 0.9, 1.0, 8)] \
        == [2, 4]
    kept = warm_start(runs, samples, {}, 0.9, 1.0, 8, {"quantize.weight_bits": [4, 8]})
    assert [p["quantize.weight_bits"] for p in kept] == [4]


@pytest.mark.parametrize("space, fragment", [
    ({"quantize.wieght_bits": [4]}, "'quantize.wieght_bits' is not a searched param"),
    ({"quantize.weight_bits": [3]}, "quantize.weight_bits: 3 is not one of its choices"),
    ({"quantize.weight_bits": []}, "give a non-empty list"),
    ({"prune.ratio": {"low": 0.5, "high": 0.2}}, "must satisfy"),
    ({"prune.ratio": [0.2]}, "give {low: …, high: …}"),
])
def test_a_bad_space_entry_names_the_key(space, fragment):
    with pytest.raises(SeqsearchError, match="^space: ") as info:
        check_space(space, ["prune", "quantize"])
    assert fragment in str(info.value)


def test_a_bad_space_stops_the_study_before_training(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("version: 1\nname: t\nmodel: {name: tiny}\n"
                     "data: {name: digits, limit: 200}\ntrain: {epochs: 1}\n"
                     "space: {quantize.weight_bits: [3, 4]}\n")
    assert main(["run", str(study), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "space: quantize.weight_bits: 3" in err[0], err


def test_a_resumed_probe_refuses_samples_it_did_not_start_with(tmp_path):
    path = tmp_path / "samples.json"
    path.write_text(json.dumps(make_samples(["quantize"], 8, 0, {})))
    check_same_samples(path, make_samples(["quantize"], 16, 0, {}))  # more of the same: fine
    with pytest.raises(SeqsearchError, match="other Q samples"):
        check_same_samples(path, make_samples(["quantize"], 8, 0, {}, NARROW))


def test_stage_space_leaves_other_stages_alone():
    info = get_stage("D").info
    assert stage_space(info, NARROW) == dict(info.space)
