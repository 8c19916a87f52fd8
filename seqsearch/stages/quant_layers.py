"""Fake-quant conv and linear layers, DoReFa (Zhou et al. 2016) or LSQ (Esser et al. 2020), as
subclasses of the torch ones.

Being subclasses of `nn.Conv2d` / `nn.Linear` that keep the float (latent) weight as their
parameter is what lets torch-pruning prune a quantized model (the paper's QP) and lets the
BitOps counter read `weight_bits` / `act_bits` off them.

Two deliberate departures from textbook DoReFa, both scalars per layer that fold into the
following BatchNorm or requantisation on hardware, so BitOps are unchanged:
- quantized weights are rescaled by max|tanh(w)| (DoReFa maps them to [-1, 1]), so a layer
  converted from a trained float model starts near its float behaviour;
- activations are clipped to a calibrated range [0, s] (or [-s, s] when the layer's input can be
  negative, e.g. the image or a linear bottleneck) instead of [0, 1]; s is set from the data when
  the layer is created and kept fixed.

LSQ (`method="lsq"`) learns the steps instead: v̂ = round(clip(v/s, -Q_N, Q_P))·s, straight-
through inside the range, the step's gradient scaled by g = 1/sqrt(N·Q_P) (N: the elements
one step quantizes). Weights have one step per output channel (signed: Q_N = 2^(b-1),
Q_P = 2^(b-1) - 1), initialised to 2·mean|w|/sqrt(Q_P); activations one step per tensor
(unsigned, or signed where the layer's input can be negative), initialised from the same
calibrated range as DoReFa's (range / Q_P). 1-bit weights stay BWN (sign(w)·mean|w|): LSQ's
signed 1-bit grid has Q_P = 0. Both methods hold exactly 2^bits levels; BitOps are the same.
The steps are parameters (trained without weight decay, `no_decay_parameters`); pruning an
LSQ layer's output channels prunes its weight steps too (`prune_weight_steps`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqsearch.precision import full_precision

WEIGHT_BITS = (1, 2, 4, 8, 32)
ACT_BITS = (2, 4, 8, 32)
METHODS = ("dorefa", "lsq")
STEP_PARAMETERS = ("weight_step", "act_step")  # LSQ's learned steps: no weight decay


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad


def quantize_k(r: torch.Tensor, k: int) -> torch.Tensor:
    """round((2^k - 1) r) / (2^k - 1) for r in [0, 1], straight-through gradient."""
    n = float(2**k - 1)
    return _RoundSTE.apply(r * n) / n


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    if bits >= 32:
        return w
    if bits == 1:
        e = w.abs().mean().detach()
        # sign(w / E) * E forward, identity gradient (straight-through)
        return w + (torch.sign(w) * e - w).detach()
    t = torch.tanh(w)
    peak = t.abs().max().detach().clamp_min(1e-8)
    f = t / (2 * peak) + 0.5
    return (2 * quantize_k(f, bits) - 1) * peak


def lsq_bounds(bits: int, signed: bool) -> tuple[int, int]:
    """(Q_N, Q_P): the grid is the integers -Q_N..Q_P times the step (2^bits levels)."""
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """x forward, its gradient times g backward."""
    return (x - x * g).detach() + x * g


def lsq_quantize(v: torch.Tensor, step: torch.Tensor, bits: int, signed: bool,
                 per_step: int) -> torch.Tensor:
    """LSQ: round(clip(v/s, -Q_N, Q_P))·s with straight-through rounding; the step's gradient
    is round(v/s) - v/s inside the range, -Q_N or Q_P where clipped, scaled by
    1/sqrt(per_step·Q_P) (`per_step`: how many elements one step quantizes)."""
    qn, qp = lsq_bounds(bits, signed)
    s = _grad_scale(step, 1.0 / math.sqrt(max(per_step, 1) * max(qp, 1))).clamp_min(1e-8)
    q = torch.clamp(v / s, -qn, qp)
    return ((q.round() - q).detach() + q) * s


def lsq_weight_step(w: torch.Tensor, bits: int) -> torch.Tensor:
    """LSQ's initial weight step per output channel, 2·mean|w|/sqrt(Q_P), shaped to broadcast."""
    _, qp = lsq_bounds(bits, True)
    flat = w.detach().float().reshape(w.shape[0], -1)
    step = 2 * flat.abs().mean(dim=1) / math.sqrt(max(qp, 1))
    return step.clamp_min(1e-8).reshape((-1,) + (1,) * (w.dim() - 1))


def quantize_act(x: torch.Tensor, bits: int, scale: torch.Tensor, signed: bool) -> torch.Tensor:
    if bits >= 32:
        return x
    s = scale.clamp_min(1e-8)
    if signed:
        r = (torch.clamp(x / s, -1.0, 1.0) + 1.0) / 2.0
        return (2 * quantize_k(r, bits) - 1) * s
    return quantize_k(torch.clamp(x / s, 0.0, 1.0), bits) * s


