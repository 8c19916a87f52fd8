"""Lower a compressed model to the network that is deployed: BatchNorm folded into the conv
or linear layer before it, and every DoReFa fake-quant layer replaced by a `QDQLayer` that
holds its real integers.

What is exact and what is not (each inexact or unlowered layer is said, in one line, in
`notes`):
- unsigned k-bit activations (input in [0, s]): uint8, scale s/(2^k-1), zero point 0, clipped
  to 2^k-1 on the integers: exactly DoReFa's levels;
- signed activations (the image, a linear bottleneck) sit on odd multiples of s/(2^k-1), a grid
  with no integer zero point: the input is quantized shifted by s/(2^k-1) (zero point 127,
  exact for k <= 8) and the layer subtracts what the shift added (the layer applied to a
  constant image, so zero-padded borders are right); such a layer runs as a float op;
- weights: DoReFa k-bit weights are odd multiples of peak/(2^k-1), BWN 1-bit ones ±E: with
  the folded BatchNorm gain per output channel they are exact int8 values for k <= 7, widened
  up to the layer's weight limit (`weight_limit`: ±64 on a full-range uint8 input, so u8 x s8
  pairs cannot saturate int16 on CPUs without VNNI; else ±127) by the factor whose int32 bias
  lands closest (`bias_widen`); 8-bit weights (255 levels a side) stay exact floats where the
  layer runs in float anyway, and are re-rounded to the limit where it would run as an
  integer conv;
- LSQ layers: activations are integers -Q_N..Q_P times the learned step (uint8, zero point
  Q_N, exact); weights integers times a learned step per output channel (int8, exact below
  8 bits; 8-bit ones reach -128 and are handled like DoReFa's 8 bits below);
- optional (`calibrate_outputs`): a quantized conv whose output is not quantized next (it
  feeds an addition, a pool) gets an 8-bit output requantisation so that onnxruntime runs it
  as an integer conv; the graph pass drops it where the next layer quantizes the output anyway
  (conv -> [ReLU] -> quantized layer), keeping that exact.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqsearch.deploy.qdq import clip, dequantize, quantize
from seqsearch.stages.quant_layers import QConv2d, QLinear, lsq_bounds


@dataclass
class Lowered:
    """The lowered model and what the lowering could not keep exact or could not lower."""

    model: nn.Module
    notes: list[str] = field(default_factory=list)
    quantized: int = 0
    exact: int = 0


@dataclass(frozen=True)
class ActGrid:
    scale: float
    zero_point: int
    lo: int
    hi: int
    exact: bool
    shift: float = 0.0  # added to the input before quantizing (signed grids, see act_grid)


def act_grid(bits: int, s: float, signed: bool) -> ActGrid | None:
    """The uint8 grid that carries a DoReFa activation quantizer (None: activations float).

    Signed DoReFa levels are (2j - n)·s/n, j = 0..n (n = 2^k - 1): odd multiples of s/n, a
    grid with no integer zero point. Shifted by s/n they are even multiples, so the layer
    quantizes x + s/n at step 2s/n with zero point 127 (j = q - lo exactly, for k <= 8) and
    takes the shift back out after the layer (QDQLayer.border)."""
    if bits >= 32:
        return None
    n = 2**bits - 1
    s = max(float(s), 1e-8)
    if not signed:
        return ActGrid(s / n, 0, 0, n, True)
    lo = 127 - (n - 1) // 2
    return ActGrid(2 * s / n, 127, lo, lo + n, True, s / n)


def weight_integers(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """(integers, step) with DoReFa/BWN's quantized weight == integers * step, exactly."""
    w = weight.detach().double()
    if bits == 1:
        return torch.sign(w), float(w.abs().mean())
    n = 2**bits - 1
    t = torch.tanh(w.float()).double()
    peak = float(t.abs().max().clamp_min(1e-8))
    j = torch.round((t / (2 * peak) + 0.5) * n)
    return 2 * j - n, peak / n


def lsq_act_grid(bits: int, step: float, signed: bool) -> ActGrid | None:
    """The uint8 grid of an LSQ activation quantizer: integers -Q_N..Q_P times the step, at
    zero point Q_N (exact for k <= 8)."""
    if bits >= 32:
        return None
    qn, qp = lsq_bounds(bits, signed)
    return ActGrid(max(float(step), 1e-8), qn, 0, qn + qp, True)


