"""Confirmation before export: probe and brute-force points already measured on two or more
seeds are candidates as they stand (no re-run), judged by the rule a re-run candidate is judged
by — the mean validation drop over its seeds within the budget — and every run of one chain and
params counts toward that mean."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from seqsearch.chain import plan
from seqsearch.config import TuneSection
from seqsearch.search.confirm import (
    FRESH_SEED_OFFSET,
    MIN_DOF,
    confirm,
    measured_candidates,
    measured_dof,
    probe_prices_sigma,
)
from seqsearch.stages import get_stage

SAMPLES = {"P": [{"ratio": 0.3, "importance": "magnitude", "global_pruning": False},
                 {"ratio": 0.6, "importance": "taylor", "global_pruning": True}],
           "Q": [{"weight_bits": 4, "act_bits": 8}, {"weight_bits": 2, "act_bits": 4}]}
BASE = 0.98  # baseline validation accuracy; the budget is 1 point
RULE = {"confidence": 0.9, "images": (1800, 1000)}  # the bound's inputs
CR = {"QP": 300.0, "PQ": 100.0, "P": 5.0, "Q": 20.0}  # BitOpsCR of each chain, every seed


def _runs(rows):
    """runs.csv rows (kind, order, sample, seed, val accuracy); test accuracy 1 point lower."""
    return pd.DataFrame([{"kind": kind, "order": order, "sample": k, "seed": seed, "tau": None,
                          "val_accuracy": acc, "val_bitops_cr": CR[order],
                          "test_accuracy": acc - 0.01, "bitops_cr": CR[order], "cr": 4.0}
                         for kind, order, k, seed, acc in rows])


def _write(tmp_path, rows):
    _runs(rows).to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "samples.json").write_text(json.dumps(SAMPLES))
    return tmp_path / "runs.csv", tmp_path / "samples.json"


def _steps(order, k):
    names = {"P": "prune", "Q": "quantize"}
    return [[s.stage, dict(s.params)] for s in plan([(names[c], SAMPLES[c][k]) for c in order])]


def _trial(number, order, k, acc):
    """A completed feasible tuning trial of `order` with sample k's params."""
    return SimpleNamespace(number=number, state=SimpleNamespace(name="COMPLETE"), user_attrs={
        "steps": _steps(order, k), "chain": order, "val_accuracy": acc,
        "val_bitops_cr": CR[order], "constraint": -0.1})


class _Runner:
    """A chain runner whose figures are looked up by chain. A chain in `cached` loads from the
    prefix cache (the probe trained it at this seed: no training); any other trains."""

    def __init__(self, seed, accuracy, cached=()):
        self.ctx = SimpleNamespace(seed=seed)
        self.reference = SimpleNamespace(bitops=1000.0)
        self.accuracy = accuracy
        self.cached = set(cached)
        self.calls: list[str] = []
        self.trained = 0

    def run(self, steps):
        chain = "".join(get_stage(s.stage).info.letter for s in steps)
        self.calls.append(chain)
        trained = 0 if chain in self.cached else len(steps)
        self.trained += trained
        acc = self.accuracy[chain]
        return SimpleNamespace(model=f"{chain} seed {self.ctx.seed}", trained=trained, records=[{
            "val_accuracy": acc, "val_bitops": 1000.0 / CR[chain], "test_accuracy": acc - 0.01,
            "bitops_cr": CR[chain], "cr": 4.0}])


def _fresh(accuracy):
    return _Runner(FRESH_SEED_OFFSET, accuracy)


