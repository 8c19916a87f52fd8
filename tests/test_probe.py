"""The prober on synthetic stages whose metrics are known (no training), and on a real tiny
study: planted order, planted tie, planted cycle, cache accounting, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import THREADS, run_cli
from optuna.trial import TrialState

from seqsearch.search.order import Criteria, decide
from seqsearch.search.probe import Prober, UnitResult, make_samples, pair_units
from seqsearch.search.storage import open_storage

STAGES = ["distill", "prune", "quantize", "early_exit"]
LETTER = {"distill": "D", "prune": "P", "quantize": "Q", "early_exit": "E"}


def synthetic(preferences: set[tuple[str, str]]):
    """Accuracy gains 0.5 pt for every pair applied in a preferred order and loses 0.5 pt in
    the reverse one; BitOpsCR depends only on the sampled params (so orders tie on CR)."""

    def execute(steps, seed):
        letters = [LETTER[name] for name, _ in steps]
        acc = 0.99 - 0.003 * len(letters)
        for i, a in enumerate(letters):
            for b in letters[i + 1:]:
                acc += 0.005 * ((a, b) in preferences) - 0.005 * ((b, a) in preferences)
        cr = 1.0
        for _, params in steps:
            numeric = [v for v in params.values() if isinstance(v, int | float)
                       and not isinstance(v, bool)]
            cr *= 2.0 + sum(abs(v) for v in numeric) % 7
        acc -= 0.001 * (cr % 3)  # spread the points into a front
        row = {"val_accuracy": acc, "test_accuracy": acc, "val_bitops_cr": cr,
               "bitops_cr": cr, "bitops": 1e9 / cr, "val_bitops": 1e9 / cr, "cr": cr,
               "tau": None, "trained": 1, "cached": len(steps) - 1}
        return UnitResult([row], 1, len(steps) - 1, 0.0)

    return execute


def probe_synthetic(tmp_path, preferences, *, k=8, stop_after=None):
    samples = make_samples(STAGES, k, 0, {})
    execute = synthetic(preferences)
    calls = {"n": 0}

    def maybe_stop(steps, seed):
        calls["n"] += 1
        if stop_after is not None and calls["n"] > stop_after:
            raise KeyboardInterrupt
        return execute(steps, seed)

    prober = Prober(tmp_path, open_storage(None, tmp_path), "syn-probe", maybe_stop, samples)
    prober.run(pair_units("DPQE", k, [0]))
    return prober


def run_side_by_side(probers, units):
    """Each prober in its own thread on the same units, as workers on one storage."""
    import threading

    threads = [threading.Thread(target=p.run, args=(units,)) for p in probers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


CRIT = Criteria(baseline_accuracy=0.99, max_drop=5.0, tie_threshold=0.05, bootstrap=50)


def test_recovers_planted_order(tmp_path):
    planted = {(a, b) for i, a in enumerate("DPQE") for b in "DPQE"[i + 1:]}
    result = decide(probe_synthetic(tmp_path, planted).table(), list("DPQE"), CRIT)
    assert result["orders"] == ["DPQE"]
    assert {p["winner"] for p in result["pairs"]} == {"DP", "DQ", "DE", "PQ", "PE", "QE"}
    assert all(p["confidence"] == 1.0 for p in result["pairs"])
    assert result["cycles"] == []


def test_reports_planted_tie(tmp_path):
    planted = {("D", "P"), ("D", "Q"), ("D", "E"), ("P", "Q"), ("Q", "E")}  # P,E unplanted
    result = decide(probe_synthetic(tmp_path, planted).table(), list("DPQE"), CRIT)
    pe = next(p for p in result["pairs"] if p["pair"] == "PE")
    assert pe["tie"] and pe["winner"] is None and pe["margin"] == 0.0
    assert result["orders"] == ["DPQE"]  # still unique through P->Q->E


def test_handles_planted_cycle(tmp_path):
    planted = {("D", "P"), ("P", "Q"), ("Q", "D"), ("D", "E"), ("P", "E"), ("Q", "E")}
    result = decide(probe_synthetic(tmp_path, planted).table(), list("DPQE"), CRIT)
    assert len(result["cycles"]) == 1 and set(result["cycles"][0]) == {"D", "P", "Q"}
    assert len(result["broken_edges"]) == 1
    assert result["orders"] and all(o.endswith("E") for o in result["orders"])


def test_interrupted_probe_resumes_to_the_same_result(tmp_path):
    planted = {("D", "P"), ("P", "Q"), ("D", "Q"), ("E", "Q")}
    full = decide(probe_synthetic(tmp_path / "a", planted).table(), list("DPQE"), CRIT)
    with pytest.raises(KeyboardInterrupt):
        probe_synthetic(tmp_path / "b", planted, stop_after=20)
    done = len(list((tmp_path / "b" / "units").glob("*.json")))
    assert done == 20
    resumed = probe_synthetic(tmp_path / "b", planted)
    assert decide(resumed.table(), list("DPQE"), CRIT) == full
    assert resumed.totals()["units"] == len(pair_units("DPQE", 8, [0]))


TINY_STUDY = """\
version: 1
name: tiny
model: {{name: tiny}}
data: {{name: digits, limit: 300}}
train: {{epochs: 2, stage_epochs: 1, student_epochs: 1, batch_size: 32}}
stages: [{stages}]
probe: {{samples: {k}, seeds: [0], bootstrap: 20, max_samples: {k}}}
"""




def test_real_probe_counts_cache_savings(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(TINY_STUDY.format(stages="prune, quantize, early_exit", k=2))
    # one worker: two would race for a shared prefix and may both train it (the count is exact
    # only when one process fills the cache)
    out = json.loads(run_cli("probe", str(study), "--out", str(tmp_path / "o"), "--workers", "1",
                             "--json").stdout)
    n, k = 3, 2
    t = out["totals"]
    assert t["stage_trainings"] == n * k + n * (n - 1) * k  # first stages + second stages
    assert t["saved_by_cache"] == n * (n - 1) * k
    assert t["pair_stages_without_cache"] == 2 * n * (n - 1) * k
    order = json.loads(run_cli("order", str(study), "--out", str(tmp_path / "o"), "--json").stdout)
    assert {p["pair"] for p in order["pairs"]} == {"PQ", "PE", "QE"}
    assert order["orders"]
    assert (tmp_path / "o" / "order.json").is_file()
    import pandas as pd

    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    need = {"order", "sample", "seed", "val_accuracy", "test_accuracy", "bitops", "bitops_cr",
            "cr", "epochs", "seconds", "from_cache", "tau", "prune.ratio"}
    assert need <= set(runs.columns)
    assert runs[runs["order"] == "PE"]["tau"].notna().all()  # τ swept on E chains


def _processes_naming(path) -> list[int]:
    """Live processes whose command line names `path` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if str(path) in cmd and state != "Z":
            found.append(int(entry.name))
    return found