def layer_act_grid(layer: QConv2d | QLinear) -> ActGrid | None:
    """The activation grid of a DoReFa or LSQ fake-quant layer."""
    if getattr(layer, "method", "dorefa") == "lsq":
        return lsq_act_grid(layer.act_bits, float(layer.act_step.detach()), bool(layer.act_signed))
    return act_grid(layer.act_bits, float(layer.act_scale), bool(layer.act_signed))


def layer_weight_integers(layer: QConv2d | QLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers, step per output channel): the layer's quantized weight == integers × step."""
    bits = layer.weight_bits
    c_out = int(layer.weight.shape[0])
    if getattr(layer, "method", "dorefa") == "lsq" and bits > 1:
        qn, qp = lsq_bounds(bits, True)
        w = layer.weight.detach().float()
        step = layer.weight_step.detach().float().clamp_min(1e-8)
        ints = torch.clamp(w / step, -qn, qp).round().double()
        return ints, step.double().reshape(c_out)
    raw, step_ = weight_integers(layer.weight, bits)
    return raw, torch.full((c_out,), step_, dtype=torch.float64)


# vpmaddubsw (AVX2, AVX-512 without VNNI) multiplies u8 by s8 and adds each pair of products
# into a saturating int16: onnxruntime's and OpenVINO's int8 kernels use it on such CPUs
INT16_MAX = 32767