def test_a_two_seed_probe_point_beats_the_tune_trials_and_is_exported_without_a_rerun(tmp_path):
    """QP sample 1 was measured on seeds 0 and 1 (mean drop 0.55 points, 300×): it is exported
    over the confirmed PQ trial (100×), nothing trains for it and the fresh seed never runs it;
    its exported model is the probe's seed-0 model, loaded from the prefix cache."""
    runs_csv, samples_json = _write(tmp_path, [("pair", "QP", 1, 0, 0.975),
                                               ("pair", "QP", 1, 1, 0.974)])
    study = _Runner(0, {"QP": 0.975, "PQ": 0.978}, cached={"QP"})
    fresh = _fresh({"PQ": 0.977})
    got = confirm(runs_csv, samples_json, [_trial(4, "PQ", 0, 0.978)], BASE, 1.0, 2,
                  [study, fresh], **RULE)
    assert got is not None and got.feasible
    c = got.candidate
    assert (c.chain, c.source, c.ident) == ("QP", "probe", "sample 1 seeds 0, 1")
    assert fresh.calls == ["PQ"] and study.calls == ["PQ", "QP"]  # QP: the export's load only
    assert c.runs[0]["trained"] == 0 and study.trained == 2  # the two trainings are PQ's
    assert got.model == "QP seed 0"  # the study seed's model: what `seqsearch apply` rebuilds
    assert c.seeds == [0, 1] and c.confirmed_by() == "probe seeds 0, 1"
    assert [r["from"] for r in c.runs] == ["probe", "probe"]
    assert c.mean("val_accuracy") == pytest.approx(0.9745)
    assert c.mean("test_accuracy") == pytest.approx(0.9645)  # the test figures come along
    assert "2 judging runs (probe seeds 0, 1)" in got.why
    assert [x.chain for x in got.considered] == ["PQ", "QP"]  # the confirmed trial beside it
    assert got.measured == {"points": 1, "runs_csv_points": 1, "within_budget": 1}


# P's sample 0 on 10 seeds (mean 0.978): σ_run from 9 dof, so the bound's quantile (Student's t
# at σ_run's dof) is near the normal one; with 2 seeds (1 dof) it would be 3.08
P_SEEDS = [("single", "P", 0, s, 0.979 - 0.002 * (s % 2)) for s in range(10)]


def test_a_point_measured_on_one_seed_is_not_taken_as_confirmed(tmp_path):
    """One seed is no confirmation: QP (seed 0 only) is re-run on the fresh seed, regresses and
    is not exported; the two-seed P point is."""
    runs_csv, samples_json = _write(tmp_path, [("pair", "QP", 1, 0, 0.975)] + P_SEEDS)
    assert [c.chain for c in measured_candidates(pd.read_csv(runs_csv), SAMPLES)] == ["P"]
    study = _Runner(0, {"QP": 0.975, "P": 0.979}, cached={"QP", "P"})
    fresh = _fresh({"QP": 0.95})
    got = confirm(runs_csv, samples_json, [], BASE, 1.0, 2, [study, fresh], **RULE)
    assert got is not None and got.feasible
    assert got.candidate.chain == "P" and got.candidate.source == "probe"
    assert fresh.calls == ["QP"]  # the one-seed point re-run; the two-seed one not
    qp = next(c for c in got.considered if c.chain == "QP")
    assert qp.seeds == [0, FRESH_SEED_OFFSET] and qp.confirmed_by().startswith("confirmation")


def test_the_export_confirms_four_only_where_the_probe_prices_sigma_run(tmp_path):
    """A probe on one seed (the default) measures no point twice: σ_run then comes from the
    confirmation runs alone, so the export re-runs 8 candidates, as without a probe; 4 once
    the probe's repeated points give σ_run MIN_DOF degrees of freedom."""
    assert measured_dof(tmp_path / "runs.csv", tmp_path / "samples.json") == 0  # no probe
    one_seed = [("single", "P", 0, 0, 0.979), ("single", "Q", 0, 0, 0.978),
                ("pair", "QP", 1, 0, 0.975)]
    _write(tmp_path, one_seed)
    assert measured_dof(tmp_path / "runs.csv", tmp_path / "samples.json") == 0
    _write(tmp_path, one_seed + P_SEEDS[1:])  # P sample 0 on 10 seeds: 9 dof
    dof = measured_dof(tmp_path / "runs.csv", tmp_path / "samples.json")
    assert dof == 9 < MIN_DOF
    assert not probe_prices_sigma(tmp_path / "runs.csv", tmp_path / "samples.json")
    _write(tmp_path, one_seed + P_SEEDS[1:] + [("single", "Q", 0, 1, 0.977),
                                               ("pair", "QP", 1, 1, 0.974)])
    dof = measured_dof(tmp_path / "runs.csv", tmp_path / "samples.json")
    assert dof == 11 >= MIN_DOF
    assert probe_prices_sigma(tmp_path / "runs.csv", tmp_path / "samples.json")
    tune = TuneSection()
    assert tune.confirm_count(False) == 8 and tune.confirm_count(True) == 4
    assert TuneSection(confirm=2).confirm_count(False) == 2


