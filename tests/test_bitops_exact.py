"""Exact BitOps checks on compressed models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from seqsearch.chain import accuracy_and_bitops
from seqsearch.config import TrainSection
from seqsearch.data import load_data
from seqsearch.metrics import count_bitops, count_macs, profile
from seqsearch.models import create_model
from seqsearch.models.multi_exit import MultiExit, exit_costs, exit_decisions
from seqsearch.stages import StageContext, get_stage, resolve_params
from seqsearch.stages.early_exit import EarlyExit


def test_quantize_w4a8_first_last_8_is_sum_of_macs_times_bits(stage_setup):
    model, data, ctx, _ = stage_setup
    calls, _ = profile(model, data.input_shape)
    expected = sum(c.macs * (8 * 8 if i in (0, len(calls) - 1) else 4 * 8)
                   for i, c in enumerate(calls))
    q = get_stage("quantize")
    out = q.apply(copy.deepcopy(model), ctx, resolve_params(q.info, {"weight_bits": 4,
                                                                      "act_bits": 8}))
    assert count_bitops(out, data.input_shape) == expected


def test_early_exit_tau_above_one_is_static_bitops(stage_setup):
    model, data, ctx, _ = stage_setup
    e = get_stage("early_exit")
    out = e.apply(copy.deepcopy(model), ctx, resolve_params(e.info, {"exits": 2}))
    _, bitops = accuracy_and_bitops(out, data.test, data.input_shape, threshold=1.01)
    assert bitops == count_bitops(out, data.input_shape)  # backbone + every head
    assert bitops > count_bitops(model, data.input_shape)


def test_early_exit_expected_bitops_hand_count():
    """tiny: conv 1->8 (3x3, 8x8 out), conv 8->16 (3x3, stride 2, 4x4 out), fc 16->10."""
    data = load_data("digits", limit=200, seed=0)
    torch.manual_seed(0)
    model = create_model("tiny", in_channels=1, num_classes=10)
    ctx = StageContext(data, TrainSection(stage_epochs=1, batch_size=32), 0, progress=False)
    e = get_stage("early_exit")
    multi = e.apply(model, ctx, resolve_params(e.info, {"exits": 1, "head": "linear"}))
    assert isinstance(multi, MultiExit) and multi.points == ["block1"]
    stem, body, fc, head = 8 * 8 * 8 * 9, 16 * 4 * 4 * 8 * 9, 16 * 10, 8 * 10
    backbone_to, heads = exit_costs(multi, data.input_shape)
    assert backbone_to == [stem * 1024, (stem + body + fc) * 1024]
    assert heads == [head * 1024]
    with torch.no_grad():
        outs = multi.eval()(data.test.x)
    for tau, _, bitops in EarlyExit.sweep(multi, data.test, data.input_shape, [0.0, 0.3, 2.0]):
        taken, _ = exit_decisions(outs, tau)
        early = int((taken == 0).sum())
        n = len(data.test)
        hand = (early * (stem + head) + (n - early) * (stem + body + fc + head)) * 1024 / n
        assert bitops == pytest.approx(hand, rel=1e-12)
    # τ = 0: everyone leaves at the head
    assert EarlyExit.sweep(multi, data.test, data.input_shape, [0.0])[0][2] == (stem + head) * 1024


def test_pruned_macs_equal_a_forward_count(stage_setup):
    model, data, ctx, _ = stage_setup
    p = get_stage("prune")
    out = p.apply(copy.deepcopy(model), ctx, resolve_params(p.info, {"ratio": 0.5}))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out.eval()(torch.zeros(1, *data.input_shape))
    assert count_macs(out, data.input_shape) == counter.get_total_flops() // 2
    assert count_macs(out, data.input_shape) < count_macs(model, data.input_shape)