def test_workers_default_to_one_per_thread(monkeypatch):
    import argparse

    import torch

    from seqsearch.errors import SeqsearchError
    from seqsearch.workers import resolve_workers, thread_share, workers_arg

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert resolve_workers("auto") == 1  # --threads 1 / OMP_NUM_THREADS=1: no subprocess
    monkeypatch.setattr(torch, "get_num_threads", lambda: 512)
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))  # never above the cores
    assert resolve_workers(3) == 3 and thread_share(2, 4) == 2 and thread_share(8, 4) == 1
    assert workers_arg("auto") == "auto" and workers_arg("2") == 2
    for bad in ("0", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            workers_arg(bad)
    with pytest.raises(SeqsearchError):
        resolve_workers(0)


def test_sigkilled_probe_resumes_with_same_order(tmp_path):
    from seqsearch.cli import main

    study = tmp_path / "s.yaml"
    study.write_text(TINY_STUDY.format(stages="prune, quantize", k=3))
    # the uninterrupted reference in this process (no interpreter to start), one worker
    assert main(["probe", str(study), "--out", str(tmp_path / "clean"), "--workers", "1"]) == 0
    assert main(["order", str(study), "--out", str(tmp_path / "clean")]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "SEQSEARCH_QUIET": "1"}
    # two workers: SIGKILL of the command must take its workers with it
    proc = subprocess.Popen([sys.executable, "-m", "seqsearch", "probe", str(study), "--out",
                             str(killed), "--workers", "2", "--threads", THREADS], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "units").glob("*.json"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and _processes_naming(killed):
        time.sleep(0.2)
    assert not _processes_naming(killed), "a worker outlived its killed command"
    assert len(list((killed / "units").glob("*.json"))) < 12  # it really was cut short
    run_cli("probe", str(study), "--out", str(killed))
    assert main(["order", str(study), "--out", str(killed)]) == 0
    a = json.loads((tmp_path / "clean" / "order.json").read_text())
    b = json.loads((killed / "order.json").read_text())
    assert a == b
    assert len(list((killed / "units").glob("*.json"))) == 12  # 6 singles + 6 pair chains


def test_insertion_and_repetition_checks_on_planted_data(tmp_path):
    from seqsearch.search.order import check_insertions, check_repeats
    from seqsearch.search.probe import insert_units, repeat_units

    planted = {(a, b) for i, a in enumerate("DPQE") for b in "DPQE"[i + 1:]}
    # four insertion checks are one family at 0.1: Holm's first step 0.025 needs 7 units
    prober = probe_synthetic(tmp_path, planted, k=7)
    prober.run(insert_units(["DP", "PQ"], "DPQE", 7, [0]))
    prober.run(repeat_units("DPQE", 7, [0]))
    table = prober.table()
    ins = check_insertions(table, ["DP", "PQ"], "DPQE", CRIT)
    assert {(r["pair"], r["inserted"]) for r in ins} == {
        ("DP", "Q"), ("DP", "E"), ("PQ", "D"), ("PQ", "E")}
    assert all(r["holds"] for r in ins)  # the planted precedence survives an insertion
    reps = check_repeats(table, CRIT)
    assert {r["stage"] for r in reps} == {"D", "P", "Q"}


def test_brute_force_ranks_the_planted_order_first(tmp_path):
    from seqsearch.search.order import rank_orders
    from seqsearch.search.probe import brute_units

    planted = {(a, b) for i, a in enumerate("DPQE") for b in "DPQE"[i + 1:]}
    prober = probe_synthetic(tmp_path, planted, k=3)
    units = brute_units("DPQE", 3, [0])
    assert len(units) == 24 * 3
    prober.run(units)
    ranking = rank_orders(prober.table(), CRIT)
    assert len(ranking) == 24
    assert ranking[0]["order"] == "DPQE" and ranking[-1]["order"] == "EQPD"
    assert all(r["seeds"] == [0] for r in ranking)


def test_brute_force_stopped_in_a_later_seed_ranks_on_the_finished_seeds(tmp_path):
    from seqsearch.search.order import rank_orders
    from seqsearch.search.probe import brute_units

    planted = {(a, b) for i, a in enumerate("DPQE") for b in "DPQE"[i + 1:]}
    prober = probe_synthetic(tmp_path, planted, k=3)
    units = brute_units("DPQE", 3, [0, 1])
    assert {u.seed for u in units[:72]} == {0}  # seed by seed: a stopped sweep is whole
    prober.run(units[:72 + 10])  # seed 1 cut short after 10 of its 72 units
    ranking = rank_orders(prober.table(), CRIT)
    assert all(r["seeds"] == [0] and r["units"] == 3 for r in ranking)
    assert ranking[0]["order"] == "DPQE"


def test_probe_workers_share_the_storage_and_the_cores(tmp_path):
    """`--workers 2` on the journal storage: every unit exactly once, the same verdicts as one
    process, and each worker runs with its share of the threads."""
    from seqsearch.workers import thread_share

    assert thread_share(1) == max(1, len(os.sched_getaffinity(0)))
    assert thread_share(64) == 1
    study = tmp_path / "s.yaml"
    study.write_text(TINY_STUDY.format(stages="prune, quantize", k=2))
    one = json.loads(run_cli("probe", str(study), "--out", str(tmp_path / "one"),
                             "--json").stdout)
    two = json.loads(run_cli("probe", str(study), "--out", str(tmp_path / "two"),
                             "--workers", "2", "--json").stdout)
    units = list((tmp_path / "two" / "units").glob("*.json"))
    # 2 samples x (PQ, QP and the single stages P, Q), each exactly once
    assert one["totals"]["units"] == two["totals"]["units"] == len(units) == 2 * 4
    import optuna

    trials = optuna.load_study(study_name="tiny-probe",
                               storage=open_storage(None, tmp_path / "two")).get_trials()
    done = [t.user_attrs["unit"] for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and "unit" in t.user_attrs]
    assert sorted(done) == sorted(p.stem for p in units)  # no unit ran twice
    verdicts = {}
    for name in ("one", "two"):
        order = json.loads(run_cli("order", str(study), "--out", str(tmp_path / name),
                                   "--json").stdout)
        verdicts[name] = [(p["pair"], p["winner"]) for p in order["pairs"]]
    assert verdicts["one"] == verdicts["two"]


def test_a_sweep_where_no_order_reaches_the_reference_names_no_best():
    """Every full order more than the largest budget below the baseline: all tie at zero
    hypervolume, share rank 1, and the summary claims no best order and no match."""
    from seqsearch.pipeline import brute_summary
    from seqsearch.report.tables import brute_sentence
    from seqsearch.search.order import _rank

    assert _rank(0.0, [0.0, 0.0, 0.0]) == 1 and _rank(1.0, [2.0, 1.0, 0.5]) == 2
    ranking = [{"order": o, "hypervolume": 0.0, "rank": 1, "in_top_set": True}
               for o in ("DEPQ", "DPQE", "EQPD")]
    got = brute_summary(ranking, ["DEPQ"], CRIT)
    assert got["best"] is None and not got["informative"] and not got["pairwise_matches"]
    assert "cannot rank" in brute_sentence(got)
    ranking[1]["hypervolume"] = 0.4
    ranking[1]["rank"], ranking[0]["rank"], ranking[2]["rank"] = 1, 2, 2
    got = brute_summary(sorted(ranking, key=lambda r: r["rank"]), ["DPQE"], CRIT)
    assert got["best"] == "DPQE" and got["pairwise_matches"]


def test_a_unit_queued_twice_runs_once(tmp_path):
    """Two processes that start on an empty study each queue every unit; their workers then
    take the two copies of a unit. Planted here: every unit queued twice, two probers in
    threads on one storage. Each unit still runs exactly once, and none is lost."""
    from collections import Counter

    import optuna

    samples = make_samples(STAGES, 3, 0, {})
    units = pair_units("DPQE", 3, [0])
    storage = open_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, study_name="twice", direction="maximize")
    for u in units:  # the two processes' queues interleave: a unit's copies are adjacent
        for _ in range(2):
            study.enqueue_trial({}, user_attrs={"unit": u.key})
    ran: Counter[str] = Counter()
    execute = synthetic(set())

    def counted(steps, seed):
        ran["".join(LETTER[n] for n, _ in steps) + str(steps[0][1])] += 1
        time.sleep(0.01)
        return execute(steps, seed)

    probers = [Prober(tmp_path, open_storage(None, tmp_path), "twice", counted, samples)
               for _ in range(2)]
    run_side_by_side(probers, units)
    assert sum(ran.values()) == len(units) and max(ran.values()) == 1
    assert len(list((tmp_path / "units").glob("*.json"))) == len(units)


def test_the_lowest_claimed_copy_of_a_unit_wins(tmp_path, monkeypatch):
    import optuna

    import seqsearch.search.probe as probe_mod
    from seqsearch.search.probe import _taken_elsewhere
    from seqsearch.search.storage import claim

    study = optuna.create_study(storage=open_storage(None, tmp_path), study_name="copies")
    for _ in range(3):
        study.enqueue_trial({}, user_attrs={"unit": "u"})
    first, second, third = study.ask(), study.ask(), study.ask()
    claim(first)
    claim(second)  # both claimed, neither confirmed: the lower number runs
    assert _taken_elsewhere(study, second, "u")  # the higher copy drops at once
    monkeypatch.setattr(probe_mod, "CLAIM_WAIT_S", 0.3)  # the lower one waits for it to decide
    assert not _taken_elsewhere(study, first, "u")
    first.set_user_attr("confirmed", True)
    assert _taken_elsewhere(study, third, "u")  # a confirmed copy wins whatever its number
    study.tell(first, 1.0)
    assert _taken_elsewhere(study, third, "u")  # so does a finished one


def test_a_unit_taken_but_never_claimed_is_run_again(tmp_path, monkeypatch):
    """A worker killed between taking a unit and claiming it leaves a RUNNING trial that names
    no process; the next run waits out the claim grace, then runs that unit itself (before the
    fix it waited for that trial forever)."""
    import seqsearch.search.storage as storage_mod

    planted = {(a, b) for i, a in enumerate("DPQE") for b in "DPQE"[i + 1:]}
    samples = make_samples(STAGES, 2, 0, {})
    units = pair_units("DPQE", 2, [0])
    prober = Prober(tmp_path, open_storage(None, tmp_path), "syn-probe", synthetic(planted),
                    samples)
    study = prober._study()
    study.enqueue_trial({}, user_attrs={"unit": units[0].key})
    orphan = study.ask()  # taken, and the worker "dies" before claim()
    assert orphan.user_attrs["unit"] == units[0].key
    monkeypatch.setattr(storage_mod, "CLAIM_GRACE_S", 0.5)
    counts = prober.run(units)
    assert counts["units"] == len(units)  # the orphan's unit too, once
    assert all(prober.unit_path(u).is_file() for u in units)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[orphan.number] == TrialState.FAIL


def test_a_lower_copy_waits_for_a_higher_one_that_already_looked(tmp_path):
    """The race CI hit: B (the higher copy) claims and looks while A is unclaimed, so B goes
    ahead; A then claims and looks before B has confirmed. A must wait for B's decision and
    drop its copy, not run the unit a second time (before: it ran, 49 runs of 48 units)."""
    import threading

    import optuna

    from seqsearch.search.probe import _taken_elsewhere
    from seqsearch.search.storage import claim

    study = optuna.create_study(storage=open_storage(None, tmp_path), study_name="race")
    for _ in range(2):
        study.enqueue_trial({}, user_attrs={"unit": "u"})
    a, b = study.ask(), study.ask()
    claim(b)
    assert not _taken_elsewhere(study, b, "u")  # B looked: nothing claimed below it
    claim(a)
    later = threading.Timer(0.3, lambda: b.set_user_attr("confirmed", True))
    later.start()
    try:
        assert _taken_elsewhere(study, a, "u")
    finally:
        later.join()
    # and a higher copy that drops instead lets the lower one run
    study.enqueue_trial({}, user_attrs={"unit": "v"})
    study.enqueue_trial({}, user_attrs={"unit": "v"})
    c, d = study.ask(), study.ask()
    claim(c)
    claim(d)
    drop = threading.Timer(0.3, lambda: study.tell(d, state=optuna.trial.TrialState.FAIL))
    drop.start()
    try:
        assert not _taken_elsewhere(study, c, "v")
    finally:
        drop.join()


def test_two_workers_count_their_runs_over_the_whole_set(tmp_path, capsys, monkeypatch):
    """Each worker's progress line counts every worker's runs: k of n over the set, so the
    last unit taken reads n of n (each worker used to count only its own, to about n / 2)."""
    import re

    monkeypatch.delenv("SEQSEARCH_QUIET", raising=False)
    samples = make_samples(STAGES, 3, 0, {})
    units = pair_units("DPQE", 3, [0])
    execute = synthetic(set())

    def slow(steps, seed):
        time.sleep(0.02)
        return execute(steps, seed)

    probers = [Prober(tmp_path, open_storage(None, tmp_path), "shared", slow, samples)
               for _ in range(2)]
    run_side_by_side(probers, units)
    lines = re.findall(r"\[probe\] run (\d+)/(\d+)(?: on (\d) workers)?:.*?(ETA [0-9:]+)?$",
                       capsys.readouterr().err, flags=re.M)
    assert len(lines) == len(units)
    ks = [int(k) for k, *_ in lines]
    assert {int(n) for _, n, *_ in lines} == {len(units)}
    assert max(ks) == len(units) and min(ks) >= 1
    assert sum(1 for *_, eta in lines if eta) >= len(units) - 2  # all but each first run


def test_pair_units_queue_each_samples_singles_one_sample_ahead_of_its_pairs():
    """Every pair finds both its stages' singles queued before it, and the next sample's too
    (a worker never waits for a prefix still training); the singles of the sample after that
    wait for this sample's pairs, so a stopped probe leaves few singles without their pairs."""
    units = pair_units("DPQE", 11, [0, 1], start=8)
    assert len(units) == len(set(units)) == 2 * 3 * (4 + 12)
    groups = [(seed, s) for seed in (0, 1) for s in (8, 9, 10)]
    at = {(u.order, u.sample, u.seed): i for i, u in enumerate(units)}
    for u in (u for u in units if u.kind == "pair"):
        g = groups.index((u.seed, u.sample))
        ahead = groups[g:g + 2]
        assert all(at[(a, s, seed)] < at[(u.order, u.sample, u.seed)]
                   for seed, s in ahead for a in "DPQE")
        if g + 2 < len(groups):
            seed, s = groups[g + 2]
            assert at[("D", s, seed)] > at[(u.order, u.sample, u.seed)]
