from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import torch
from helpers import run_cli
from optuna.distributions import FloatDistribution
from optuna.trial import FixedTrial, TrialState

from seqsearch.chain import ChainRunner, plan
from seqsearch.config import load_study
from seqsearch.pipeline import run_tune, tune_options
from seqsearch.search.storage import open_storage
from seqsearch.search.tune import (
    BudgetPruner,
    Objective,
    TuneOptions,
    choose_point,
    search_space,
    slot_trials,
)
from seqsearch.stages import StageInfo, register_stage, unregister_stage
from seqsearch.train import fit

PARAMS = {"prune.ratio": 0.3, "prune.importance": "magnitude", "prune.global_pruning": False,
          "quantize.weight_bits": 4, "quantize.act_bits": 8}


def test_search_space_is_the_union_without_policy_and_fixed():
    space = search_space(("DPQE",), {"distill.method": "kd"})
    assert "distill.method" not in space and "prune.ratio" in space
    assert "early_exit.threshold" not in space and "early_exit.exits" in space


def test_fixed_trial_objective_is_deterministic(stage_setup):
    model, data, ctx, ref = stage_setup
    opts = TuneOptions(chains=("PQ",), trials=1, budget=100.0)
    runner = ChainRunner(model, data, ctx, ref, None, "k")
    a, b = FixedTrial(dict(PARAMS)), FixedTrial(dict(PARAMS))
    va, vb = Objective(runner, opts)(a), Objective(runner, opts)(b)
    assert va == vb
    direct = ChainRunner(model, data, ctx, ref, None, "k").run(
        plan([("prune", {"ratio": 0.3}), ("quantize", {"weight_bits": 4, "act_bits": 8})]))
    assert va == pytest.approx(math.log(ref.bitops / direct.records[-1]["val_bitops"]))
    assert a.user_attrs["constraint"] == pytest.approx(a.user_attrs["drop"] - 100.0, abs=1e-3)
    assert a.user_attrs["chain"] == "PQ"


def test_tau_is_chosen_on_validation_within_budget(stage_setup):
    model, data, ctx, ref = stage_setup
    opts = TuneOptions(chains=("E",), trials=1, budget=100.0)
    trial = FixedTrial({"early_exit.exits": 1, "early_exit.placement": "even",
                        "early_exit.head": "linear"})
    Objective(ChainRunner(model, data, ctx, ref, None, "k"), opts)(trial)
    # budget 100 points: the most compressing τ on validation is the smallest one
    assert trial.user_attrs["tau"] == min(opts.thresholds)


def test_choose_point():
    rows = [{"tau": t, "val_accuracy": a, "val_bitops": b}
            for t, a, b in [(0.5, 0.90, 10.0), (0.9, 0.97, 50.0), (1.01, 0.98, 100.0)]]
    assert choose_point(rows, 0.98, 1.0)["tau"] == 0.9
    assert choose_point(rows, 0.98, 10.0)["tau"] == 0.5
    assert choose_point(rows, 0.99, 0.1)["tau"] == 1.01  # none feasible: most accurate


def test_budget_pruner():
    pruner = BudgetPruner(1.0, 0.5)
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("last_drop", 1.4)
    assert not pruner.prune(study, study.trials[-1])
    trial.set_user_attr("last_drop", 1.6)
    assert pruner.prune(study, study.trials[-1])


TINY = """\
version: 1
name: {name}
model: {{name: tiny}}
data: {{name: digits, limit: 300}}
train: {{epochs: 2, stage_epochs: 1, student_epochs: 1, batch_size: 32}}
stages: [prune, quantize]
tune: {{trials: 6, budget: 5.0, startup_trials: 3}}
"""


def _study(tmp_path, name="tiny"):
    path = tmp_path / "s.yaml"
    path.write_text(TINY.format(name=name))
    return path




def _slots(study_name, storage):
    st = optuna.load_study(study_name=study_name, storage=storage)
    trials = slot_trials(st)
    return st, trials


def _check_exactly(st, trials, n):
    assert sorted(t.user_attrs["slot"] for t in trials) == list(range(n))
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    assert all(t.state in finished for t in trials)
    numbers = [t.number for t in st.get_trials(deepcopy=False)
               if t.user_attrs.get("slot") is not None and t.state == TrialState.COMPLETE]
    assert len(numbers) == len(set(numbers))


