"""End to end on a tiny study: `seqsearch run`, the report (tables, figures rendered in headless
Chromium, real PNGs), the exported chain reproduced by `seqsearch apply`, `seqsearch report`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pandas as pd
import pytest
import yaml
from helpers import run_cli

from seqsearch.report import overview
from seqsearch.report.tables import best_seed_means, budget_table, pareto_points

STUDY = """\
version: 1
name: tinyrun
model: {name: resnet8, kwargs: {width: 0.5}}
data: {name: digits, limit: 500}
train: {epochs: 8, stage_epochs: 2, student_epochs: 2, batch_size: 32, lr: 0.1}
stages: [prune, quantize, early_exit]
probe: {samples: 3, seeds: [0], bootstrap: 20, max_samples: 3}
tune: {trials: 4, budget: 10.0, startup_trials: 2, prune_slack: 50.0}
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    study = root / "study.yaml"
    study.write_text(STUDY)
    out = root / "out"
    # two single-threaded probe workers; baseline and tuning in the two-thread parent
    run_cli("run", str(study), "--out", str(out), "--workers", "2", "--threads", "2")
    return study, out


def test_run_writes_everything(finished):
    _, out = finished
    for name in ("summary.md", "index.html", "order.json", "runs.csv", "chain.yaml",
                 "model.pt", "timings.json", "tables/pairs.csv", "tables/budgets.csv",
                 "tables/tuning.csv", "tables/trajectory.csv", "figures/dag.html",
                 "figures/pareto_PQ.html", "figures/trajectory.html", "baseline.json",
                 "tables/claims.csv", "tables/goals.csv", "tables/cost.csv"):
        assert (out / name).is_file(), name
    pngs = list((out / "figures").glob("*.png"))
    assert len(pngs) >= 4
    assert all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000 for p in pngs)
    summary = (out / "summary.md").read_text()
    for heading in ("## Baseline", "## Pairwise verdicts", "## Order DAG", "## Tuned chain",
                    "Table 1", "## Cost", "first/last layer bits 8/8",
                    "## The paper's claims", "## Search cost against the brute force"):
        assert heading in summary
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"baseline", "probe", "order", "tune", "export", "report"}


def test_exported_chain_is_reproduced_by_apply(finished, tmp_path):
    _, out = finished
    doc = yaml.safe_load((out / "chain.yaml").read_text())
    assert set(doc["metrics"]) == {"accuracy", "bitops_cr", "cr"}
    assert doc["versions"]["torch"] and doc["stages"]
    doc["output"] = str(tmp_path / "fresh")  # rebuild from scratch: new baseline, no cache
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump(doc))
    # in a process of another thread count than some of the chain's trainings: apply pins them
    threads = doc["policy"]["threads"]
    per_step = threads if isinstance(threads, list) else [threads] * (1 + len(doc["stages"]))
    other = 3 - min(per_step)
    proc = subprocess.run([sys.executable, "-m", "seqsearch", "apply", str(chain), "--json",
                           "--no-onnx"],
                          capture_output=True, text=True,
                          env={**os.environ, "SEQSEARCH_QUIET": "1",
                               "OMP_NUM_THREADS": str(other)})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["stage_trainings"] == len(doc["stages"])  # really retrained
    assert res["policy"]["threads"] == per_step  # each training ran as the export's did
    for key in ("accuracy", "bitops_cr", "cr"):
        assert res["final"][key] == pytest.approx(doc["metrics"][key], rel=1e-9, abs=1e-12)


def test_report_regenerates_without_training(finished, tmp_path):
    study, out = finished
    before = sorted(p.name for p in (out / "cache").iterdir())
    pairs = (out / "tables" / "pairs.csv").read_text()
    (out / "summary.md").unlink()
    run_cli("report", str(study), "--out", str(out))
    assert (out / "summary.md").is_file()
    assert sorted(p.name for p in (out / "cache").iterdir()) == before
    assert (out / "tables" / "pairs.csv").read_text() == pairs


