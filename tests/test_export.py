"""The exported chain: sub-chain tuning space, warm start on top of the sampler's trials,
the pruner's regret count, students initialised from the teacher, VGG depth, and the
confirmation step that never exports nothing."""

from __future__ import annotations

import copy
import json

import optuna
import pandas as pd
import pytest
import torch

from seqsearch.chain import ChainRunner
from seqsearch.models import create_model
from seqsearch.search.confirm import confirm, pick, probe_candidates
from seqsearch.search.tune import pruner_regret, queue_slots, subchains, warm_start
from seqsearch.stages import get_stage
from seqsearch.stages.distill import reduce_depth


def test_subchains_turn_each_stage_on_or_off():
    assert set(subchains(["DPQ"])) == {"DPQ", "DP", "DQ", "PQ", "D", "P", "Q"}
    both = subchains(["DPQ", "PDQ"])
    assert "PD" in both and "DP" in both and len(both) == len(set(both)) == 9
    assert len(both[0]) == 3  # longest first


SAMPLES = {"P": [{"ratio": 0.3, "importance": "magnitude", "global_pruning": False},
                 {"ratio": 0.6, "importance": "taylor", "global_pruning": True}],
           "Q": [{"weight_bits": 4, "act_bits": 8}, {"weight_bits": 2, "act_bits": 4}]}


def _runs(rows):
    keys = ("kind", "order", "sample", "seed", "tau", "val_accuracy", "val_bitops_cr")
    return pd.DataFrame([dict(zip(keys, r, strict=True)) for r in rows])


def test_warm_start_takes_the_best_points_within_budget_as_their_own_subchains():
    runs = _runs([("pair", "PQ", 0, 0, None, 0.975, 50.0),
                  ("pair", "PQ", 0, 1, None, 0.978, 55.0),  # same chain and sample: once
                  ("pair", "QP", 1, 0, None, 0.95, 400.0),  # outside a 1-point budget
                  ("single", "Q", 1, 0, None, 0.979, 20.0),
                  ("repeat", "QQ", 0, 0, None, 0.98, 900.0)])  # §6 runs are not candidates
    got = warm_start(runs, SAMPLES, {"prune.importance": "magnitude"}, 0.98, 1.0, 5)
    assert [p["chain"] for p in got] == ["PQ", "Q"]
    assert got[0]["prune.ratio"] == 0.3 and "prune.importance" not in got[0]  # fixed: left out
    assert got[1] == {"chain": "Q", "quantize.weight_bits": 2, "quantize.act_bits": 4}
    assert len(warm_start(runs, SAMPLES, {}, 0.98, 1.0, 1)) == 1


def test_warm_start_slots_come_on_top_of_the_sampler_trials():
    study = optuna.create_study()
    queue_slots(study, 3, [{"x": 1.0}, {"x": 2.0}])
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 5
    assert [t.user_attrs["warm_start"] for t in trials] == [True, True, False, False, False]
    queue_slots(study, 3, [{"x": 1.0}, {"x": 2.0}])  # a rerun queues nothing new
    assert len(study.get_trials(deepcopy=False)) == 5


def test_pruner_regret_counts_pairs_stopped_after_a_stage_that_would_have_recovered():
    runs = _runs([("single", "P", 0, 0, None, 0.95, 2.0),  # 3 points down: pruned
                  ("pair", "PQ", 0, 0, None, 0.975, 30.0),  # ...but PQ ends within 1 point
                  ("single", "Q", 0, 0, None, 0.979, 9.0),
                  ("pair", "QP", 0, 0, None, 0.9, 40.0)])
    got = pruner_regret(runs, 0.98, 1.0, 1.0)
    assert got == {"pairs": 2, "pruned_after_first_stage": 1, "pruned_but_feasible": 1}