def test_a_two_seed_point_whose_mean_is_over_the_budget_is_not_taken(tmp_path):
    """QP is within the budget on seed 0 but 2 points down on seed 1: a mean drop of 1.25
    points, over the 1-point budget. It is neither exported nor re-run; the tune trial is
    (two fresh seeds judge it; P's repeats put the noise of a run at 0.1 point)."""
    runs_csv, samples_json = _write(tmp_path, [("pair", "QP", 1, 0, 0.975),
                                               ("pair", "QP", 1, 1, 0.96)]
                                    + [("single", "P", 0, s, 0.979 - 0.001 * (s % 2))
                                       for s in range(2, 40)])
    study = _Runner(0, {"QP": 0.975, "PQ": 0.978}, cached={"QP"})
    fresh = _fresh({"PQ": 0.977})
    fresh2 = _Runner(2 * FRESH_SEED_OFFSET, {"PQ": 0.977})
    got = confirm(runs_csv, samples_json, [_trial(4, "PQ", 0, 0.978)], BASE, 1.0, 2,
                  [study, fresh, fresh2], **RULE)
    assert got is not None and got.feasible
    assert (got.candidate.chain, got.candidate.source) == ("PQ", "tune")
    assert "QP" not in fresh.calls + study.calls
    assert got.measured == {"points": 2, "runs_csv_points": 2, "within_budget": 1}


def test_a_tune_trial_of_a_measured_point_is_judged_on_all_its_seeds(tmp_path):
    """A warm-start trial is a probe point queued again. Its fresh-seed run joins the probe's
    two seeds: seeds 0 and 1 alone would pass (mean drop 0.55), the three do not (1.2), so
    the chain is not exported on its luckier pair of seeds."""
    runs_csv, samples_json = _write(tmp_path, [("pair", "QP", 1, 0, 0.975),
                                               ("pair", "QP", 1, 1, 0.974)] + P_SEEDS)
    study = _Runner(0, {"QP": 0.975, "P": 0.979}, cached={"QP", "P"})
    fresh = _fresh({"QP": 0.955})
    got = confirm(runs_csv, samples_json, [_trial(0, "QP", 1, 0.975)], BASE, 1.0, 2,
                  [study, fresh], **RULE)
    assert got is not None and got.feasible and got.candidate.chain == "P"
    qp = next(c for c in got.considered if c.chain == "QP")
    assert qp.source == "tune" and qp.seeds == [0, FRESH_SEED_OFFSET, 1]
    assert [r["from"] for r in qp.runs] == ["confirm", "confirm", "probe"]
    assert qp.confirmed_by() == f"confirmation seeds 0, {FRESH_SEED_OFFSET}; probe seed 1"
    assert 100 * (BASE - qp.mean("val_accuracy")) == pytest.approx(1.2)


@pytest.mark.parametrize("study_acc, exported", [(0.976, "QP"), (0.95, "PQ")])
def test_a_point_the_probe_ran_without_the_study_seed_is_trained_for_export(
        tmp_path, study_acc, exported):
    """Probe seeds 1 and 2 do not hold the study seed's model: it is trained for the export,
    joins the point's runs first, and the point is judged again on all three seeds. Where the
    study seed takes its mean over the budget the confirmed PQ trial is exported instead."""
    runs_csv, samples_json = _write(tmp_path, [("pair", "QP", 1, 1, 0.975),
                                               ("pair", "QP", 1, 2, 0.974)])
    study = _Runner(0, {"QP": study_acc, "PQ": 0.978})
    fresh = _fresh({"PQ": 0.977})
    got = confirm(runs_csv, samples_json, [_trial(4, "PQ", 0, 0.978)], BASE, 1.0, 2,
                  [study, fresh], **RULE)
    assert got is not None and got.feasible and got.candidate.chain == exported
    assert fresh.calls == ["PQ"] and study.calls == ["PQ", "QP"]
    qp = next(c for c in got.considered if c.chain == "QP")
    assert qp.seeds == [0, 1, 2] and qp.runs[0]["from"] == "export"
    assert qp.runs[0]["trained"] == 2
    if exported == "QP":
        assert got.model == "QP seed 0" and got.candidate.runs[0]["seed"] == 0