class _QuantMixin:
    weight_bits: int
    act_bits: int
    method: str
    act_scale: torch.Tensor
    act_signed: torch.Tensor
    weight_step: nn.Parameter
    act_step: nn.Parameter

    def _init_quant(self, weight_bits: int, act_bits: int, method: str = "dorefa") -> None:
        self.weight_bits = int(weight_bits)
        self.act_bits = int(act_bits)
        self.register_buffer("act_scale", torch.ones(()))  # type: ignore[attr-defined]
        self.register_buffer("act_signed", torch.zeros((), dtype=torch.bool))  # type: ignore[attr-defined]
        self.set_method(method)

    def set_method(self, method: str) -> None:
        """DoReFa, or LSQ with its steps (re)initialised for the current bits: weight steps
        from the weights now, the activation step from the calibrated range (`init_act_step`,
        which calibration calls)."""
        if method not in METHODS:
            raise ValueError(f"unknown quantization method {method!r}; use one of {METHODS}")
        self.method = method
        weight: torch.Tensor = self.weight  # type: ignore[attr-defined]
        if method != "lsq":
            for name in STEP_PARAMETERS:
                if name in self._parameters:  # type: ignore[attr-defined]
                    del self._parameters[name]  # type: ignore[attr-defined]
            return
        bits = self.weight_bits if self.weight_bits < 32 else 8
        self.weight_step = nn.Parameter(lsq_weight_step(weight, bits).to(weight.device))
        self.act_step = nn.Parameter(torch.ones((), device=weight.device))
        self.init_act_step()

    def init_act_step(self) -> None:
        """LSQ's activation step from the calibrated range: range / Q_P."""
        if getattr(self, "method", "dorefa") != "lsq" or self.act_bits >= 32:
            return
        _, qp = lsq_bounds(self.act_bits, bool(self.act_signed))
        with torch.no_grad():
            self.act_step.fill_(float(self.act_scale) / max(qp, 1))

    def calibrate(self, x: torch.Tensor) -> None:
        """Set the clipping range from a batch of this layer's inputs (99.9th percentile)."""
        flat = x.detach().flatten().float()
        if flat.numel() > 200_000:
            flat = flat[torch.randperm(flat.numel(), device=flat.device)[:200_000]]
        self.act_signed.fill_(bool(flat.min() < 0))
        self.act_scale.fill_(float(torch.quantile(flat.abs(), 0.999).clamp_min(1e-3)))

    def extra_repr(self) -> str:
        method = " lsq" if getattr(self, "method", "dorefa") == "lsq" else ""
        return super().extra_repr() + f", w{self.weight_bits}a{self.act_bits}{method}"  # type: ignore[misc]

    def quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fake-quantized input and weight, computed in fp32 whatever the autocast, so
        they hold exactly 2^act_bits and 2^weight_bits levels."""
        weight: torch.Tensor = self.weight  # type: ignore[attr-defined]
        with full_precision(x):
            if getattr(self, "method", "dorefa") != "lsq":
                xq = quantize_act(x.float(), self.act_bits, self.act_scale,
                                  bool(self.act_signed))
                return xq, quantize_weight(weight.float(), self.weight_bits)
            xq = x.float()
            if self.act_bits < 32:
                xq = lsq_quantize(xq, self.act_step, self.act_bits, bool(self.act_signed),
                                  xq[0].numel())
            wq = weight.float()
            if self.weight_bits == 1:
                wq = quantize_weight(wq, 1)
            elif self.weight_bits < 32:
                wq = lsq_quantize(wq, self.weight_step, self.weight_bits, True, wq[0].numel())
        return xq, wq


class QConv2d(_QuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self.quantized(x)
        return self._conv_forward(xq, wq, self.bias)


class QLinear(_QuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self.quantized(x)
        return F.linear(xq, wq, self.bias)


def to_quant(layer: nn.Module, weight_bits: int, act_bits: int,
             method: str = "dorefa") -> nn.Module:
    """A QConv2d/QLinear with the same shape and (copied) parameters as a float layer; a
    quantized layer gets the new bits and method (QQ), LSQ steps re-initialised for them."""
    if isinstance(layer, QConv2d | QLinear):
        layer.weight_bits, layer.act_bits = int(weight_bits), int(act_bits)
        layer.set_method(method)
        return layer
    q: nn.Module
    if isinstance(layer, nn.Conv2d):
        q = QConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,  # type: ignore[arg-type]
                    layer.stride, layer.padding, layer.dilation,  # type: ignore[arg-type]
                    layer.groups, layer.bias is not None, layer.padding_mode)
    elif isinstance(layer, nn.Linear):
        q = QLinear(layer.in_features, layer.out_features, layer.bias is not None)
    else:
        raise TypeError(f"cannot quantize {type(layer).__name__}")
    q.to(layer.weight.device)
    with torch.no_grad():
        q.weight.copy_(layer.weight)
        if layer.bias is not None:
            q.bias.copy_(layer.bias)  # type: ignore[union-attr]
    q._init_quant(weight_bits, act_bits, method)
    return q.to(layer.weight.device)


def no_decay_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LSQ steps in `model`: quantizer parameters train without weight decay (every stage
    passes them to `fit` as its `no_decay` group)."""
    return [p for m in model.modules() if isinstance(m, QConv2d | QLinear)
            for name, p in m.named_parameters(recurse=False) if name in STEP_PARAMETERS]


def prune_weight_steps(layer: nn.Module, keep: list[int]) -> None:
    """Keep the per-output-channel LSQ weight steps of the channels `keep`; call it before the
    layer's own output channels are cut the same way."""
    step = getattr(layer, "weight_step", None)
    if isinstance(layer, QConv2d | QLinear) and isinstance(step, nn.Parameter):
        layer.weight_step = nn.Parameter(step.detach()[keep].clone())