def test_pick_takes_half_from_each_source_and_fills():
    probe = probe_candidates(_runs([("pair", "PQ", 0, 0, None, 0.975, 50.0),
                                    ("pair", "QP", 1, 0, None, 0.976, 40.0)]),
                             SAMPLES, 0.98, 1.0)
    assert [c.chain for c in probe] == ["PQ", "QP"] and probe[0].source == "probe"
    assert [c.chain for c in pick(probe, [], 3)] == ["PQ", "QP"]  # only what exists
    assert len(pick(probe, [], 1)) == 1


def test_teacher_initialised_student_keeps_the_teachers_weights(stage_setup):
    model, data, ctx, _ = stage_setup
    stage = get_stage("distill")
    student, _ = stage.build_student(copy.deepcopy(model), ctx, 1.0, 1.0, init="teacher")
    fresh, _ = stage.build_student(copy.deepcopy(model), ctx, 1.0, 1.0, init="scratch")
    ref = dict(model.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in student.named_parameters())
    assert not all(torch.equal(p, ref[n]) for n, p in fresh.named_parameters())
    with pytest.raises(Exception, match="init"):
        from seqsearch.stages import resolve_params
        resolve_params(stage.info, {"init": "pretrained"})


def test_depth_shortens_plain_vgg_stages():
    m = create_model("vgg11", in_channels=1, num_classes=10, kwargs={"width": 0.25})
    convs = sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())
    reduce_depth(m, 0.5, torch.randn(2, 1, 32, 32))
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == convs - 3
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_confirm_exports_the_most_accurate_chain_marked_infeasible(stage_setup, tmp_path):
    """Nothing measured within the budget: the most accurate candidate is still exported,
    marked infeasible, with both seeds' figures."""
    model, data, ctx, ref = stage_setup
    runs = _runs([("pair", "PQ", 1, 0, None, 0.5, 80.0), ("single", "P", 1, 0, None, 0.6, 3.0)])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "samples.json").write_text(json.dumps(SAMPLES))
    fresh = copy.copy(ctx)
    fresh.seed = ctx.seed + 7919
    runners = [ChainRunner(model, data, ctx, ref, tmp_path / "cache", "k"),
               ChainRunner(model, data, fresh, ref, tmp_path / "cache", "k")]
    got = confirm(tmp_path / "runs.csv", tmp_path / "samples.json", [], ref.val_accuracy,
                  0.0, 2, runners, **RULE)
    assert got is not None and got.model is not None
    assert {c.chain for c in got.considered} == {"P", "PQ"}  # the most accurate measured
    best = max(c.mean("val_accuracy") for c in got.considered)  # judged on the re-runs
    assert got.candidate.mean("val_accuracy") == best
    assert [r["seed"] for r in got.candidate.runs] == [ctx.seed, ctx.seed + 7919]
    assert not got.feasible and "infeasible" in got.why


def test_a_drop_of_exactly_the_budget_is_within_it():
    """float32 accuracies: 0.97 and the mean of 0.97 and 0.95 are 1.000002 points apart."""
    import numpy as np

    from seqsearch.search.pareto import within_budget

    base = float(np.float32(0.97))
    mean = (float(np.float32(0.97)) + float(np.float32(0.95))) / 2
    assert 100 * (base - mean) > 1.0 and within_budget(base, mean, 1.0)
    assert not within_budget(base, float(np.float32(0.9575)), 1.0)  # one image over


RULE = {"confidence": 0.9, "images": (1800, 1000)}  # the export bound's inputs
# at confidence 0.5 the bound adds no noise margin (z = 0): these tests are about which
# candidates are confirmed and how they are ranked, not about the margin (test_bound.py)
NO_MARGIN = {"confidence": 0.5, "images": (1800, 1000)}