def test_report_rebuilds_from_committed_files_only(finished, tmp_path):
    """What reports/ commits (no models, caches, units or journal) is enough for the report."""
    study, out = finished
    kept = tmp_path / "kept"
    shutil.copytree(out, kept, ignore=shutil.ignore_patterns(
        "cache", "baseline", "units", "optuna.journal", "*.pt"))
    claims = (out / "tables" / "claims.csv").read_text()
    cost = pd.read_csv(out / "tables" / "cost.csv").set_index("search")
    run_cli("report", str(study), "--out", str(kept))
    assert (kept / "tables" / "claims.csv").read_text() == claims
    for same in ("tables/cost.csv", "figures/dag.html"):  # byte-identical on a rebuild
        assert (kept / same).read_bytes() == (out / same).read_bytes(), same
    # probe (3 stages, K=3, 1 seed): 3·3 singles + 6·3 pairs; brute force: 3·3 + 6·3 + 6·3
    assert cost.loc["pairwise probe", "stage_trainings"] == 27
    assert cost.loc["brute force (all orders)", "stage_trainings"] == 45
    assert cost.loc["pairwise probe", "train_seconds"] > 0
    order = json.loads((kept / "order.json").read_text())
    for p in order["pairs"]:
        del p["decided"]  # as an older seqsearch wrote it
    (kept / "order.json").write_text(json.dumps(order))
    res = run_cli("report", str(study), "--out", str(kept), check=False)
    assert res.returncode == 2 and "seqsearch order' again" in res.stderr
    assert "Traceback" not in res.stderr
    (kept / "baseline.json").write_text('{"baseline_key": "other", "metrics": {}}')
    res = run_cli("report", str(study), "--out", str(kept), check=False)
    assert res.returncode == 2 and "baseline.json" in res.stderr


def test_budget_and_pareto_tables_hand_case():
    runs = pd.DataFrame({
        "kind": ["pair"] * 4, "order": ["AB", "AB", "BA", "BA"], "sample": [0, 1, 0, 1],
        "seed": [0] * 4, "tau": [None] * 4,
        "val_accuracy": [0.99, 0.97, 0.985, 0.96], "val_bitops_cr": [10.0, 100.0, 20.0, 50.0],
        "test_accuracy": [0.98, 0.96, 0.99, 0.95], "bitops_cr": [11.0, 101.0, 21.0, 51.0],
        "cr": [1.0] * 4})
    table = budget_table(runs, base_val=0.99, base_test=0.99, budgets=(0.2, 1.0, 2.0))
    ab = table[table["order"] == "AB"].iloc[0]
    ba = table[table["order"] == "BA"].iloc[0]
    assert ab["bitops_cr@0.2"] == 11.0 and ab["bitops_cr@2"] == 101.0
    assert pd.isna(ba["bitops_cr@0.2"]) and ba["bitops_cr@1"] == 21.0
    assert ab["test_drop@2"] == pytest.approx(3.0)
    pts = pareto_points(runs, ["AB", "BA"])
    assert pts["on_front"].tolist() == [True, True, True, True]


def test_seed_means_pick_by_the_export_rule_on_two_seed_points():
    """A point is judged on its seed mean: AB sample 1 is within 1 point on seed 0 alone but
    not on the mean of its two seeds; a one-seed point is no candidate; kinds apart."""
    def row(kind, order, sample, seed, val, cr, test):
        return {"kind": kind, "order": order, "sample": sample, "seed": seed, "tau": None,
                "val_accuracy": val, "val_bitops_cr": cr, "test_accuracy": test,
                "bitops_cr": cr + 1}
    runs = pd.DataFrame([
        row("pair", "AB", 0, 0, 0.985, 10.0, 0.98), row("pair", "AB", 0, 1, 0.983, 12.0, 0.97),
        row("pair", "AB", 1, 0, 0.985, 90.0, 0.98), row("pair", "AB", 1, 1, 0.96, 90.0, 0.96),
        row("pair", "BA", 2, 0, 0.99, 500.0, 0.99),  # one seed only
        row("single", "A", 0, 0, 0.99, 3.0, 0.99), row("single", "A", 0, 1, 0.99, 5.0, 0.98)])
    t = best_seed_means(runs, base_val=0.99, base_test=0.99, budget=1.0).set_index("kind")
    assert t.loc["pair", "order"] == "AB" and t.loc["pair", "sample"] == 0
    assert t.loc["pair", "val_bitops_cr"] == pytest.approx(11.0)
    assert t.loc["pair", "test_drop"] == pytest.approx(1.5)
    assert t.loc["single", "bitops_cr"] == pytest.approx(5.0)
    assert t.loc["brute", "points"] == 0 and pd.isna(t.loc["brute", "order"])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="headless Chromium not installed (.ci/run installs it)")
