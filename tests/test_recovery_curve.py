"""The recovery curve (seqsearch bench recovery): points, knees, figure, resume, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import run_cli

from seqsearch.cli import main
from seqsearch.config import parse_study
from seqsearch.recovery.analysis import analyse, knee, seconds_model
from seqsearch.recovery.plan import budget_setting, choose_samples, middle_tau, with_budget

STUDY = """\
version: 1
name: tinycurve
model: {name: tiny}
data: {name: digits, limit: 300}
train: {epochs: 2, stage_epochs: 1, student_epochs: 1, batch_size: 32}
stages: [prune, quantize, early_exit]
probe: {samples: 2, seeds: [0], bootstrap: 20, max_samples: 2}
"""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(stage: str, drops: dict[int, tuple[float, float]], seconds=lambda e: 2.0 + 3.0 * e):
    return [{"stage": stage, "letter": stage[0].upper(), "setting": "stage_epochs",
             "epochs": e, "steps": 35 * e, "seed": s, "params": {}, "curve_drop": d,
             "val_drop": d, "test_drop": d, "val_bitops_cr": 10.0,
             "train_seconds": seconds(e), "error": None}
            for e, pair in drops.items() for s, d in enumerate(pair)]


def test_knee_is_the_smallest_budget_within_tolerance_of_the_best():
    # the Q at w2a2: 1.39 points at 1 epoch, about 0.3 at 4
    rows = _rows("quantize", {1: (1.2, 1.58), 2: (0.5, 0.7), 4: (0.28, 0.34), 8: (0.2, 0.2)})
    stage = analyse(rows, tolerance=0.25, paper_epochs=15,
                    study_epochs={"quantize": 1})["quantize"]
    k = stage["knee"]
    assert (k["epochs"], k["steps"], k["best_epochs"]) == (4, 140, 8)
    assert k["drop"] == pytest.approx(0.31) and not k["at_largest_budget"]
    assert stage["study_drop"] == pytest.approx(1.39)
    assert [r["drop_min"] for r in stage["curve"]][0] == pytest.approx(1.2)
    # a tighter tolerance puts the knee at the largest budget: the curve may still fall
    tight = knee(stage["curve"], 0.05)
    assert tight is not None and tight["epochs"] == 8 and tight["at_largest_budget"]


def test_paper_rule_cost_is_extrapolated_from_the_seconds_line():
    rows = _rows("prune", {1: (0.5, 0.5), 2: (0.1, 0.1), 4: (0.0, 0.0)})
    assert seconds_model(rows) == pytest.approx((2.0, 3.0))
    pr = analyse(rows, tolerance=0.25, paper_epochs=15,
                 study_epochs={"prune": 1})["prune"]["paper_rule"]
    assert not pr["measured"] and pr["drop"] is None
    assert pr["seconds"] == pytest.approx(47.0)  # 2 s + 15 epochs x 3 s
    assert pr["times_knee"] == pytest.approx(47.0 / 8.0)  # knee: 2 epochs, 8 s
    measured = analyse(rows, tolerance=0.25, paper_epochs=4,
                       study_epochs={"prune": 1})["prune"]["paper_rule"]
    assert measured["measured"] and measured["seconds"] == pytest.approx(14.0)


def test_failed_points_are_left_out_and_counted():
    rows = _rows("quantize", {1: (1.0, 2.0), 2: (0.5, 0.5)})
    rows[1] = {**rows[1], "error": "loss is nan", "curve_drop": None}
    curve = analyse(rows, tolerance=0.25, paper_epochs=4,
                    study_epochs={})["quantize"]["curve"]
    assert (curve[0]["seeds"], curve[0]["failed"], curve[0]["drop"]) == (1, 1, 1.0)


def test_budgets_samples_and_tau_follow_the_study():
    study = parse_study(json.loads(json.dumps({
        "version": 1, "name": "t", "model": {"name": "tiny"},
        "train": {"epochs": 15, "stage_epochs": 1, "student_epochs": 2},
        "probe": {"samples": 3, "fixed": {"quantize.act_bits": 4, "distill.init": "scratch"},
                  "thresholds": [0.5, 0.8, 0.9, 0.99]}})))
    assert budget_setting("distill") == "student_epochs"
    assert {budget_setting(s) for s in ("prune", "quantize", "early_exit")} == {"stage_epochs"}
    four = with_budget(study, "stage_epochs", 4)
    assert four.train.stage_epochs == 4 and four.baseline_key() == study.baseline_key()
    chosen = choose_samples(study, ("distill", "quantize", "prune"), None, {})
    # probe.fixed wins
    assert chosen["quantize"] == {"weight_bits": 2, "act_bits": 4, "method": "dorefa"}
    assert chosen["prune"]["ratio"] == 0.5 and chosen["distill"]["width"] == 0.5
    from seqsearch.search.probe import make_samples

    probe = make_samples(["quantize"], 3, 0, dict(study.probe.fixed))["Q"]
    again = choose_samples(study, ("quantize",), 2, {"quantize": {"weight_bits": 8}})
    assert again["quantize"] == {**probe[2], "weight_bits": 8, "method": "dorefa"}
    assert middle_tau(study) == 0.9


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    """The command on the tiny study, twice: the second run must train nothing."""
    root = tmp_path_factory.mktemp("curve")
    study = root / "study.yaml"
    study.write_text(STUDY)
    args = ("bench", "recovery", str(study), "--out", str(root / "out"), "--epochs", "1,2",
            "--seeds", "0,1", "--stages", "prune,quantize", "--json")
    first = json.loads(run_cli(*args).stdout)
    table = pd.read_csv(root / "out" / "recovery" / "recovery.csv")
    drawn = (root / "out" / "recovery" / "recovery.html").stat().st_mtime_ns
    second = json.loads(run_cli(*args).stdout)
    second["redrawn"] = (root / "out" / "recovery" / "recovery.html").stat().st_mtime_ns != drawn
    return root / "out", first, second, table


def test_curve_writes_points_table_figure_and_knees(curve):
    out, first, _, table = curve
    folder = out / "recovery"
    assert first["run"] == {"points": 8, "trained": 8, "reused": 0, "folder": str(folder)}
    assert len(table) == 8 and len(list((folder / "points").glob("*.json"))) == 8
    assert set(zip(table["stage"], table["epochs"], table["seed"], strict=True)) == {
        (s, e, seed) for s in ("prune", "quantize") for e in (1, 2) for seed in (0, 1)}
    assert set(table["steps"]) == {7, 14}  # 216 training images, batch 32: 7 steps an epoch
    assert table["train_seconds"].gt(0).all() and table["error"].isna().all()
    assert (table["curve_drop"] == table["val_drop"]).all()  # no exits: the model's drop
    base = first["baseline"]["val_accuracy"]
    assert table["val_drop"].tolist() == pytest.approx(
        (100 * (base - table["val_accuracy"])).tolist())
    assert json.loads(table["params"][table["stage"] == "quantize"].iloc[0]) == {
        "act_bits": 2, "method": "dorefa", "weight_bits": 2}
    doc = json.loads((folder / "recovery.json").read_text())
    assert list(doc["stages"]) == ["prune", "quantize"]
    for stage in doc["stages"].values():
        assert stage["knee"]["epochs"] in (1, 2) and len(stage["curve"]) == 2
        assert stage["paper_rule"]["epochs"] == 2 and stage["paper_rule"]["measured"]
        assert stage["study_epochs"] == 1 and stage["setting"] == "stage_epochs"
    assert (folder / "recovery.html").is_file()
    png = folder / "recovery.png"
    if png.is_file():
        assert png.read_bytes()[:8] == PNG_MAGIC
    else:  # no browser for kaleido here: one note says so
        assert any("PNG" in n for n in doc["notes"])
    # budgets and seeds never share a cached model
    assert len(list((out / "cache" / "recovery").glob("*.pt"))) == 8


def test_second_run_trains_nothing(curve):
    out, first, second, table = curve
    assert second["run"]["trained"] == 0 and second["run"]["reused"] == 8
    assert not second["redrawn"]  # nothing new: the figure stands
    pd.testing.assert_frame_equal(pd.read_csv(out / "recovery" / "recovery.csv"), table)
    assert second["stages"] == first["stages"]


def test_interrupted_curve_resumes_where_it_stopped(tmp_path, monkeypatch):
    from seqsearch.recovery import curve as C
    from seqsearch.recovery.curve import CurveOptions, run_curve
    from seqsearch.report import figures

    monkeypatch.setattr(figures, "save_pngs", lambda figs: None)  # the figure is tested above
    study = parse_study(__import__("yaml").safe_load(STUDY))
    opts = CurveOptions(stages=("quantize", "early_exit"), epochs=(0, 1), seeds=(0,))
    real, calls = C._measure, []

    def dies_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "_measure", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_curve(study, tmp_path, opts)
    assert len(list((tmp_path / "recovery" / "points").glob("*.json"))) == 2
    monkeypatch.setattr(C, "_measure", real)
    done = run_curve(study, tmp_path, opts)
    assert done["run"] == {"points": 4, "trained": 2, "reused": 2,
                           "folder": str(tmp_path / "recovery")}
    e = done["stages"]["early_exit"]
    assert e["metric"] == "exit heads"  # with exits: the heads' own accuracy is the curve
    table = pd.read_csv(tmp_path / "recovery" / "recovery.csv")
    exits = table[table["stage"] == "early_exit"]
    assert exits["tau"].eq(0.9).all() and exits["exits_val_accuracy"].notna().all()
    assert exits["curve_drop"].tolist() == pytest.approx(
        (100 * (done["baseline"]["val_accuracy"] - exits["exits_val_accuracy"])).tolist())


def test_bad_epochs_is_one_line_and_exit_2(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(STUDY)
    proc = run_cli("bench", "recovery", str(study), "--out", str(tmp_path / "o"),
                   "--epochs", "1,x", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--epochs '1,x'" in lines[0]
    assert not (tmp_path / "o").exists()  # checked before anything is built or trained


@pytest.mark.parametrize("argv, fragment", [
    (["--epochs", "2,2"], "each value may be listed once"),
    (["--epochs=-1,2"], "must be 0 or more"),
    (["--seeds", ""], "--seeds"),
    (["--stages", "prune,nope"], "unknown stage 'nope'"),
    (["--tolerance", "lots"], "--tolerance"),
    (["--sample", "-1"], "--sample"),
    (["--param", "quantize.bits=3"], "unknown param 'bits'"),
    (["--param", "prune.ratio=0.3", "--stages", "Q"], "not on the curve"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    study = tmp_path / "s.yaml"
    study.write_text(STUDY)
    assert main(["bench", "recovery", str(study), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not (tmp_path / "o").exists()