def test_a_real_two_seed_probe_point_exports_the_study_seeds_model_from_the_cache(
        stage_setup, tmp_path):
    """The probe's executor on seeds 0 and 1, then the export: probe seed 0 is the study
    seed's prefix-cache entry, so the exported model is loaded, not trained, and reproduces
    the probe's seed-0 figures; the fresh seed is never asked."""
    from seqsearch.chain import runner_for
    from seqsearch.search.probe import ChainExecutor

    model, data, ctx, ref = stage_setup
    train = ctx.train.model_copy(update={"stage_epochs": 0})  # calibration only: fast
    cfg = SimpleNamespace(train=train, seed=0, first_last_bits=(8, 8),
                          baseline_key=lambda: "base")
    base = SimpleNamespace(model=model, data=data, metrics={
        "bitops": ref.bitops, "param_bits": ref.param_bits,
        "test_accuracy": ref.test_accuracy, "val_accuracy": ref.val_accuracy})
    executor = ChainExecutor(cfg, base, tmp_path / "cache", [0.9])
    rows = []
    for seed in (0, 1):
        for row in executor([("quantize", SAMPLES["Q"][0])], seed).rows:
            rows.append({**row, "order": "Q", "kind": "single", "sample": 0, "seed": seed})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "samples.json").write_text(json.dumps(SAMPLES))

    class Refuse:
        ctx = SimpleNamespace(seed=FRESH_SEED_OFFSET)

        def run(self, steps):
            raise AssertionError("a two-seed probe point needs no fresh-seed run")

    study = runner_for(cfg, base, tmp_path / "cache", progress=False)
    got = confirm(tmp_path / "runs.csv", tmp_path / "samples.json", [], ref.val_accuracy,
                  100.0, 2, [study, Refuse()], **RULE)
    assert got is not None and got.feasible and got.candidate.seeds == [0, 1]
    run = got.candidate.runs[0]
    assert run["trained"] == 0 and study.trained == 0 and run["from"] == "probe"
    for key in ("val_accuracy", "test_accuracy", "bitops_cr", "cr"):
        assert run[key] == pytest.approx(rows[0][key], rel=1e-9)
    assert run["val_bitops_cr"] == pytest.approx(rows[0]["val_bitops_cr"], rel=1e-9)


