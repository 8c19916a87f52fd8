"""Every shipped study file loads, and a shrunken copy of each dry-runs to the planned counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqsearch.cli import main
from seqsearch.config import load_study, quickstart_path
from seqsearch.data import FASHION_MNIST_DIR, holds_idx_files

STUDIES = sorted(quickstart_path().parent.rglob("*.yaml"))


def test_paper_scale_studies_are_shipped():
    names = {p.stem for p in STUDIES}
    assert {"resnet34-cifar10", "vgg19-cifar10", "mobilenetv2-cifar10", "resnet34-cifar100",
            "resnet34-svhn", "resnet34-cinic10"} <= names
    for p in STUDIES:
        if p.parent.name == "paper":
            study = load_study(p)
            assert study.train.epochs == study.train.stage_epochs == 200


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_dry_runs_shrunk(path, tmp_path, monkeypatch, capsys):
    doc = yaml.safe_load(path.read_text())
    doc["train"].update(epochs=1, stage_epochs=1, student_epochs=1)
    doc["probe"] = {**doc.get("probe", {}), "samples": 2, "seeds": [0, 1], "max_samples": 2}
    doc["tune"] = {**doc.get("tune", {}), "trials": 3}
    doc["data"]["limit"] = 1000
    if "test_limit" in doc["data"]:
        doc["data"]["test_limit"] = 200
    if doc["data"]["name"] == "imagefolder":  # a stand-in folder: a dry run lists its classes
        from PIL import Image

        for part in ("train", "test"):
            for c in range(10):
                folder = tmp_path / doc["data"]["root"] / part / f"class{c}"
                folder.mkdir(parents=True)
                Image.new("RGB", (4, 4)).save(folder / "0.png")
    shrunk = tmp_path / path.name
    shrunk.write_text(yaml.safe_dump(doc))
    load_study(shrunk)
    # counts only: the wall-time estimate (tests/test_estimate.py) would time ResNet-34 steps.
    # In this process (a fresh interpreter's imports cost 3 s a study): the CLI's main
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    rc = main(["run", str(shrunk), "--dry-run", "--no-estimate", "--json"])
    out, err = capsys.readouterr()
    if doc["data"]["name"] == "fashionmnist" and not holds_idx_files(FASHION_MNIST_DIR):
        # without Debian's package the plan is refused in one line that says how to install it
        assert rc == 2 and err.count("\n") == 1, err
        assert "apt-get install -y dataset-fashion-mnist" in err
        return
    assert rc == 0, err
    plan = json.loads(out)
    n, k, s = len(doc["stages"]), 2, 2
    pairs = doc["probe"].get("pairs")  # probe.pairs: only those pairs, both orders each
    firsts = len(set("".join(pairs))) if pairs else n  # each stage alone, the chains' prefixes
    ordered = 2 * len(pairs) if pairs else n * (n - 1)
    assert plan["probe_stage_trainings"] == firsts * k * s + ordered * k * s
    assert plan["probe_stage_trainings_without_cache"] == firsts * k * s + 2 * ordered * k * s
    assert plan["tune_stage_trainings_at_most"] == 3 * n
    assert plan["baseline_macs"] > 0 and plan["estimated_tflops"] > 0
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.parametrize("name", ["resnet20-mnist5k", "vgg11-mnist5k"])
def test_committed_reports_still_match_their_study(name):
    """New train settings at their defaults must not change the baseline key, or
    `seqsearch report` could no longer rebuild a committed report folder. The key holds the
    policy as resolved, so it is computed under the one the folder recorded: the same on a CPU
    of either kind."""
    from seqsearch.environment import recorded_policy

    root = Path(__file__).parent.parent
    kept = json.loads((root / "reports" / name / "baseline.json").read_text())
    policy = recorded_policy(root / "reports" / name)
    assert policy is not None
    study = load_study(root / "studies" / f"{name}.yaml")
    assert study.baseline_key(policy) == kept["baseline_key"]


def test_order_on_a_committed_folder_never_trains(tmp_path):
    """`seqsearch order` reads the baseline's figures from baseline.json when the model file is
    absent (it used to retrain the baseline), and reproduces the committed verdicts."""
    import shutil

    root = Path(__file__).parent.parent
    folder = root / "reports" / "vgg11-mnist5k"
    for name in ("runs.csv", "baseline.json", "environment.json"):
        shutil.copy(folder / name, tmp_path / name)
    committed = json.loads((folder / "order.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "seqsearch", "order",
                           str(root / "studies" / "vgg11-mnist5k.yaml"), "--out", str(tmp_path),
                           "--json"], capture_output=True, text=True,
                          env={**os.environ, "SEQSEARCH_QUIET": "1"})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "baseline").exists()  # nothing trained, no checkpoint written
    got = json.loads(proc.stdout)
    # the verdicts reproduce; levels, power lines, noise and the null check are those of the
    # current rule (issue 31: edge alpha only at looks that can reject, the exact test's
    # power, seed gaps per model), which the committed order.json predates
    keys = ("pair", "outcome", "winner", "p_value", "effect", "units", "equivalence_p")
    assert [{k: v[k] for k in keys} for v in got["pairs"]] == \
        [{k: v[k] for k in keys} for v in committed["pairs"]]
    assert got["orders"] == committed["orders"] and got["edges"] != []
    assert not (tmp_path / "timings.json").exists()  # rebuilding verdicts is not the study's cost
