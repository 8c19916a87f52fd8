"""`tune.objective: latency | both` and `tune.runtime`: each trial's model lowered to ONNX and
its batch-1 speed-up over the baseline measured on the runtime, cached by the lowered
network's shape and bits (trials that differ only in training are not timed again);
`both` is a multi-objective study with its Pareto front; BitOps stays the default."""

from __future__ import annotations

import copy
import json
import math

import optuna
import pytest
import torch
from helpers import run_cli
from optuna.trial import FixedTrial

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from seqsearch.chain import ChainRunner, plan  # noqa: E402
from seqsearch.config import load_study  # noqa: E402
from seqsearch.search.latency import LatencyMeter, structure_key  # noqa: E402
from seqsearch.search.storage import open_storage  # noqa: E402
from seqsearch.search.tune import Objective, TuneOptions  # noqa: E402

PARAMS = {"prune.ratio": 0.3, "prune.importance": "magnitude", "prune.global_pruning": False,
          "quantize.weight_bits": 4, "quantize.act_bits": 8}

TINY = """\
version: 1
name: {name}
model: {{name: tiny}}
data: {{name: digits, limit: 300}}
train: {{epochs: 2, stage_epochs: 1, student_epochs: 1, batch_size: 32}}
stages: [prune, quantize]
tune: {{trials: 3, budget: 50.0, startup_trials: 2, warm_start: 0, objective: {objective}}}
"""


def test_structure_key_is_shape_and_bits_not_weights(stage_setup):
    model, data, ctx, ref = stage_setup
    runner = ChainRunner(model, data, ctx, ref, None, "k")
    q4 = runner.run(plan([("quantize", {"weight_bits": 4, "act_bits": 4})])).model
    shape = data.input_shape
    retrained = copy.deepcopy(q4)
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(0.01)
    assert structure_key(q4, shape, "onnxruntime") == structure_key(retrained, shape,
                                                                     "onnxruntime")
    q2 = runner.run(plan([("quantize", {"weight_bits": 2, "act_bits": 2})])).model
    pruned = runner.run(plan([("prune", {"ratio": 0.5})])).model
    keys = {structure_key(m, shape, "onnxruntime") for m in (q4, q2, pruned, model)}
    assert len(keys) == 4
    assert structure_key(q4, shape, "openvino") != structure_key(q4, shape, "onnxruntime")


def test_meter_times_a_structure_once_and_keeps_it_in_the_study_folder(stage_setup, tmp_path):
    model, data, ctx, ref = stage_setup
    runner = ChainRunner(model, data, ctx, ref, None, "k")
    q = runner.run(plan([("quantize", {"weight_bits": 4, "act_bits": 8})])).model
    cache = tmp_path / "tune" / "latency.json"
    meter = LatencyMeter(model, data.val.x, runtime="onnxruntime", cache_file=cache, runs=24,
                         rounds=2)
    first = meter.speedup(q)
    assert not first["cached"] and first["speedup"] > 0
    assert first["model_ms"] > 0 and first["baseline_ms"] > 0
    assert first["runtime"] == "onnxruntime"
    other = copy.deepcopy(q)  # the same network trained differently
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.01)
    again = meter.speedup(other)
    assert again["cached"] and again["speedup"] == first["speedup"] and meter.measured == 1
    stored = json.loads(cache.read_text())
    assert stored[first["key"]]["speedup"] == first["speedup"]
    fresh = LatencyMeter(model, data.val.x, runtime="onnxruntime", cache_file=cache)
    assert fresh.speedup(q)["cached"] and fresh.measured == 0


def test_latency_objective_returns_the_log_speedup(stage_setup, tmp_path):
    model, data, ctx, ref = stage_setup
    runner = ChainRunner(model, data, ctx, ref, None, "k")
    meter = LatencyMeter(model, data.val.x, runtime="onnxruntime",
                         cache_file=tmp_path / "latency.json", runs=24, rounds=2)
    for objective in ("latency", "both"):
        opts = TuneOptions(chains=("PQ",), trials=1, budget=100.0, objective=objective)
        trial = FixedTrial(dict(PARAMS))
        value = Objective(runner, opts, meter)(trial)
        speed = trial.user_attrs["speedup"]
        assert trial.user_attrs["latency_runtime"] == "onnxruntime"
        log_cr = math.log(trial.user_attrs["val_bitops_cr"])
        if objective == "latency":
            assert value == pytest.approx(math.log(speed))
        else:
            assert value == pytest.approx((log_cr, math.log(speed)))
    assert meter.measured == 1  # the second objective's trial hit the cache
    with pytest.raises(ValueError, match="latency meter"):
        Objective(runner, TuneOptions(chains=("PQ",), trials=1, budget=1.0,
                                      objective="latency"))


def test_config_defaults_to_bitops_and_refuses_unknown_objectives(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TINY.format(name="t", objective="bitops"))
    assert load_study(path).tune.objective == "bitops"
    assert load_study(path).tune.runtime == "onnxruntime"
    path.write_text(TINY.format(name="t", objective="speed"))
    bad = run_cli("tune", str(path), check=False)
    assert bad.returncode == 2 and "objective" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_tune_both_gives_a_pareto_front_of_bitops_and_speedup(tmp_path):
    """Also a study tuned without a probe (`--chain`): export and report run, the page says no
    pair was tested instead of empty verdict tables, and gives BitOpsCR against the measured
    speed-up of every timed trial with its rank correlation."""
    path = tmp_path / "s.yaml"
    path.write_text(TINY.format(name="lat", objective="both").replace(
        "warm_start: 0,", "warm_start: 0, confirm: 1,"))
    out = tmp_path / "o"
    res = json.loads(run_cli("tune", str(path), "--out", str(out), "--chain", "PQ",
                             "--json").stdout)
    assert res["objective"] == "both" and res["runtime"] == "onnxruntime"
    assert res["pareto"] and all("speedup" in p and "val_bitops_cr" in p
                                 for p in res["pareto"])
    st = optuna.load_study(study_name="lat-tune-b50-both-onnxruntime",
                           storage=open_storage(None, out))
    assert len(st.directions) == 2
    assert (out / "tune" / "latency.json").is_file()
    run_cli("export", str(path), "--out", str(out))
    assert not (out / "runs.csv").exists()
    run_cli("report", str(path), "--out", str(out))
    summary = (out / "summary.md").read_text()
    assert "## No probe" in summary and "## Pairwise verdicts" not in summary
    assert "The paper's claims" not in summary
    assert "Does BitOps predict speed?" in summary and "Spearman" in summary
    speed = (out / "tables" / "speed_vs_bitops.csv").read_text().splitlines()
    assert len(speed) >= 2 and speed[0].startswith("number,chain,val_bitops_cr,speedup")
    assert (out / "index.html").is_file() and (out / "figures" / "speed_vs_bitops.png").is_file()