def test_the_bound_rejects_what_the_old_rule_took_and_more_candidates_are_confirmed(tmp_path):
    """QP (300×) was picked on its study-seed run (drop 0.5); its two fresh seeds land at 0.8.
    The old rule took it (mean of the three, 0.7, within 1 point); the bound judges it on the
    fresh runs alone (the selection run is shown, not counted) with σ_run 0.2 from P's
    repeats and the baseline's run counted: 0.8 + 0.52 > 1. Before settling for P (5×) a
    second round confirms PQ (100×; 0.1 on its study seed, raised by QP's 0.3 of optimism,
    could pass), which holds at 0.2 + 0.52."""
    runs_csv, samples_json = _write(tmp_path, [("single", "P", 0, s, 0.979 - 0.004 * (s % 2))
                                               for s in range(2, 40)])
    study = _Runner(0, {"QP": 0.975, "PQ": 0.979, "P": 0.979})
    fresh = [_Runner(k * FRESH_SEED_OFFSET, {"QP": 0.972, "PQ": 0.978}) for k in (1, 2)]
    got = confirm(runs_csv, samples_json, [_trial(3, "QP", 1, 0.975), _trial(4, "PQ", 0, 0.979)],
                  BASE, 1.0, 1, [study, *fresh], confidence=0.9, images=(1800, 1000),
                  base_test=BASE)
    assert got is not None and got.feasible and got.candidate.chain == "PQ"
    qp = next(c for c in got.considered if c.chain == "QP")
    assert 100 * (BASE - qp.mean("val_accuracy")) == pytest.approx(0.7)  # the old rule: in
    j = got.judgement(qp)
    assert j["judging_seeds"] == [FRESH_SEED_OFFSET, 2 * FRESH_SEED_OFFSET]
    assert j["selection_seed"] == 0 and j["mean_val_drop"] == pytest.approx(0.8)
    assert j["sigma_run"] == pytest.approx(0.2, abs=0.01) and j["bound"] > 1.0 and j["margin"] < 0
    ok = got.judgement(got.candidate)
    assert ok["margin"] >= 0 and ok["mean_test_drop"] == pytest.approx(1.2)  # test: 1 pt lower
    assert fresh[0].calls == ["QP", "PQ"]  # round 2 ran PQ before falling back to P


def test_with_nothing_within_the_bound_the_most_accurate_by_its_judging_runs_is_exported(
        tmp_path):
    """No candidate holds the bound. QP's study-seed run (the one it was picked on) was lucky,
    0.1 point below the baseline, its fresh seeds 1.4; PQ's fresh seeds 1.2. With the selection
    run counted QP would look the more accurate (1.0 against 1.2); judged on the runs that
    judge it, PQ is, and PQ is what the infeasible export takes."""
    runs_csv, samples_json = _write(tmp_path, [("single", "P", 0, s, 0.95 - 0.004 * (s % 2))
                                               for s in range(2, 40)])
    study = _Runner(0, {"QP": 0.979, "PQ": 0.970, "P": 0.95})
    fresh = [_Runner(k * FRESH_SEED_OFFSET, {"QP": 0.966, "PQ": 0.968}) for k in (1, 2)]
    got = confirm(runs_csv, samples_json, [_trial(3, "QP", 1, 0.979), _trial(4, "PQ", 0, 0.970)],
                  BASE, 1.0, 2, [study, *fresh], confidence=0.9, images=(1800, 1000),
                  base_test=BASE)
    assert got is not None and not got.feasible
    qp = next(c for c in got.considered if c.chain == "QP")
    assert qp.mean("val_accuracy") > got.candidate.mean("val_accuracy")  # the old ranking
    assert got.candidate.chain == "PQ"


class _Collapsing(_Runner):
    """A fresh seed on which `chain`'s re-run collapses (the fit's guard raises)."""

    def __init__(self, seed, accuracy, chain):
        super().__init__(seed, accuracy)
        self.chain = chain

    def run(self, steps):
        from seqsearch.train import DivergedError

        got = super().run(steps)
        if self.calls[-1] == self.chain:
            raise DivergedError(f"{self.chain}: collapsed: loss rose")
        return got


def test_a_candidate_whose_rerun_collapses_is_left_out_and_the_export_goes_on(tmp_path):
    """QP's first fresh seed collapses: the export does not stop; QP is left out (named in
    `failed`), the next candidate is confirmed and exported."""
    runs_csv, samples_json = _write(tmp_path, [("single", "P", 0, s, 0.979 - 0.004 * (s % 2))
                                               for s in range(2, 40)])
    study = _Runner(0, {"QP": 0.978, "PQ": 0.978, "P": 0.979})
    fresh = [_Collapsing(FRESH_SEED_OFFSET, {"QP": 0.978, "PQ": 0.978}, "QP"),
             _Runner(2 * FRESH_SEED_OFFSET, {"QP": 0.978, "PQ": 0.978})]
    got = confirm(runs_csv, samples_json, [_trial(3, "QP", 1, 0.978), _trial(4, "PQ", 0, 0.978)],
                  BASE, 1.0, 1, [study, *fresh], confidence=0.9, images=(1800, 1000),
                  base_test=BASE)
    assert got is not None and got.feasible and got.candidate.chain == "PQ"
    assert [f["chain"] for f in got.failed] == ["QP"] and "collapsed" in got.failed[0]["error"]
    assert all(c.chain != "QP" for c in got.considered)