class _FakeRunner:
    """A chain runner whose accuracy is looked up: the study seed reproduces the measured
    point, the fresh seed gives `fresh[chain]`."""

    def __init__(self, seed, accuracy):
        from types import SimpleNamespace

        self.ctx = SimpleNamespace(seed=seed)
        self.reference = SimpleNamespace(bitops=1000.0)
        self.accuracy = accuracy
        self.calls = []

    def run(self, steps):
        from types import SimpleNamespace

        chain = "".join(get_stage(s.stage).info.letter for s in steps)
        self.calls.append(chain)
        acc = self.accuracy[chain]
        return SimpleNamespace(model=chain, trained=len(steps), records=[{
            "val_accuracy": acc, "val_bitops": 10.0, "test_accuracy": acc, "bitops_cr": 100.0,
            "cr": 4.0}])


def test_confirm_ranks_by_measured_speed_for_the_latency_objective(tmp_path):
    """Both picks confirm; BitOps ties, so the more accurate PQ is exported by default, and
    with `speed` (tune.objective: latency) the faster Q, each model timed once."""
    runs = _runs([("pair", "PQ", 0, 0, None, 0.979, 100.0),
                  ("single", "Q", 1, 0, None, 0.978, 100.0)])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "samples.json").write_text(json.dumps(SAMPLES))
    accuracy = {"PQ": 0.979, "Q": 0.978}

    def runners():
        return [_FakeRunner(0, accuracy), _FakeRunner(7919, accuracy)]

    plain = confirm(tmp_path / "runs.csv", tmp_path / "samples.json", [], 0.98, 1.0, 2,
                    runners(), **NO_MARGIN)
    assert plain is not None and plain.candidate.chain == "PQ" and not plain.speedups
    timed: list[str] = []

    def speed(model):  # the fake runner's model is its chain
        timed.append(model)
        return {"PQ": 1.2, "Q": 2.0}[model]

    fast = confirm(tmp_path / "runs.csv", tmp_path / "samples.json", [], 0.98, 1.0, 2,
                   runners(), speed=speed, **NO_MARGIN)
    assert fast is not None and fast.feasible and fast.candidate.chain == "Q"
    assert sorted(timed) == ["PQ", "Q"] and sorted(fast.speedups.values()) == [1.2, 2.0]


def _trial(number, chain, steps, val_bitops_cr, speedup):
    from types import SimpleNamespace

    return SimpleNamespace(number=number, state=optuna.trial.TrialState.COMPLETE, user_attrs={
        "chain": chain, "steps": steps, "val_accuracy": 0.979, "val_bitops_cr": val_bitops_cr,
        "constraint": -0.1, "speedup": speedup})


def test_latency_objective_confirms_the_fastest_trials_not_the_most_compressed(tmp_path):
    """With one confirmation slot, tuning for latency re-runs its fastest feasible trial (P,
    1.8x); ranking trials by BitOpsCR would re-run Q (200x BitOps, slower than the baseline)
    and export it, though the study tuned for speed."""
    trials = [_trial(0, "Q", [["quantize", SAMPLES["Q"][1]]], 200.0, 0.4),
              _trial(1, "P", [["prune", SAMPLES["P"][0]]], 3.0, 1.8)]
    accuracy = {"P": 0.979, "Q": 0.979}
    runners = [_FakeRunner(0, accuracy), _FakeRunner(7919, accuracy),
               _FakeRunner(15838, accuracy)]
    plain = confirm(tmp_path / "runs.csv", tmp_path / "samples.json", trials, 0.98, 1.0, 1,
                    runners, **NO_MARGIN)
    assert plain is not None and plain.candidate.chain == "Q"
    runners = [_FakeRunner(0, accuracy), _FakeRunner(7919, accuracy),
               _FakeRunner(15838, accuracy)]
    fast = confirm(tmp_path / "runs.csv", tmp_path / "samples.json", trials, 0.98, 1.0, 1,
                   runners, speed=lambda model: {"P": 1.8, "Q": 0.4}[model], **NO_MARGIN)
    assert fast is not None and fast.feasible and fast.candidate.chain == "P"
    assert runners[1].calls == ["P"]  # the fresh seed re-ran the fast trial only