def _browse(browser: str, page, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--hide-scrollbars",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000", *extra, page.as_uri()],
            capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(finished, tmp_path):
    _, out = finished
    browser = _chromium()
    assert browser, "CI must have chromium"
    # one plotly.js for the folder of reports, none inside the study folder
    assert (out.parent / "plotly.min.js").is_file()
    assert not list(out.rglob("plotly.min.js"))
    figures = sorted((out / "figures").glob("*.html"))
    for page in [out / "index.html"] + figures:
        proc = _browse(browser, page, "--dump-dom")
        assert proc.returncode == 0, proc.stderr[-2000:]
        dom = proc.stdout
        errors = [line for line in proc.stderr.splitlines()
                  if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
        assert not errors, errors
        plots = dom.count('class="plotly-graph-div')
        # every plot div was drawn (plotly puts its SVG inside each one it renders)
        assert plots >= 1 and dom.count('class="main-svg"') >= plots, page.name
        if page.name == "index.html":
            assert plots == len(figures)  # every figure inline on the page
            assert dom.index('id="answer"') < dom.index('id="figures"')  # the answer first
            assert "Proposed order(s)" in dom and "What the search cost" in dom
            assert "<table" in dom.split('id="figures"')[0]  # verdicts as an HTML table
    shot = tmp_path / "index.png"
    proc = _browse(browser, out / "index.html", "--window-size=1200,1600",
                   f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.read_bytes()[:8] == PNG_MAGIC


def test_overview_puts_studies_side_by_side(finished, tmp_path):
    _, out = finished
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n\nhand-written findings\n")
    assert overview.main([str(out), "--write", str(readme)]) == 0
    first = readme.read_text()
    assert first.startswith("# Results\n\nhand-written findings\n")
    assert "| pair DP |" not in first  # this study has no distillation stage
    # the methods each study's verdicts were measured with, from its samples.json
    row = next(line for line in first.splitlines() if line.startswith("| _verdicts measured"))
    assert row.endswith("| quantize.method dorefa, early_exit.training heads |"), row
    assert overview.probe_methods({"Q": [{"method": "lsq"}] * 2, "D": [{"init": "teacher"}],
                                   "E": [{"exits": 1}, {"training": "joint"}]}) == (
        "distill.init teacher, quantize.method lsq, early_exit.training sampled")
    assert "| pair PQ | PQ |" in first and "### out: search cost" in first
    # the exported chain next to the best single stage and pair the same rule picks
    assert "### out: the exported chain against what the study measured" in first
    exported = json.loads((out / "confirm.json").read_text())["exported"]
    assert f"| {exported['chain']} (from {exported['from']} {exported['id']}) |" in first
    assert "| best single stage |" in first and "| best pair |" in first
    assert overview.main([str(out), "--write", str(readme)]) == 0
    assert readme.read_text() == first  # the marked part is replaced, not appended again
    assert overview.main([str(tmp_path / "nowhere")]) == 2


def test_pngs_skipped_with_one_line_when_no_browser(monkeypatch, tmp_path):
    """Without Chromium or Chrome kaleido cannot render: the PNGs are skipped with one line
    saying what to install, and nothing is raised (the HTML figures stand)."""
    import kaleido
    import plotly.graph_objects as go
    from choreographer.errors import ChromeNotFoundError

    from seqsearch.report.figures import save_pngs

    def no_browser(*_args, **_kwargs):
        raise ChromeNotFoundError("Kaleido v1 and later requires Chrome to be installed.")

    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", no_browser)
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    message = save_pngs([(fig, tmp_path / "a.png")])
    assert message is not None and "\n" not in message
    assert "no Chromium or Chrome" in message and "apt-get install chromium" in message
    assert not (tmp_path / "a.png").exists()