def test_the_page_states_the_bound(tmp_path):
    from seqsearch.report.page import bound_text

    c = {"bound": 0.93, "margin": 0.07, "confidence": 0.9, "z": 1.28, "sigma_run": 0.34,
         "sigma_run_from": "40 models", "judging_runs": 2, "mean_val_drop": 0.4,
         "adjusted_val_drop": 0.45, "noise_margin": 0.48, "mean_test_drop": 0.5,
         "baseline_runs": 1.0}
    text = bound_text(c, 1.0)
    for part in ("confidence 0.9", "σ_run 0.34", "= 0.93", "margin +0.07", "0.05 winner's curse",
                 "over 2 runs and 1 baseline run,"):
        assert part in text
    assert "old rule" in bound_text({"runs": []}, 1.0)


def test_samples_that_drew_the_same_params_are_one_candidate_and_counted_as_such(tmp_path):
    """Q's samples 0 and 2 drew the same params (a small discrete space repeats): the same
    chain and params, one model per seed through the prefix cache. The old code kept both as
    candidates of one key and the dict over them silently dropped one, so confirm.json counted
    fewer points than runs.csv without saying why; now they are one candidate naming both
    samples, and confirm.json gives both counts."""
    samples = {**SAMPLES, "Q": [SAMPLES["Q"][0], SAMPLES["Q"][1], SAMPLES["Q"][0]]}
    rows = [("single", "Q", k, s, 0.978) for k in (0, 2) for s in (0, 1)]
    _runs(rows).to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    got = measured_candidates(pd.read_csv(tmp_path / "runs.csv"), samples)
    assert len(got) == 1 and got[0].ident == "samples 0, 2 seeds 0, 1" and got[0].seeds == [0, 1]
    from seqsearch.search.confirm import measured_counts

    assert measured_counts(pd.read_csv(tmp_path / "runs.csv"), got) == {
        "points": 1, "runs_csv_points": 2}


@pytest.mark.parametrize("probe_fixed, pooled", [(None, True), ({"quantize.method": "dorefa"},
                                                                False)])
def test_a_warm_start_is_the_probe_point_when_probe_and_tune_fix_the_same(probe_fixed, pooled):
    """The seed pooling the docstring promises: with the probe taking tuning's fixed params (the
    default), a warm-start trial's steps are its probe point's, so the two share a key and the
    trial's confirmation runs join the probe's seeds. A study whose probe fixes other methods
    (a paper replication) has trials of other chains: nothing to pool, as it says."""
    import optuna

    from seqsearch.config import parse_study
    from seqsearch.search.confirm import _point_steps
    from seqsearch.search.probe import make_samples
    from seqsearch.search.tune import Objective, TuneOptions, warm_start

    study = parse_study({"version": 1, "name": "x", "model": {"name": "resnet8"},
                         "stages": ["prune", "quantize"],
                         "probe": {"fixed": probe_fixed or {}},
                         "tune": {"fixed": {"quantize.method": "lsq"}}})
    samples = make_samples(study.stages, 2, 0, study.probe_fixed())
    runs = pd.DataFrame([{"kind": "pair", "order": "PQ", "sample": 1, "seed": s, "tau": None,
                          "val_accuracy": 0.979, "val_bitops_cr": 50.0} for s in (0, 1)])
    (params,) = warm_start(runs, samples, study.tune_fixed(), BASE, 1.0, 1)
    opts = TuneOptions(chains=("PQ", "P", "Q"), trials=1, budget=1.0,
                       fixed=tuple(sorted(study.tune_fixed().items())))
    _, steps = Objective(None, opts).steps_for(optuna.trial.FixedTrial(params))
    trial = [[s.stage, dict(s.params)] for s in plan(steps)]
    assert (trial == _point_steps(runs.iloc[0], samples)) is pooled
