"""Activation ranges fit the trained layers after E on a quantized model (QE).

The heads E adds to a quantized model are quantized from the start. Their clip ranges used to
be calibrated through BatchNorms that still held initial statistics (mean 0, variance 1): here
the ranges came out up to 1.8x narrower than the inputs the trained heads see (clip 1.28
against 2.33), and with 1-bit weights no sample left early. Now the heads' BatchNorm
statistics are estimated first; the ranges must fit what the trained layer receives (within
1.5x; measured 0.82-1.10x).

Q's ranges must fit what QAT trains on too. torchvision's MNASNet keeps BatchNorm running
statistics with momentum 3e-4, so after a short baseline they still hold nearly their initial
values: its eval-mode inputs grew to 2e22 where training sees about 5, ranges calibrated in
eval mode rounded every training activation to one level, and QAT's first backward was NaN.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TEST_MEMORY_FORMAT, TEST_PRECISION
from torch import nn

from seqsearch.chain import ChainRunner, plan
from seqsearch.config import TrainSection
from seqsearch.data import load_data
from seqsearch.models import build_model
from seqsearch.models.multi_exit import MultiExit
from seqsearch.stages import StageContext
from seqsearch.stages.common import calibrate, counted_layers, replace_module
from seqsearch.stages.early_exit import EarlyExit
from seqsearch.stages.quant_layers import QConv2d, QLinear, to_quant
from seqsearch.stages.quantize import Quantize
from seqsearch.train import TrainSettings, fit, predict


def _head_ranges(model: MultiExit, x: torch.Tensor) -> list[tuple[float, float]]:
    """(calibrated clip, 99.9th percentile of the layer's real input) for each head layer."""
    out = []
    for head in model.heads:
        for layer in head.modules():
            if isinstance(layer, QConv2d | QLinear):
                seen: dict[str, torch.Tensor] = {}
                handle = layer.register_forward_pre_hook(
                    lambda _m, inp, seen=seen: seen.setdefault("x", inp[0].detach()))
                model.eval()
                with torch.no_grad():
                    model(x)
                handle.remove()
                actual = float(torch.quantile(seen["x"].abs().flatten().float(), 0.999))
                out.append((float(layer.act_scale), actual))
    return out


@pytest.mark.parametrize("order", ["QE", "QPE"])
def test_quantized_heads_have_ranges_that_fit(stage_setup, tmp_path, order):
    model, data, ctx, ref = stage_setup
    # enough head-training steps (4 epochs x 8 batches) for BatchNorm's running statistics to
    # move away from their initial values, which is when a range set through them misfits
    ctx = StageContext(data, TrainSection(**{**ctx.train.model_dump(), "stage_epochs": 4}),
                       ctx.seed, ctx.first_last_bits, progress=False)
    params = {"Q": ("quantize", {"weight_bits": 4, "act_bits": 4}),
              "P": ("prune", {"ratio": 0.3}),
              "E": ("early_exit", {"exits": 2, "threshold": 0.6, "head": "linear"})}
    runner = ChainRunner(model, data, ctx, ref, tmp_path, "ranges")
    result = runner.run(plan([params[c] for c in order]))
    assert isinstance(result.model, MultiExit)
    ranges = _head_ranges(result.model, data.val.x)
    assert ranges
    for clip, actual in ranges:
        assert actual / 1.5 <= clip <= actual * 1.5, (clip, actual)
    outs = predict(result.model, data.val)
    assert isinstance(outs, list)


@pytest.fixture(scope="module")
def stale_norms():
    """mnasnet0_5 after a one-epoch baseline (2 steps) on 128 digits at 16x16: its BatchNorm
    running statistics have moved 2 x 3e-4 of the way to the trained weights' statistics."""
    data = load_data("digits", limit=128, seed=0, image_size=16)
    torch.manual_seed(0)
    model = build_model("torchvision.models:mnasnet0_5", input_shape=data.input_shape,
                        num_classes=data.num_classes)
    assert all(m.momentum < 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    fit(model, data, TrainSettings(epochs=1, lr=0.1, batch_size=64), progress=False)
    train = TrainSection(epochs=1, stage_epochs=1, batch_size=64, lr=0.1,
                         precision=TEST_PRECISION, memory_format=TEST_MEMORY_FORMAT)
    return model, StageContext(data, train, 0, (8, 8), progress=False)


def _inputs_999(model: nn.Module, x: torch.Tensor, train: bool) -> list[float]:
    """The 99.9th percentile of each quantized layer's float input, BatchNorms in train mode
    (batch statistics, as in QAT) or eval mode (running statistics)."""
    model = copy.deepcopy(model)  # a train-mode pass moves running statistics
    layers = [m for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    seen: dict[nn.Module, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(
        lambda m, inp: seen.setdefault(m, inp[0].detach())) for m in layers]
    for m in layers:
        m.act_bits = 32
    model.train(train)
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return [float(torch.quantile(seen[m].abs().flatten().float(), 0.999)) for m in layers]


def test_ranges_fit_the_activations_qat_trains_on(stale_norms):
    model, ctx = stale_norms
    q = copy.deepcopy(model)
    for name, layer in list(counted_layers(q)):
        replace_module(q, name, to_quant(layer, 4, 8))
    x = ctx.example_batch(256)
    running = copy.deepcopy(q.state_dict())
    calibrate(q, x)
    scales = [float(m.act_scale) for m in q.modules() if isinstance(m, QConv2d | QLinear)]
    trained, evaluated = _inputs_999(q, x, train=True), _inputs_999(q, x, train=False)
    assert max(evaluated) > 1e6 * max(trained)  # the premise: running statistics are stale
    for scale, actual in zip(scales, trained, strict=True):
        assert actual / 1.5 <= max(scale, 1e-3) <= max(actual, 1e-3) * 1.5, (scale, actual)
    for key, value in q.state_dict().items():  # calibration leaves the statistics alone
        if "running_" in key or "num_batches" in key:
            assert torch.equal(value, running[key]), key


def test_eq_with_stale_norms_trains_without_nan(stale_norms):
    """The issue's chain, E then Q on MNASNet: Q's first epoch used to be NaN."""
    model, ctx = stale_norms
    multi = EarlyExit().apply(copy.deepcopy(model), ctx,
                              {"exits": 1, "placement": "early", "head": "linear",
                               "threshold": 0.9, "criterion": "max_softmax"})
    Quantize().apply(multi, ctx, {"weight_bits": 4, "act_bits": 8})  # DivergedError before
    for m in multi.modules():
        if isinstance(m, QConv2d | QLinear):
            assert torch.isfinite(m.weight).all() and float(m.act_scale) < 1e3
