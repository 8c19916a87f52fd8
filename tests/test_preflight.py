"""Every mistake a study can hold is one line and exit 2 before anything trains (issue 33)."""

from __future__ import annotations

import json

import pytest
import torch

from seqsearch.cli import main
from seqsearch.errors import SeqsearchError
from seqsearch.pipeline import all_failed

BASE = ("version: 1\nname: t\nmodel: {name: tiny}\ndata: {name: digits, limit: 200}\n"
        "train: {epochs: 1, batch_size: 32}\n")


def _fails_before_training(tmp_path, capsys, extra: str, fragment: str, *,
                           base: str = BASE) -> None:
    study = tmp_path / "s.yaml"
    study.write_text(base + extra)
    out = tmp_path / "out"
    for argv in (["run", str(study), "--dry-run"], ["run", str(study), "--out", str(out)]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
        assert "Traceback" not in err[0]
    assert not (out / "baseline").exists()  # nothing trained
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra, fragment", [
    ("tune: {fixed: {prune.ratoi: 0.3}}\n", "tune.fixed: stage 'prune': unknown param"),
    ("probe: {fixed: {quantize.weight_bits: 3}}\n",
     "probe.fixed: stage 'quantize': param weight_bits = 3 is not allowed"),
    ("probe: {fixed: {prune.ratio: 1.5}}\n", "probe.fixed: stage 'prune': param ratio = 1.5"),
    ("tune: {chains: [PQX]}\n", "tune.chains: 'PQX': unknown stage 'X'"),
    ("tune: {chains: [EQE]}\n", "tune.chains: 'EQE': stage 'early_exit' (E) cannot be applied "
                                "twice"),
    ("device: gpu\n", "device 'gpu': not a device"),
])
def test_bad_study_fails_before_training(tmp_path, capsys, extra, fragment):
    _fails_before_training(tmp_path, capsys, extra, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(tmp_path, capsys):
    _fails_before_training(tmp_path, capsys, "device: cuda\n", "device 'cuda': this machine "
                                                               "has no CUDA GPU")


def test_missing_imagefolder_root(tmp_path, capsys):
    base = "version: 1\nname: t\nmodel: {name: tiny}\n"
    _fails_before_training(tmp_path, capsys,
                           f"data: {{name: imagefolder, root: {tmp_path / 'nowhere'}}}\n",
                           "data.root", base=base)


def _image_folder(root, classes: int, per_class: int = 3) -> None:
    from PIL import Image

    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20, 20), (40 * c, 10 * i, 0)).save(folder / f"{i}.png")


def test_dry_run_plans_the_real_image_folder(tmp_path, capsys):
    _image_folder(tmp_path / "imgs", 3)
    study = tmp_path / "s.yaml"
    study.write_text("version: 1\nname: t\nmodel: {name: tiny}\n"
                     f"data: {{name: imagefolder, root: {tmp_path / 'imgs'}, image_size: 16}}\n")
    assert main(["run", str(study), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["classes"] == 3 and plan["input"] == [3, 16, 16]
    assert plan["train_images"] == int(9 * 0.9 * 0.8)


def test_model_torch_pruning_cannot_cut_fails_before_training(tmp_path, capsys):
    pytest.importorskip("torchvision")
    base = ("version: 1\nname: t\nmodel: {name: 'torchvision.models:shufflenet_v2_x0_5'}\n"
            "data: {name: digits, limit: 200, image_size: 32}\ntrain: {epochs: 1}\n")
    _fails_before_training(tmp_path, capsys, "stages: [prune, quantize]\n",
                           "stage 'prune': torch-pruning cannot trace", base=base)


def test_baseline_near_chance_stops_with_the_likely_cause(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEQSEARCH_ALLOW_CHANCE_BASELINE", raising=False)
    study = tmp_path / "s.yaml"
    study.write_text(BASE.replace("epochs: 1", "epochs: 0"))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "near chance" in err[-1] and "train.epochs 0" in err[-1]
    assert not (out / "runs.csv").exists()  # the probe never started
    assert main(["baseline", str(study), "--out", str(out)]) == 0  # the baseline alone warns
    assert "warning" in capsys.readouterr().err


def test_a_step_whose_runs_all_fail_is_an_error():
    all_failed("tune", [None, "RuntimeError: x"])  # one run succeeded: no error
    with pytest.raises(SeqsearchError, match="tune: all 2 runs failed; the first: boom"):
        all_failed("tune", ["boom\nmore", "other"])


@pytest.mark.parametrize("k,n,p", [(30, 200, 0.1), (25, 200, 0.1), (0, 10, 0.5), (10, 10, 0.5),
                                   (5, 24, 0.125), (200, 1800, 0.1), (230, 1800, 0.1),
                                   (1700, 1800, 0.1)])
def test_the_chance_test_is_scipys_binomial_tail(k, n, p):
    """The near-chance stop's test without importing scipy.stats (a second at start-up)."""
    from scipy.stats import binomtest

    from seqsearch.baseline import binomial_upper_tail

    want = binomtest(k, n, p, alternative="greater").pvalue
    assert binomial_upper_tail(k, n, p) == pytest.approx(want, rel=1e-9, abs=1e-18)


def test_a_latency_objective_on_a_runtime_not_installed_stops_before_training(tmp_path,
                                                                              monkeypatch):
    """openvino is an extra: `tune.objective: latency` on it, where it is missing, is one line
    before the baseline trains."""
    from seqsearch.config import parse_study
    from seqsearch.preflight import preflight

    monkeypatch.setattr("seqsearch.deploy.runtimes.available", lambda name: name != "openvino")
    study = parse_study({"version": 1, "name": "ov", "model": {"name": "tiny"},
                         "data": {"name": "digits", "limit": 200},
                         "tune": {"objective": "latency", "runtime": "openvino"}})
    with pytest.raises(SeqsearchError, match=r"tune\.runtime: openvino is not installed"):
        preflight(study)
    preflight(study.model_copy(update={"tune": study.tune.model_copy(
        update={"runtime": "onnxruntime"})}))  # installed with the package: passes
