"""Deploy: a chain with each stage (and DPQE, EQPD) exports to an ONNX file that onnxruntime
runs alone, agrees with the fake-quant model on the test split, keeps the pruned shape and
folds BatchNorm, runs its quantized layers as integer kernels and its exits as `If`."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
import torch
from helpers import run_isolated

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from seqsearch.chain import ChainRunner, Reference, plan  # noqa: E402
from seqsearch.deploy import command as deploy_command  # noqa: E402
from seqsearch.deploy.graph_pass import op_counts, optimized_ops  # noqa: E402
from seqsearch.deploy.lower import QDQLayer, act_grid, lower, weight_integers  # noqa: E402
from seqsearch.deploy.measure import predictions  # noqa: E402
from seqsearch.deploy.onnx_export import export_compressed, file_notes  # noqa: E402
from seqsearch.deploy.qdq import clip, dequantize, quantize  # noqa: E402
from seqsearch.errors import SeqsearchError  # noqa: E402
from seqsearch.models.multi_exit import MultiExit, exit_decisions  # noqa: E402
from seqsearch.stages.quant_layers import quantize_act, quantize_weight  # noqa: E402

CHAINS = ["D", "P", "Q", "E", "L", "DPQE", "EQPD"]
LIGHT = {"E": {"exits": 1, "threshold": 0.8}, "P": {"ratio": 0.3},
         "D": {"width": 0.75, "init": "teacher"}, "Q": {"weight_bits": 4, "act_bits": 4}}


@pytest.fixture(scope="module")
def deploy_setup(tmp_path_factory):
    """A tiny ResNet trained on 1200 digits (240 test images) and a runner for its chains."""
    from helpers import TEST_MEMORY_FORMAT, TEST_PRECISION

    from seqsearch.config import TrainSection
    from seqsearch.data import load_data
    from seqsearch.metrics import count_bitops, param_bits
    from seqsearch.models import create_model
    from seqsearch.stages import StageContext
    from seqsearch.train import TrainSettings, evaluate, fit

    data = load_data("digits", limit=1200, seed=0)
    torch.manual_seed(0)
    model = create_model("resnet8", in_channels=1, num_classes=10, kwargs={"width": 0.5})
    fit(model, data, TrainSettings(epochs=3, lr=0.05, batch_size=32), progress=False)
    train = TrainSection(epochs=1, stage_epochs=1, student_epochs=1, batch_size=32, lr=0.05,
                         precision=TEST_PRECISION, memory_format=TEST_MEMORY_FORMAT)
    ctx = StageContext(data, train, 0, (8, 8), progress=False)
    ref = Reference(float(count_bitops(model, data.input_shape)), float(param_bits(model)),
                    evaluate(model, data.test), evaluate(model, data.val))
    runner = ChainRunner(model, data, ctx, ref, tmp_path_factory.mktemp("cache"), "deploy")
    return model, data, runner, tmp_path_factory.mktemp("onnx")


def _fake_quant_predictions(model, x):
    with torch.no_grad():
        out = model.eval()(x)
    if isinstance(model, MultiExit):
        return exit_decisions(out, model.policy.threshold, model.policy.criterion)[1].numpy()
    return out.argmax(1).numpy()


def _integer_kernel_layers(model, data) -> int:
    """QDQLayers that should become integer convs: conv, uint8 input, int8 weights."""
    low = lower(model, data.train.x[:2]).model
    return sum(1 for m in low.modules() if isinstance(m, QDQLayer) and m.conv and m.has_act
               and m.int_weight and m.border is None)


def _light(c: str, method: str) -> dict:
    params = dict(LIGHT.get(c, {}))
    return {**params, "method": method} if c == "Q" else params


@pytest.mark.parametrize(("order", "method"),
                         [(o, "dorefa") for o in CHAINS] + [("Q", "lsq"), ("QPE", "lsq")])
def test_chain_exports_runs_in_onnxruntime_and_agrees(deploy_setup, order, method):
    base, data, runner, folder = deploy_setup
    steps = plan([(c, _light(c, method)) for c in order])
    model = runner.run(steps).model.cpu().float().eval()
    path = folder / f"{order}-{method}.onnx"
    info = export_compressed(model, data.train.x[:256].cpu().float(), path)
    x = data.test.x.cpu().float()
    y = data.test.y.cpu().numpy()
    want = _fake_quant_predictions(model, x)
    # the graph as written (onnxruntime's Q/DQ fusions off) is the fake-quant model
    graph = predictions(path, x.numpy(), fuse_qdq=False)
    assert (graph == want).mean() >= 0.99, f"{order}: {(graph == want).mean():.3f} identical"
    assert abs((graph == y).mean() - (want == y).mean()) <= 0.002 + 1e-9
    # with onnxruntime's integer kernels: QLinearConv's results differ from the float conv
    # on the same dequantized values by up to a few output levels in these tiny, weakly
    # trained models (0-2 % of predictions here; see docs/deploy.md)
    got = predictions(path, x.numpy())
    assert (got == want).mean() >= 0.97, f"{order}: {(got == want).mean():.3f} identical"
    assert abs((got == y).mean() - (want == y).mean()) <= 0.02
    proto = onnx.load(str(path))
    ops = op_counts(proto)
    # a BatchNorm after a conv, or before an exit head's float linear, is folded; one in front
    # of a quantized head's linear cannot be (the quantizer sits between) and is said
    kept = [n for n in info.notes if "BatchNorm not folded" in n]
    assert ops["BatchNormalization"] == len(kept)
    assert len(kept) == (sum(1 for c in order if c == "E") if "Q" in order else 0)
    assert not any(k.startswith("onnx_symbolic") for k in ops)
    if "E" in order:
        assert info.exits_as_if and ops["If"] >= 1
    else:
        assert ops["If"] == 0
    runtime = optimized_ops(str(path), str(folder / f"{order}-{method}.opt.onnx"))
    if "Q" in order:
        # exact export: every conv whose output the next layer quantizes runs as QLinearConv
        assert runtime["integer"].get("QLinearConv", 0) >= 3, runtime
        int8 = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
        assert len(int8) >= _integer_kernel_layers(model, data)
    else:
        assert not runtime["integer"] and ops["QuantizeLinear"] == 0
    if "P" in order or "D" in order:  # the real, smaller shape: fewer weights than the base
        weights = sum(numpy_helper.to_array(i).size for i in proto.graph.initializer
                      if len(i.dims) >= 2)
        assert weights < sum(p.numel() for n, p in base.named_parameters() if p.dim() >= 2)
    assert file_notes(path) == info.notes


@pytest.mark.parametrize("order", ["Q", "DPQE"])
def test_requant_runs_every_quantized_conv_as_an_integer_conv(deploy_setup, order):
    """With an output requantisation on convs feeding an addition, every conv with a uint8
    input and int8 weights is a QLinearConv in the graph onnxruntime runs; the extra
    rounding costs a little agreement (measured, and bounded here)."""
    _, data, runner, folder = deploy_setup
    model = runner.run(plan([(c, dict(LIGHT.get(c, {}))) for c in order])).model
    model = model.cpu().float().eval()
    path = folder / f"{order}-requant.onnx"
    info = export_compressed(model, data.train.x[:256].cpu().float(), path, requant=True)
    assert info.requant_dropped >= 1  # conv -> ReLU -> quantized layer: no extra rounding
    graph = optimized_ops(str(path), str(folder / f"{order}-requant.opt.onnx"))
    expected = _integer_kernel_layers(model, data)
    assert expected >= 3 and graph["integer"].get("QLinearConv", 0) == expected, graph
    got = predictions(path, data.test.x.cpu().float().numpy())
    assert (got == _fake_quant_predictions(model, data.test.x.cpu().float())).mean() >= 0.95


@pytest.mark.parametrize("method", ["dorefa", "lsq"])
def test_lowering_without_requant_is_the_fake_quant_model(deploy_setup, method):
    """Folded BatchNorm, int8 weights, shifted signed inputs and border corrections compute
    what the fake-quant model computes (the output requantisation is the only rounding the
    deployed graph adds)."""
    _, data, runner, _ = deploy_setup
    model = runner.run(plan([("Q", _light("Q", method))])).model.cpu().float().eval()
    low = lower(model, data.train.x[:2])
    assert low.quantized >= 8 and low.exact == low.quantized
    x = data.test.x[:64].cpu().float()
    with torch.no_grad():
        want, got = model(x), low.model(x)
    assert torch.allclose(got, want, atol=1e-3 * float(want.abs().max()))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in low.model.modules())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_uint8_grid_carries_dorefa_activations_exactly(bits, signed):
    torch.manual_seed(bits)
    x = torch.randn(4096) * 1.5
    s = torch.tensor(1.3)
    want = quantize_act(x, bits, s, signed)
    grid = act_grid(bits, 1.3, signed)
    assert grid is not None and 0 <= grid.lo < grid.hi <= 255 and grid.hi - grid.lo == 2**bits - 1
    scale = torch.tensor(grid.scale)
    zero = torch.tensor(grid.zero_point, dtype=torch.uint8)
    q = clip(quantize(x + grid.shift, scale, zero), torch.tensor(grid.lo, dtype=torch.uint8),
             torch.tensor(grid.hi, dtype=torch.uint8))
    got = dequantize(q, scale, zero) - grid.shift
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 2, 4, 7, 8])
def test_weight_integers_are_the_fake_quant_weights(bits):
    torch.manual_seed(bits)
    w = torch.randn(8, 4, 3, 3) * 0.2
    ints, step = weight_integers(w, bits)
    assert torch.equal(ints, torch.round(ints))
    assert float(ints.abs().max()) <= 2**bits - 1
    assert torch.allclose((ints * step).float(), quantize_weight(w, bits), atol=1e-6)


def test_bench_an_onnx_file_and_cli_errors(deploy_setup, tmp_path):
    from helpers import run_cli

    _, data, runner, _ = deploy_setup
    model = runner.run(plan([("Q", dict(LIGHT["Q"]))])).model.cpu().float().eval()
    path = tmp_path / "m.onnx"
    export_compressed(model, data.train.x[:64].cpu().float(), path)
    proc = run_cli("bench-model", str(path), "--threads", "1", "--runs", "6", "--rounds", "2",
                   "--runtime", "onnxruntime", "--json")
    result = json.loads(proc.stdout)
    assert list(result["runtimes"]) == ["onnxruntime"]
    model = result["runtimes"]["onnxruntime"]["runs"]["model"]
    assert model["file"] == "m.onnx"  # relative to the folder deploy.json is in
    t1 = model["by_threads"]["1"]
    assert t1["batch1_median_ms"] > 0 and t1["batch64_images_per_s"] > 0
    assert len(t1["rounds"]["batch1_median_ms"]) == 2
    assert (tmp_path / "deploy.json").is_file()
    assert str(tmp_path) not in (tmp_path / "deploy.json").read_text()
    for args, key in ((["bench-model", str(tmp_path / "nope")], "nope"),
                      (["bench-model", str(tmp_path / "x.onnx")], "x.onnx"),
                      (["bench-model", str(path), "--runs", "0"], "--runs"),
                      (["bench-model", str(path), "--rounds", "0"], "--rounds")):
        bad = run_cli(*args, check=False)
        assert bad.returncode == 2 and key in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_without_the_extra_export_says_one_line_and_bench_refuses(monkeypatch, tmp_path,
                                                                   capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    monkeypatch.setenv("SEQSEARCH_QUIET", "0")
    got = deploy_command.write_model_onnx(tmp_path, torch.nn.Linear(2, 2), torch.zeros(1, 2))
    assert got is None and not (tmp_path / "model.onnx").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install onnx onnxruntime onnxscript" in err[0]
    with pytest.raises(SeqsearchError, match="pip install onnx onnxruntime onnxscript"):
        deploy_command.bench_file(tmp_path / "m.onnx", None, None)  # type: ignore[arg-type]


def test_onnx_file_needs_no_seqsearch(deploy_setup, tmp_path):
    """The exported file loads in a Python without seqsearch or torch imported."""

    _, data, runner, _ = deploy_setup
    model = runner.run(plan([(c, dict(LIGHT.get(c, {}))) for c in "EQ"])).model
    path = tmp_path / "eq.onnx"
    export_compressed(model.cpu().float().eval(), data.train.x[:64].cpu().float(), path)
    np.save(tmp_path / "x.npy", data.test.x[:8].cpu().float().numpy())
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            f"s = ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n"
            f"y = s.run(None, {{'input': np.load({str(tmp_path / 'x.npy')!r})}})[0]\n"
            "assert y.shape == (8, 10)\n"
            "assert not any(m.split('.')[0] in ('seqsearch', 'torch') for m in sys.modules)\n"
            "print('ok')\n")
    proc = run_isolated(code, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_report_paragraph_shows_real_cost_beside_bitops(tmp_path):
    from seqsearch.report.deploy_section import deploy_html

    assert deploy_html(tmp_path) == ""  # not measured: no paragraph
    (tmp_path / "deploy.json").write_text(json.dumps({
        "speedup": {"batch1": 1.234, "batch64": 0.5}, "bitops_cr": 150.0, "cr": 7.5,
        "size": {"ratio": 2.83, "model_bytes": 1000},
        "accuracy": {"onnx": 0.98, "fake_quant": 0.981, "identical_predictions": 0.994},
        "machine": {"onnxruntime": "1.0", "cpu": "x86_64", "cores": 2, "threads": [1, 2]}}))
    text = deploy_html(tmp_path)
    assert "BitOpsCR 150× and CR 7.50× are theoretical" in text
    assert "1.23× at batch 1" in text and "2.83× smaller" in text and "99.40 %" in text


def test_summary_carries_the_real_cost_paragraph(tmp_path):
    from seqsearch.report.deploy_section import deploy_html, deploy_text

    assert deploy_text(tmp_path) == ""
    (tmp_path / "deploy.json").write_text(json.dumps({
        "speedup": {"batch1": 2.0, "batch64": 1.5}, "bitops_cr": None, "cr": None,
        "size": {"ratio": 4.0, "model_bytes": 10},
        "accuracy": {"onnx": 0.5, "fake_quant": 0.5, "identical_predictions": 1.0},
        "machine": {"onnxruntime": "1.0", "cpu": "x86_64", "cores": 2, "threads": [1]}}))
    text = deploy_text(tmp_path)
    assert text.startswith("Measured") and "2.00× at batch 1" in text
    assert "<" not in text and text in html.unescape(deploy_html(tmp_path))


@pytest.mark.parametrize("head", ["conv"])  # the head of the failing VGG-11 trials
def test_nested_exits_with_quantized_heads_run_in_onnxruntime(deploy_setup, head):
    """QE with three exits: the second and third exits' heads sit in `If` branches nested in
    an outer branch. onnxruntime's Q/DQ fusion looks a DequantizeLinear's weight up in the
    graph of the node, so an int8 head weight kept in the main graph failed to load ("Missing
    required weight: heads.1.3.w_int"); the export keeps each weight in the branch that uses it."""
    _base, data, runner, folder = deploy_setup
    steps = plan([("Q", _light("Q", "lsq")),
                  ("E", {"exits": 3, "threshold": 0.8, "head": head})])
    model = runner.run(steps).model.cpu().float().eval()
    path = folder / f"QE3-{head}.onnx"
    info = export_compressed(model, data.train.x[:256].cpu().float(), path)
    assert info.exits_as_if
    x = data.test.x.cpu().float()
    want = _fake_quant_predictions(model, x)
    got = predictions(path, x.numpy())  # onnxruntime with its integer kernels: loads and runs
    assert (got == want).mean() >= 0.97, f"{(got == want).mean():.3f} identical"
    proto = onnx.load(str(path))
    main = {i.name for i in proto.graph.initializer}
    assert not any(n.startswith("heads.1.") or n.startswith("heads.2.") for n in main
                   if n.endswith("w_int"))
