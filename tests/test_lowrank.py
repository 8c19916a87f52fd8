"""L (low-rank factorisation): exact on low-rank weights, fewer MACs, quantized factors after Q,
pruned factors after P, BitOps from the real factor layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from seqsearch.chain import ChainRunner, plan
from seqsearch.metrics import count_bitops, count_macs
from seqsearch.stages import get_stage
from seqsearch.stages.lowrank import choose_rank, factorise
from seqsearch.stages.quant_layers import QConv2d, QLinear, to_quant


def _low_rank_conv(rank: int) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, stride=2)
    a, b = torch.randn(24, rank), torch.randn(rank, 16 * 9)
    with torch.no_grad():
        conv.weight.copy_((a @ b).reshape(24, 16, 3, 3))
    return conv


def test_choose_rank_keeps_the_energy_and_the_cap():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squared: 16, 4, 1, 1 of 22
    assert choose_rank(s, 0.7, 1.0) == 1
    assert choose_rank(s, 0.9, 1.0) == 2
    assert choose_rank(s, 0.99, 1.0) == 4
    assert choose_rank(s, 0.99, 0.5) == 2


def test_a_low_rank_conv_factorises_exactly_and_cheaper():
    conv = _low_rank_conv(3)
    first, second = factorise(conv, 0.999, 1.0)
    assert first.out_channels == 3 and second.kernel_size == (1, 1)
    assert first.stride == conv.stride and first.padding == conv.padding
    pair = nn.Sequential(first, second)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.allclose(pair(x), conv(x), atol=1e-4)
    assert count_macs(pair, (16, 9, 9)) < count_macs(conv, (16, 9, 9))


def test_a_full_rank_layer_is_kept_whole():
    torch.manual_seed(0)
    assert factorise(nn.Linear(8, 8), 0.999, 1.0) is None  # r = 8 would cost more
    assert factorise(nn.Conv2d(8, 8, 3, groups=2), 0.5, 1.0) is None  # grouped


def test_a_linear_layer_becomes_two_thinner_ones():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 2) @ torch.randn(2, 64))
    first, second = factorise(lin, 0.999, 1.0)
    assert (first.in_features, first.out_features, second.out_features) == (64, 2, 32)
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.allclose(second(first(x)), lin(x), atol=1e-4)


def test_quantized_layers_give_quantized_factors_at_the_same_bits():
    q = to_quant(_low_rank_conv(3), 4, 8)
    q.act_scale.fill_(2.5)
    first, second = factorise(q, 0.999, 1.0)
    for f in (first, second):
        assert isinstance(f, QConv2d) and (f.weight_bits, f.act_bits) == (4, 8)
    assert float(first.act_scale) == 2.5  # the same input as the layer it replaces
    bitops = count_bitops(nn.Sequential(first, second), (16, 9, 9))
    macs = count_macs(nn.Sequential(first, second), (16, 9, 9))
    assert bitops == macs * 4 * 8  # counted from the real factor layers


@pytest.fixture(scope="module")
def runner(stage_setup, tmp_path_factory):
    model, data, ctx, ref = stage_setup
    return ChainRunner(model, data, ctx, ref, tmp_path_factory.mktemp("cache"), "tiny-digits")


def _factor_pairs(model: nn.Module) -> list[nn.Sequential]:
    return [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2
            and all(isinstance(c, nn.Conv2d | nn.Linear) for c in m)]


def test_l_factorises_the_tiny_model_and_lowers_bitops(stage_setup):
    model, data, ctx, ref = stage_setup
    stage = get_stage("L")
    out = stage.apply(copy.deepcopy(model), ctx, {"energy": 0.6, "rank_ratio": 0.5})
    assert _factor_pairs(out)
    assert count_bitops(out, data.input_shape) < ref.bitops


def test_q_after_l_and_l_after_q_keep_every_layer_quantized(runner):
    for order in ("LQ", "QL"):
        steps = plan([(c, {"energy": 0.6, "rank_ratio": 0.5} if c == "L" else {})
                      for c in order])
        model = runner.run(steps).model
        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert all(isinstance(m, QConv2d | QLinear) for m in layers), order
        assert _factor_pairs(model), order


def test_p_after_l_prunes_the_factors(runner):
    low = {"energy": 0.6, "rank_ratio": 0.5}
    l_only = runner.run(plan([("L", low)])).model
    lp = runner.run(plan([("L", low), ("P", {"ratio": 0.5})])).model
    ranks = [p[0].weight.shape[0] for p in _factor_pairs(l_only)]
    pruned = [p[0].weight.shape[0] for p in _factor_pairs(lp)]
    assert len(ranks) == len(pruned) and sum(pruned) < sum(ranks)
