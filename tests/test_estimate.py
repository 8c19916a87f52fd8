"""`--dry-run`'s wall-time estimate: timed batches multiplied by the plan."""

from __future__ import annotations

import json
import math

import pytest

from seqsearch.cli import main
from seqsearch.config import parse_study
from seqsearch.data import DataShape
from seqsearch.search import estimate as E

STUDY = {"version": 1, "name": "t", "model": {"name": "tiny"},
         "data": {"name": "digits", "limit": 200},
         "train": {"epochs": 2, "stage_epochs": 1, "student_epochs": 3, "batch_size": 32},
         "stages": ["distill", "prune"],
         "probe": {"samples": 2, "max_samples": 4, "seeds": [0, 1]},
         "tune": {"trials": 3, "warm_start": 2, "confirm": 1}}


def test_estimate_multiplies_timed_batches_by_the_plan(monkeypatch):
    study = parse_study(STUDY)
    timed = {"device": "cpu", "batch": 32, "baseline_step": [1.0, 3.0], "forward": 0.0,
             "stages": {"D": {"setup": 0.0, "step": [2.0, 4.0]},
                        "P": {"setup": 10.0, "step": [1.0, 1.0]}}}
    monkeypatch.setattr(E, "measure", lambda *a, **k: timed)
    got = E.estimate(study, DataShape(1, 8, 10, 200, False), 128, {})
    steps = math.ceil(128 / 32)
    assert got["batches_per_epoch"] == steps
    assert got["steps"]["baseline"] == {"low": 2 * steps * 1.0, "central": 2 * steps * 2.0,
                                        "high": 2 * steps * 3.0}
    # one training of each stage: D trains student_epochs, P stage_epochs plus its set-up
    one = {"low": 3 * steps * 2.0 + 1 * steps * 1.0 + 10,
           "central": 3 * steps * 3.0 + 1 * steps * 1.0 + 10,
           "high": 3 * steps * 4.0 + 1 * steps * 1.0 + 10}
    n = 2
    assert got["steps"]["probe"]["low"] == pytest.approx(2 * 1 * n * one["low"])  # first look
    assert got["steps"]["probe"]["high"] == pytest.approx(4 * 2 * n * one["high"])  # all looks
    assert got["steps"]["tune"]["high"] == pytest.approx((3 + 2) * one["high"])
    assert got["steps"]["export"] == {"low": 0.0, "central": pytest.approx(one["central"] / 2),
                                      "high": pytest.approx(one["high"])}
    assert got["total"]["low"] <= got["total"]["central"] <= got["total"]["high"]


def test_dry_run_states_wall_time_per_step(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(json.dumps(STUDY))
    assert main(["run", str(study), "--dry-run"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("wall time"))
    for step in ("baseline", "probe", "tune", "export", "total"):
        assert f"{step} " in line
    assert main(["run", str(study), "--dry-run", "--json"]) == 0
    wall = json.loads(capsys.readouterr().out)["wall_time"]
    assert set(wall["measured"]["stages"]) == {"D", "P"}
    assert all(s > 0 for s in wall["measured"]["baseline_step_s"])
    for r in wall["steps"].values():
        assert 0 <= r["low"] <= r["central"] <= r["high"]
    assert main(["run", str(study), "--dry-run", "--no-estimate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["wall_time"] is None
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seconds, text", [(5, "5 s"), (600, "10.0 min"), (7200, "2.0 h"),
                                           (3 * 86400, "3.0 days")])
def test_human(seconds, text):
    assert E.human(seconds) == text


def test_dry_run_counts_the_probe_runs_already_done(tmp_path, capsys):
    """A resumed study's plan says how many probe runs its units/ hold: what the same command
    skips. Units of other kinds (insertion, brute force) are not probe runs."""
    study = tmp_path / "s.yaml"
    study.write_text(json.dumps(STUDY))
    out = tmp_path / "out"
    argv = ["run", str(study), "--out", str(out), "--dry-run", "--no-estimate"]
    assert main(argv) == 0
    assert "probe done" not in capsys.readouterr().out
    (out / "units").mkdir(parents=True)
    for key in ("single-D-k0-s0", "single-P-k0-s0", "pair-DP-k0-s0", "brute-DP-k0-s0"):
        (out / "units" / f"{key}.json").write_text("{}")
    assert main(argv) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "probe done" in ln)
    assert "3 runs (2 single, 1 pair;" in line
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == {"single": 2, "pair": 1}
