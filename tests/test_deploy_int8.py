"""Integer kernels that are exact on every x86: int8 weights limited so that u8 × s8 pairs
summed into int16 (vpmaddubsw, CPUs without VNNI) cannot saturate, and each channel widened
by the factor whose int32 bias (onnxruntime rounds it in steps of input × weight scale)
lands closest to the float bias."""

from __future__ import annotations

import pytest
import torch

from seqsearch.deploy.lower import (
    INT16_MAX,
    QDQLayer,
    act_grid,
    bias_widen,
    lower,
    lsq_act_grid,
    weight_limit,
)
from seqsearch.stages.quant_layers import QConv2d, to_quant


@pytest.mark.parametrize(("grid", "limit"), [
    (act_grid(8, 1.0, False), 64),       # full uint8 input: 7-bit weights
    (lsq_act_grid(8, 0.1, False), 64),
    (lsq_act_grid(8, 0.1, True), 64),    # signed LSQ: uint8 at zero point 128, up to 255
    (act_grid(7, 1.0, False), 127),      # up to 127: 2 · 127 · 127 fits int16
    (act_grid(4, 1.0, False), 127),
    (act_grid(2, 1.0, False), 127),
    (None, 127),
])
def test_weight_limit_keeps_every_pair_inside_int16(grid, limit):
    assert weight_limit(grid) == limit
    hi = grid.hi if grid is not None else 0
    assert 2 * hi * limit <= INT16_MAX


def test_bias_widen_takes_the_factor_that_lands_on_the_bias():
    scales = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    # bias 0.25 (units of x_scale × scale): ×4 is exact, ×8 too (the finer is taken);
    # a zero bias takes the largest factor; 1/3 is exact at ×3 only
    bias = torch.tensor([0.25, 0.0, 1 / 3], dtype=torch.float64)
    got = bias_widen(bias, scales, 1.0, torch.tensor([8.0, 8.0, 8.0], dtype=torch.float64))
    assert got.tolist() == [8.0, 8.0, 6.0]
    capped = bias_widen(bias, scales, 1.0, torch.tensor([2.0, 5.0, 2.0], dtype=torch.float64))
    assert capped[1] == 5.0 and 1.0 <= capped[0] <= 2.0


def _conv(weight_bits: int, act_bits: int, method: str, x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = to_quant(torch.nn.Conv2d(8, 16, 3, padding=1), weight_bits, act_bits, method)
    assert isinstance(conv, QConv2d)
    with torch.no_grad():
        conv.bias.uniform_(-0.3, 0.3)
    conv.calibrate(torch.relu(x))
    conv.init_act_step()
    return torch.nn.Sequential(torch.nn.ReLU(), conv).eval()


@pytest.mark.parametrize(("wb", "ab", "method", "exact"), [
    (1, 8, "lsq", True), (4, 8, "lsq", True), (4, 8, "dorefa", True), (8, 8, "dorefa", False),
    (4, 4, "dorefa", True), (2, 2, "dorefa", True)])
def test_lowered_conv_cannot_saturate_and_stays_the_fake_quant_layer(wb, ab, method, exact):
    x = torch.randn(4, 8, 6, 6)
    model = _conv(wb, ab, method, x)
    low = lower(model, x[:2])
    q = low.model[1]
    assert isinstance(q, QDQLayer) and q.int_weight and q.has_act
    top = int(q.w_int.abs().max())
    assert 2 * int(q.x_hi) * top <= INT16_MAX, (int(q.x_hi), top)
    if ab < 8:
        assert top > 64  # below 8-bit inputs the whole int8 range stays in use
    assert (low.exact == 1) == exact
    with torch.no_grad():
        want, got = model(x), low.model(x)
    if exact:
        assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
    else:
        assert any("re-rounded to 64 levels" in n and "saturate" in n for n in low.notes)