def test_two_workers_on_one_journal_complete_exactly_n(tmp_path):
    study = _study(tmp_path)
    out = tmp_path / "o"
    res = json.loads(run_cli("tune", str(study), "--out", str(out), "--chain", "PQ",
                          "--workers", "2", "--json").stdout)
    assert res["trials"] == 6 and res["running"] == 0
    st, trials = _slots("tiny-tune-b5", open_storage(None, out))
    _check_exactly(st, trials, 6)
    assert st.metric_names == ["log BitOpsCR"]  # what optuna-dashboard shows
    assert (out / "tune" / "trials.csv").is_file()
    if res["best"] is not None:
        assert (out / "tune" / "best_chain.yaml").is_file()
        assert (out / "tune" / "best_model.pt").is_file()


@pytest.mark.skipif(not os.environ.get("SEQSEARCH_TEST_POSTGRES"),
                    reason="set SEQSEARCH_TEST_POSTGRES (scripts/dev/postgres-dev.sh prints it)")
def test_two_workers_on_postgresql_complete_exactly_n(tmp_path):
    url = os.environ["SEQSEARCH_TEST_POSTGRES"]
    name = f"pg{uuid.uuid4().hex[:8]}"
    study = _study(tmp_path, name)
    res = json.loads(run_cli("tune", str(study), "--out", str(tmp_path / "o"), "--chain", "PQ",
                          "--workers", "2", "--storage", url, "--json").stdout)
    assert res["trials"] == 6
    st, trials = _slots(f"{name}-tune-b5", url)
    _check_exactly(st, trials, 6)


