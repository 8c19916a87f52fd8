from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seqsearch.errors import SeqsearchError
from seqsearch.metrics import (
    bitops_cr,
    count_bitops,
    count_macs,
    expected_exit_cost,
    measure,
    param_bits,
    profile,
    size_cr,
)
from seqsearch.models import create_model


def flop_counter_macs(model: nn.Module, shape) -> int:
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(
    "factory, shape",
    [
        (tvm.resnet18, (3, 64, 64)),
        (tvm.resnet18, (3, 97, 61)),
        (tvm.mobilenet_v2, (3, 64, 64)),  # depthwise
        (tvm.shufflenet_v2_x0_5, (3, 80, 80)),  # depthwise + channel shuffle
        (tvm.regnet_x_400mf, (3, 64, 64)),  # grouped convs
        (tvm.resnext50_32x4d, (3, 48, 48)),  # grouped convs
        (tvm.squeezenet1_1, (3, 96, 96)),  # no linear, conv classifier
        (tvm.efficientnet_b0, (3, 64, 64)),  # squeeze-excitation 1x1 convs on pooled maps
    ],
)
def test_macs_equal_flop_counter(factory, shape):
    model = factory(weights=None)
    assert count_macs(model, shape) == flop_counter_macs(model, shape)


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "mobilenetv2"])
def test_builtin_macs_equal_flop_counter(name):
    model = create_model(name, kwargs={"width": 0.5})
    assert count_macs(model, (3, 40, 40)) == flop_counter_macs(model, (3, 40, 40))


def test_fp32_bitops_is_1024_macs():
    model = create_model("resnet20")
    assert count_bitops(model, (3, 32, 32)) == 41_792_700_416 == 1024 * 40_813_184


def _set_bits(model: nn.Module, bits: int, first_last: int) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for m in layers:
        m.weight_bits = m.act_bits = bits  # the bit-exposure protocol: plain attributes
    for m in (layers[0], layers[-1]):
        m.weight_bits = m.act_bits = first_last


@pytest.mark.parametrize("first_last, expected", [(4, 64.00), (8, 61.98), (32, 38.01)])
def test_resnet20_w4a4_oracle(first_last, expected):
    base = create_model("resnet20")
    fp = count_bitops(base, (3, 32, 32))
    _set_bits(base, 4, first_last)
    assert round(bitops_cr(fp, count_bitops(base, (3, 32, 32))), 2) == expected


def test_bits_read_from_a_conv_subclass():
    class QConv(nn.Conv2d):
        weight_bits = 4
        act_bits = 8

    model = nn.Sequential(QConv(3, 8, 3), nn.Conv2d(8, 4, 1))
    calls, _ = profile(model, (3, 10, 10))
    assert [(c.weight_bits, c.act_bits) for c in calls] == [(4, 8), (32, 32)]
    macs0 = 8 * 8 * 8 * 3 * 9
    macs1 = 4 * 8 * 8 * 8
    assert count_bitops(model, (3, 10, 10)) == macs0 * 32 + macs1 * 1024


def test_param_bits_and_size_cr():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, bias=True), nn.BatchNorm2d(4))
    model[0].weight_bits = 2
    # conv weight 72 @ 2 bits; conv bias 4 + BN 8 @ 32 bits
    assert param_bits(model) == 72 * 2 + 12 * 32
    assert size_cr(84 * 32, param_bits(model)) == pytest.approx(84 * 32 / (144 + 384))


def test_expected_exit_cost_hand_count():
    # Two heads (cost 5 and 7) reading after backbone costs 100 and 250; full backbone 400.
    taken = [0, 0, 1, 2]  # two leave at head 0, one at head 1, one reaches the end
    cost = expected_exit_cost(taken, [100, 250, 400], [5, 7])
    assert cost == pytest.approx(((100 + 5) * 2 + (250 + 5 + 7) + (400 + 12)) / 4)


def test_expected_exit_cost_validates():
    with pytest.raises(ValueError):
        expected_exit_cost([3], [1, 2, 3], [1, 1])
    with pytest.raises(ValueError):
        expected_exit_cost([0], [1, 2], [1, 1])


def test_profile_marks_locate_exit_points():
    model = create_model("resnet8", kwargs={"width": 0.5})
    calls, pos = profile(model, (3, 16, 16), marks=["layer1.0", "layer2.0"])
    # stem conv, then block1 (2 convs, identity shortcut) -> 3 layers done at layer1.0's end
    assert pos["layer1.0"] == 3
    # block2: two convs + a 1x1 shortcut
    assert pos["layer2.0"] == 6
    assert len(calls) == 10  # + block3 (3 convs) + fc


def test_bad_input_shape_is_a_clear_error():
    with pytest.raises(SeqsearchError, match="cannot take input shape 3,8,8"):
        measure(create_model("vgg11"), (3, 8, 8))