def weight_limit(grid: ActGrid | None) -> int:
    """The largest |int8 weight| of a layer whose uint8 input tops out at `grid.hi`, so that
    no pair a1·w1 + a2·w2 exceeds int16: 127 for inputs up to 129 (activations of 7 bits or
    fewer), 64 (7-bit weights, NNCF's `overflow_fix`) for a full-range uint8 input."""
    if grid is None:
        return 127
    return int(min(127, INT16_MAX // (2 * max(int(grid.hi), 1))))


def bias_widen(bias: torch.Tensor, scales: torch.Tensor, x_scale: float, most: torch.Tensor
               ) -> torch.Tensor:
    """Per output channel, the integer widening m in 1..most whose int32 bias (bias over
    x_scale × scale/m, rounded) is closest to the float bias; ties to the larger m."""
    top = int(most.max())
    m = torch.arange(1, top + 1, dtype=torch.float64)
    units = bias.view(-1, 1) * m.view(1, -1) / (x_scale * scales.view(-1, 1))
    err = (units - torch.round(units)).abs() / m.view(1, -1)  # in x_scale × scale units
    err = torch.where(m.view(1, -1) <= most.view(-1, 1), err, torch.full_like(err, math.inf))
    err = err - 1e-12 * m.view(1, -1)  # ties (a zero bias): the finest scale
    return (err.argmin(dim=1) + 1).to(torch.float64)


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(gain, shift) per channel of an eval-mode BatchNorm: y = gain * x + shift."""
    assert isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d)
    var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
    mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
    gain = 1.0 / torch.sqrt(var.double() + bn.eps)
    shift = -mean.double() * gain
    if bn.weight is not None:
        gain = gain * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double()
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return gain, shift


class QDQLayer(nn.Module):
    """A conv or linear layer as onnxruntime runs it: Q/DQ on the input (uint8), an int8
    per-output-channel weight behind a DequantizeLinear, an optional uint8 output requant.
    Float weights or inputs stay float where the layer keeps them at 32 bits."""

    bias: torch.Tensor
    weight: torch.Tensor
    x_scale: torch.Tensor
    x_zero: torch.Tensor
    x_lo: torch.Tensor
    x_hi: torch.Tensor
    w_int: torch.Tensor
    w_scale: torch.Tensor
    w_zero: torch.Tensor
    y_scale: torch.Tensor
    y_zero: torch.Tensor
    padding: Any

    def __init__(self, layer: nn.Conv2d | nn.Linear, weight: torch.Tensor, bias: torch.Tensor,
                 grid: ActGrid | None, ints: torch.Tensor | None, scales: torch.Tensor | None
                 ) -> None:
        super().__init__()
        self.conv = isinstance(layer, nn.Conv2d)
        if isinstance(layer, nn.Conv2d):
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise TypeError(f"padding {layer.padding!r}/{layer.padding_mode}")
        self.register_buffer("bias", bias.float())
        self.has_act = grid is not None
        if grid is not None:
            self.register_buffer("x_scale", torch.tensor(grid.scale, dtype=torch.float32))
            self.register_buffer("x_zero", torch.tensor(grid.zero_point, dtype=torch.uint8))
            self.register_buffer("x_lo", torch.tensor(grid.lo, dtype=torch.uint8))
            self.register_buffer("x_hi", torch.tensor(grid.hi, dtype=torch.uint8))
            self.x_clip = (grid.lo, grid.hi) != (0, 255)
            self.x_shift = grid.shift
        self.int_weight = ints is not None
        if ints is not None and scales is not None:
            # a linear weight is stored transposed ([in, out], per-column scales) so that it
            # exports as MatMul(x, DQ(W)), the form onnxruntime turns into integer MatMul
            w = ints if self.conv else ints.t().contiguous()
            self.register_buffer("w_int", w.to(torch.int8))
            self.register_buffer("w_scale", scales.float())
            self.register_buffer("w_zero", torch.zeros(scales.numel(), dtype=torch.int8))
        else:
            self.register_buffer("weight", weight.float())
        self.requant = False
        self.border: torch.Tensor | None
        self.border_w: torch.Tensor | None
        self.register_buffer("border", None)
        self.register_buffer("border_w", None)
        self.register_buffer("y_scale", torch.ones(()))
        self.register_buffer("y_zero", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def set_border(self, shift: float, in_shape: tuple[int, ...]) -> None:
        """The input was quantized shifted by +shift: subtract what the shift added, the
        layer applied (without bias) to a constant image of `shift` (a conv's zero padding
        adds nothing, so borders differ from the interior). Stored as that small input
        image; onnxruntime folds the layer applied to it into a constant when it loads."""
        self.border = torch.full((1, *in_shape[1:]), float(shift))
        # a float copy of the weights: onnxruntime does not constant-fold DequantizeLinear
        self.border_w = (dequantize(self.w_int, self.w_scale, self.w_zero,
                                    axis=0 if self.conv else 1)
                         if self.int_weight else self.weight).clone()

    def _layer(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None
               ) -> torch.Tensor:
        if self.conv:
            return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups)
        if not self.int_weight:
            return F.linear(x, w, bias)
        y = torch.matmul(x, w)
        return y if bias is None else y + bias

    def set_output_range(self, lo: float, hi: float) -> None:
        """Requantize the output to uint8 over [lo, hi] (0 always inside)."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        self.y_scale.fill_(scale)
        self.y_zero.fill_(int(min(255, max(0, round(-lo / scale)))))
        self.requant = True

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_act:
            if self.x_shift:
                x = x + self.x_shift
            q = quantize(x, self.x_scale, self.x_zero)
            if self.x_clip:
                q = clip(q, self.x_lo, self.x_hi)
            x = dequantize(q, self.x_scale, self.x_zero)
        axis = 0 if self.conv else 1
        w = dequantize(self.w_int, self.w_scale, self.w_zero, axis=axis) \
            if self.int_weight else self.weight
        y = self._layer(x, w, self.bias)
        if self.border is None or self.border_w is None:
            return y
        return y - self._layer(self.border, self.border_w, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.raw(x)
        if self.requant:
            y = dequantize(quantize(y, self.y_scale, self.y_zero), self.y_scale, self.y_zero)
        return y


@dataclass
class Pairs:
    """What one traced forward pass says about BatchNorm neighbours and input shapes."""

    after: dict[str, str] = field(default_factory=dict)  # BN name -> the layer it follows
    before: dict[str, str] = field(default_factory=dict)  # float Linear -> the BN feeding it
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> Pairs:
    """BatchNorms whose input is exactly a conv/linear layer's output (folded into it), float
    Linear layers whose input is exactly a BatchNorm1d's output (an exit head: the BatchNorm
    folds into the Linear), and each layer's input shape, from one real forward pass."""
    found = Pairs()
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    normed: dict[int, tuple[str, torch.Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            def out_hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor,
                         name: str = name) -> None:
                produced[id(out)] = (name, out)
                found.shapes.setdefault(name, tuple(args[0].shape))
                hit = normed.get(id(args[0]))
                if hit is not None and hit[1] is args[0] and type(_m) is nn.Linear:
                    found.before.setdefault(name, hit[0])
            handles.append(m.register_forward_hook(out_hook))
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            def in_hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor,
                        name: str = name) -> None:
                hit = produced.get(id(args[0]))
                if hit is not None and hit[1] is args[0]:
                    found.after.setdefault(name, hit[0])
                if isinstance(_m, nn.BatchNorm1d):
                    normed[id(out)] = (name, out)
            handles.append(m.register_forward_hook(in_hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    # a layer feeding two BatchNorms (or called twice) cannot absorb either; a BatchNorm
    # folded into the layer before it is not folded into the one after
    counts: dict[str, int] = {}
    for conv in found.after.values():
        counts[conv] = counts.get(conv, 0) + 1
    found.after = {bn: c for bn, c in found.after.items() if counts[c] == 1}
    users: dict[str, int] = {}
    for bn in found.before.values():
        users[bn] = users.get(bn, 0) + 1
    found.before = {lin: bn for lin, bn in found.before.items()
                    if users[bn] == 1 and bn not in found.after}
    return found


@torch.no_grad()
def fold_into_next(linear: nn.Linear, bn: nn.Module) -> None:
    """W(g·x + h) + b = (W·diag g)·x + (W·h + b), in place."""
    gain, shift = bn_affine(bn)
    w = linear.weight.double()
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(w.shape[0],
                                                                           dtype=w.dtype)
    linear.weight.copy_((w * gain.view(1, -1)).float())
    new_bias = (w @ shift + bias).float()
    if linear.bias is None:
        linear.bias = nn.Parameter(new_bias)
    else:
        linear.bias.copy_(new_bias)


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _lower_layer(name: str, layer: nn.Conv2d | nn.Linear, bn: nn.Module | None,
                 in_shape: tuple[int, ...], out: Lowered) -> nn.Module:
    """One conv/linear layer (with the BatchNorm after it folded in) as a QDQLayer, or as a
    plain float layer with folded weights when it is not quantized."""
    w = layer.weight.detach().double()
    c_out = w.shape[0]
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros(c_out,
                                                                                  dtype=w.dtype)
    gain = torch.ones(c_out, dtype=torch.float64)
    if bn is not None:
        gain, shift = bn_affine(bn)
        bias = gain * bias + shift
    view = (-1,) + (1,) * (w.dim() - 1)
    quant = isinstance(layer, QConv2d | QLinear)
    if not quant:
        folded = copy.deepcopy(layer)
        with torch.no_grad():
            folded.weight.copy_((w * gain.view(view)).float())
            if folded.bias is None:
                folded.bias = nn.Parameter(bias.float())
            else:
                folded.bias.copy_(bias.float())
        return folded
    assert isinstance(layer, QConv2d | QLinear)
    out.quantized += 1
    exact = True
    grid = None
    if layer.act_bits < 32:
        grid = layer_act_grid(layer)
    ints = scales = None
    weight = w * gain.view(view)
    if layer.weight_bits < 32:
        raw, step = layer_weight_integers(layer)
        ints = raw * torch.sign(gain).view(view)
        ints[ints == 0] = 0.0  # no -0
        scales = step * gain.abs()
        peak = ints.abs().reshape(c_out, -1).amax(dim=1)
        limit = weight_limit(grid)
        over = peak > limit
        # an integer kernel runs only a conv whose input is unsigned uint8 (a signed input
        # ends in a float border subtraction, a linear layer runs as float Gemm): elsewhere
        # 8-bit weights that int8 cannot hold stay as exact float values
        integer_kernel = isinstance(layer, nn.Conv2d) and grid is not None and not grid.shift
        if bool((peak > 127).any()) and not integer_kernel:
            weight = ints * scales.view(view)
            ints = scales = None
            out.notes.append(f"{name}: 8-bit weights kept as exact float values (they reach "
                             f"{float(peak.max()):.0f} levels a side, int8 holds 127; this "
                             "layer runs as a float op anyway)")
        elif bool(over.any()):
            exact = False
            factor = torch.where(over, peak / limit, torch.ones_like(peak))
            ints = torch.round(ints / factor.view(view))
            scales = scales * factor
            why = ("int8" if limit == 127 else
                   f"±{limit}: u8 × s8 pairs of an input up to {grid.hi if grid else 255} "
                   "cannot saturate int16 on CPUs without VNNI")
            out.notes.append(f"{name}: {int(over.sum())} of {c_out} channels of weights "
                             f"re-rounded to {limit} levels a side ({why})")
        if ints is not None and scales is not None:
            # widen each channel's integers towards the limit (×m, scale ÷m: the same
            # weights). onnxruntime rounds a conv's bias to int32 in steps of input scale ×
            # weight scale; of the factors that fit, take the one whose bias rounding lands
            # closest to the bias (a finer scale shrinks the step, a lucky one lands on it)
            top = ints.abs().reshape(c_out, -1).amax(dim=1).clamp_min(1)
            most = torch.floor(limit / top).clamp_min(1)
            widen = (bias_widen(bias, scales, grid.scale, most)
                     if grid is not None and isinstance(layer, nn.Conv2d) else most)
            ints = ints * widen.view(view)
            scales = (scales / widen).clamp_min(1e-12)
    else:
        out.notes.append(f"{name}: 32-bit weights left float (the layer runs as a float op)")
    if grid is None:
        out.notes.append(f"{name}: 32-bit activations left float (weights int8 on disk only)")
    q = QDQLayer(layer, weight, bias, grid, ints, scales)
    if grid is not None and grid.shift:
        q.set_border(grid.shift, in_shape)
    out.exact += int(exact)
    return q


def lower(model: nn.Module, example: torch.Tensor) -> Lowered:
    """A copy of `model` with BatchNorms folded and fake-quant layers as QDQLayers."""
    model = copy.deepcopy(model).cpu().float().eval()
    pairs = conv_bn_pairs(model, example)
    shapes = pairs.shapes
    folded_into = {conv: bn for bn, conv in pairs.after.items()}
    modules = dict(model.named_modules())
    out = Lowered(model)
    for lin, bn in pairs.before.items():
        layer = modules[lin]
        assert isinstance(layer, nn.Linear)
        fold_into_next(layer, modules[bn])
        _set(model, bn, nn.Identity())
    for name, m in list(modules.items()):
        if not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        bn_name = folded_into.get(name)
        try:
            new = _lower_layer(name, m, modules[bn_name] if bn_name else None,
                               shapes.get(name, ()), out)
        except TypeError as exc:
            out.notes.append(f"{name}: not lowered ({exc}); left as a float layer")
            continue
        _set(model, name, new)
        if bn_name:
            _set(model, bn_name, nn.Identity())
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            out.notes.append(f"{name}: BatchNorm not folded (no conv/linear right before it, "
                             "nor a float linear right after); runs as a float op")
    return out


@torch.no_grad()
def calibrate_outputs(lowered: nn.Module, batch: torch.Tensor) -> int:
    """Give each QDQLayer with int8 weights and quantized input an output requantisation over
    the range its output takes on `batch`; returns how many got one."""
    # a layer with a border correction ends in a float subtraction: no integer conv to feed
    layers: dict[nn.Module, tuple[float, float]] = {
        m: (float("inf"), float("-inf")) for m in lowered.modules()
              if isinstance(m, QDQLayer) and m.conv and m.has_act and m.int_weight
              and m.border is None}
    handles = []
    for m in layers:
        def hook(mod: nn.Module, _i: object, out: torch.Tensor) -> None:
            lo, hi = layers[mod]
            layers[mod] = (min(lo, float(out.min())), max(hi, float(out.max())))
        handles.append(m.register_forward_hook(hook))
    try:
        lowered(batch)
    finally:
        for h in handles:
            h.remove()
    for m, (lo, hi) in layers.items():
        if lo <= hi and isinstance(m, QDQLayer):
            m.set_output_range(lo, hi)
    return len(layers)