def test_sigkilled_worker_loses_nothing_and_duplicates_nothing(tmp_path):
    study = _study(tmp_path)
    out = tmp_path / "o"
    env = {**os.environ, "SEQSEARCH_QUIET": "1"}
    run_cli("baseline", str(study), "--out", str(out))
    proc = subprocess.Popen([sys.executable, "-m", "seqsearch", "tune", str(study), "--out",
                             str(out), "--chain", "PQ"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = open_storage(None, out)
    deadline = time.time() + 120
    before: dict[int, float] = {}
    seen = False
    # poll often: a tiny trial (a cached prefix, a pruned one) can pass within one poll, and
    # the tune may end before two finished trials and a running one are seen together
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            st = optuna.load_study(study_name="tiny-tune-b5", storage=storage)
        except KeyError:
            continue
        trials = st.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        running = [t for t in trials if t.state == TrialState.RUNNING and "pid" in t.user_attrs]
        if len(finished) >= 2 and running:
            before = {t.number: t.value for t in finished if t.state == TrialState.COMPLETE}
            seen = True
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen, "the worker was not seen mid-trial with two trials finished before it"
    run_cli("tune", str(study), "--out", str(out), "--chain", "PQ")
    st, trials = _slots("tiny-tune-b5", open_storage(None, out))
    _check_exactly(st, trials, 6)
    after = {t.number: t.value for t in st.get_trials(deepcopy=False)}
    assert all(after[n] == v for n, v in before.items())  # completed trials kept as they were
    assert sum(1 for t in st.get_trials(deepcopy=False) if t.user_attrs.get("reaped")) >= 1


class _Boom:
    """A user stage whose training diverges (NaN loss) when x > 0.5."""

    info = StageInfo(name="boom", letter="B", kind="static", granularity="neuron",
                     repeatable=True, space={"boom.x": FloatDistribution(0.0, 1.0)},
                     defaults={"boom.x": 0.0})

    def apply(self, model, ctx, params):
        def nan_loss(outputs, targets, inputs):
            out = outputs[-1] if isinstance(outputs, list) else outputs
            return torch.nn.functional.cross_entropy(out, targets) * float("nan")

        if params["x"] > 0.5:
            fit(model, ctx.data, ctx.settings(finetune=True), loss_fn=nan_loss, progress=False)
        return model


def test_nan_trial_fails_alone_and_study_completes(tmp_path):
    register_stage(_Boom())
    try:
        study = load_study(_study(tmp_path))
        out = tmp_path / "o"
        opts = tune_options(study, ("PB",), trials=6, budget=100.0, multi_objective=False,
                            pruner=False)
        summary = run_tune(study, out, opts)
        assert summary["trials"] == 6 and summary["running"] == 0
        assert summary["failed"] >= 1 and summary["complete"] >= 1
        st, trials = _slots("tiny-tune-b100", open_storage(None, out))
        errors = [t.user_attrs["error"] for t in trials if t.state == TrialState.FAIL]
        assert errors and all("loss is nan" in e for e in errors)
    finally:
        unregister_stage("boom")


def test_multi_objective_reports_pareto_set(tmp_path):
    study = _study(tmp_path)
    res = json.loads(run_cli("tune", str(study), "--out", str(tmp_path / "o"), "--chain", "QP",
                          "--n-trials", "4", "--multi-objective", "--json").stdout)
    assert res["pareto"] and all("val_accuracy" in p for p in res["pareto"])


def test_a_slot_taken_but_never_claimed_is_queued_again(tmp_path, monkeypatch):
    """A worker killed between taking a slot and claiming it leaves a RUNNING trial naming no
    process: after the claim grace it is reaped and its slot goes back in the queue with its
    warm-start params, so `work` neither loses it nor waits for it forever."""
    import seqsearch.search.storage as storage_mod
    from seqsearch.search.storage import reap_dead_trials, unclaimed
    from seqsearch.search.tune import requeue

    st = optuna.create_study(storage=open_storage(None, tmp_path), study_name="orphan")
    st.enqueue_trial({"x": 0.25}, user_attrs={"slot": 3, "warm_start": True})
    orphan = st.ask()
    assert unclaimed(st)
    assert reap_dead_trials(st) == []  # within the grace: it may still be claimed
    monkeypatch.setattr(storage_mod, "CLAIM_GRACE_S", 0.0)
    time.sleep(0.01)
    reaped = reap_dead_trials(st)
    assert [t.number for t in reaped] == [orphan.number]
    assert reap_dead_trials(st) == []  # failed once, by one reaper
    requeue(st, reaped)
    (again,) = st.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert again.user_attrs == {"slot": 3, "warm_start": True}
    assert again.system_attrs["fixed_params"] == {"x": 0.25}
    assert not unclaimed(st)


def test_a_trial_is_held_to_the_aim_and_the_study_keeps_the_budget(stage_setup):
    model, data, ctx, ref = stage_setup
    runner = ChainRunner(model, data, ctx, ref, None, "k")
    plain = TuneOptions(chains=("PQ",), trials=1, budget=100.0)
    aimed = TuneOptions(chains=("PQ",), trials=1, budget=100.0, aim=40.0)
    a, b = FixedTrial(dict(PARAMS)), FixedTrial(dict(PARAMS))
    Objective(runner, plain)(a)
    Objective(runner, aimed)(b)
    assert a.user_attrs["drop"] == b.user_attrs["drop"]
    assert b.user_attrs["constraint"] == pytest.approx(b.user_attrs["drop"] - 40.0, abs=1e-3)
    assert aimed.study_name("s") != plain.study_name("s")  # never mixed with the plain study
    assert aimed.target == 40.0 and plain.target == 100.0


def test_an_aim_above_the_budget_is_refused():
    from seqsearch.config import parse_study
    from seqsearch.errors import SeqsearchError
    from seqsearch.pipeline import tune_options

    study = parse_study({"version": 1, "name": "t", "model": {"name": "tiny"},
                         "tune": {"budget": 1.0, "aim": 1.5}})
    with pytest.raises(SeqsearchError, match="tune.aim 1.5 is above the budget 1"):
        tune_options(study, ("PQ",), trials=None, budget=None, multi_objective=False,
                     pruner=None)


def test_subchains_false_tunes_the_full_orders_only():
    from seqsearch.config import parse_study
    from seqsearch.pipeline import tune_options

    raw = {"version": 1, "name": "t", "model": {"name": "tiny"},
           "tune": {"chains": ["PQ", "QP"], "subchains": False}}
    opts = tune_options(parse_study(raw), ("PQ", "QP"), trials=None, budget=None,
                        multi_objective=False, pruner=None)
    assert opts.chains == ("PQ", "QP")
    raw["tune"]["subchains"] = True
    every = tune_options(parse_study(raw), ("PQ", "QP"), trials=None, budget=None,
                         multi_objective=False, pruner=None)
    assert set(every.chains) == {"PQ", "QP", "P", "Q"}
