"""`seqsearch bench-model --runtime onnxruntime|openvino|all` on a study folder: a block per
runtime in deploy.json (each file against the fp32 baseline in the same runtime, timed
alternately; identical predictions; the integer operators the runtime executes), the CPU
model, its ISA and the runtime versions, paths relative to the folder; chain.yaml's
`real_cost` names the best runtime. A missing runtime is one line."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch
import yaml

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from seqsearch.deploy import machine, runtimes  # noqa: E402
from seqsearch.errors import SeqsearchError  # noqa: E402

HAS_OV = importlib.util.find_spec("openvino") is not None

CHAIN = """\
version: 1
name: tinyq
model: {{name: resnet8, kwargs: {{width: 0.5}}}}
data: {{name: digits, limit: 300}}
train: {{epochs: 2, stage_epochs: 1, student_epochs: 1, batch_size: 32}}
output: {out}
stages:
  - {{stage: quantize, params: {{weight_bits: 4, act_bits: 4}}}}
  - {{stage: early_exit, params: {{exits: 1, threshold: 0.6}}}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study folder as `seqsearch export` leaves it: chain.yaml, model.pt, the baseline."""
    from helpers import run_cli

    root = tmp_path_factory.mktemp("bench")
    folder = root / "study"
    src = root / "src"
    src.mkdir()
    (src / "chain.yaml").write_text(CHAIN.format(out=folder))
    run_cli("apply", str(src / "chain.yaml"), "--out", str(folder / "model.pt"))
    shutil.copy(src / "chain.yaml", folder / "chain.yaml")
    return folder


def test_machine_names_cpu_model_and_isa():
    info = "model name\t: Some CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8\n"
    assert machine.isa(machine.cpu_flags(info)) == ["AVX2", "AVX-512", "VNNI", "AMX"]
    assert machine.isa(machine.cpu_flags("flags : fpu sse4_2 avx2 fma\n")) == ["AVX2"]
    assert machine.isa({"avx_vnni", "avx2"}) == ["AVX2", "VNNI"]
    got = machine.describe({"onnxruntime": "1.0", "openvino": None})
    assert got["cpu"] and got["runtimes"] == {"onnxruntime": "1.0", "openvino": None}
    assert machine.label(got).endswith(f"{got['cores']} cores")


def test_runtime_choice_and_a_missing_runtime_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    said: list[str] = []
    assert runtimes.resolve("all", say=said.append) == ["onnxruntime"]
    assert len(said) == 1 and "openvino is not installed" in said[0]
    assert "pip install" in said[0]
    with pytest.raises(SeqsearchError, match="openvino is not installed"):
        runtimes.resolve("openvino")
    with pytest.raises(SeqsearchError, match="--runtime 'tvm'"):
        runtimes.resolve("tvm")


def test_cli_refuses_an_unknown_runtime_in_one_line(study):
    from helpers import run_cli

    bad = run_cli("bench-model", str(study), "--runtime", "tvm", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "tvm" in bad.stderr


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed (pip install 'seqsearch[openvino]')")
def test_openvino_runs_the_qdq_file_in_integers(study, tmp_path):
    """OpenVINO reads the onnxruntime QDQ file as it is and runs its convs as u8 kernels;
    its fp32 sessions really are fp32 (not bf16 on CPUs that have it)."""
    import numpy as np

    from seqsearch.deploy.onnx_export import export_compressed
    from seqsearch.deploy.runtimes import executed, ov_config, predictions

    assert ov_config(1)["INFERENCE_PRECISION_HINT"] == "f32"
    from seqsearch.baseline import build_data
    from seqsearch.chain import load_model
    from seqsearch.config import load_chain

    data = build_data(load_chain(study / "chain.yaml"), torch.device("cpu"))
    path = tmp_path / "model.onnx"
    export_compressed(load_model(study / "model.pt").float().eval(), data.train.x[:64].float(),
                      path)
    ops = executed("openvino", path, tmp_path / "unused.onnx")
    assert sum(ops["integer"].values()) >= 1, ops
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    ort_pred = predictions("onnxruntime", path, x, fuse_qdq=False)
    assert predictions("openvino", path, x).shape == ort_pred.shape


def test_bench_folder_writes_a_block_per_runtime(study):
    from helpers import run_cli

    proc = run_cli("bench-model", str(study), "--threads", "1", "--runs", "6", "--rounds", "2",
                   "--json")
    result = json.loads(proc.stdout)
    want = ["onnxruntime", "openvino"] if HAS_OV else ["onnxruntime"]
    assert list(result["runtimes"]) == want
    text = (study / "deploy.json").read_text()
    assert json.loads(text)["runtimes"].keys() == result["runtimes"].keys()
    assert str(study) not in text and '"folder"' not in text  # relative paths only
    assert result["files"] == {"model": "model.onnx", "baseline": "deploy/baseline.onnx"}
    m = result["machine"]
    assert m["cpu"] and set(m["isa"]) <= set(machine.ISA_FLAGS)
    assert m["runtimes"]["onnxruntime"] == runtimes.version("onnxruntime")
    assert (m["runtimes"]["openvino"] is not None) == HAS_OV
    for name, block in result["runtimes"].items():
        assert block["version"] == runtimes.version(name)
        assert block["runs"]["model"]["file"] == "model.onnx"
        for label in ("baseline", "model"):
            t1 = block["runs"][label]["by_threads"]["1"]
            assert t1["batch1_median_ms"] > 0 and t1["batch1_p90_ms"] >= t1["batch1_median_ms"]
            assert t1["batch64_images_per_s"] > 0
        s = block["speedup"]
        assert s["batch1"] > 0 and s["batch64"] > 0
        a = block["accuracy"]
        assert 0.9 <= a["identical_predictions"] <= 1.0
        assert sum(block["graph"]["integer"].values()) >= 1, (name, block["graph"])
        assert block["exits"] is not None  # chain QE: the cost of each exit taken
    assert "identical_predictions_without_int8_kernels" in \
        result["runtimes"]["onnxruntime"]["accuracy"]
    if HAS_OV:  # OpenVINO's oneDNN limited to AVX2: the kernels of a CPU without VNNI
        ova = result["runtimes"]["openvino"]["accuracy"]
        assert 0.9 <= ova["identical_predictions_avx2_kernels"] <= 1.0
        if "AVX2" in m["isa"]:
            assert any("avx2" in k for k in ova["avx2_kernels"]), ova["avx2_kernels"]
    best = result["best"]
    assert result["runtime"] == best["batch1"]["model"]["runtime"] in want
    fastest = min(float(v["batch1_median_ms"]) for b in result["runtimes"].values()
                  for v in b["runs"]["model"]["by_threads"].values())
    assert best["batch1"]["model"]["batch1_median_ms"] == pytest.approx(fastest)
    assert result["accuracy"] == result["runtimes"][result["runtime"]]["accuracy"]
    cost = yaml.safe_load((study / "chain.yaml").read_text())["real_cost"]
    assert cost["runtime"] == result["runtime"]
    assert cost["speedup_batch1"] == pytest.approx(best["batch1"]["speedup"], rel=1e-2)
    assert set(cost["identical_predictions_by_runtime"]) == set(want)
    assert m["cpu"] in cost["measured_on"]

    from seqsearch.report.deploy_section import deploy_text

    para = deploy_text(study)
    assert f"best runtime, {result['runtime']}" in para and m["cpu"] in para


@pytest.mark.skipif(not HAS_OV, reason="openvino not installed (pip install 'seqsearch[openvino]')")
def test_a_file_openvino_cannot_run_at_avx2_is_reported_not_a_crash(study, monkeypatch):
    """OpenVINO 2026.4 limited to AVX2 returned an empty batch for a Fashion-MNIST export (and
    a static batch failed to build its inner product): bench-model used to stop with a numpy
    broadcast error after the export. Now deploy.json says why, and the rest is measured."""
    from seqsearch.deploy.cli_command import _folder_lines
    from seqsearch.deploy.command import bench_folder
    from seqsearch.deploy.measure import BenchSettings

    why = "could not create a primitive descriptor for the inner product"
    monkeypatch.setattr(runtimes, "ov_predictions_at_isa",
                        lambda *a, **k: runtimes.IsaRun(None, [], why))
    result = bench_folder(study, BenchSettings(threads=(1,), batch1_runs=3, batch64_runs=3,
                                               rounds=1), runtime="openvino")
    acc = result["runtimes"]["openvino"]["accuracy"]
    assert acc["avx2_mode"] == why and "identical_predictions_avx2_kernels" not in acc
    assert 0.9 <= acc["identical_predictions"] <= 1.0
    assert f"did not run: {why}" in _folder_lines(result, study)
    assert json.loads((study / "deploy.json").read_text())["runtimes"]["openvino"][
        "accuracy"]["avx2_mode"] == why
