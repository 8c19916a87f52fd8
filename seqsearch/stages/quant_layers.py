"""DoReFa fake-quant conv and linear layers (Zhou et al. 2016), as subclasses of the torch ones.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqsearch.precision import full_precision

WEIGHT_BITS = (1, 2, 4, 8, 32)
ACT_BITS = (2, 4, 8, 32)


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
    act_scale: torch.Tensor
    act_signed: torch.Tensor

    def _init_quant(self, weight_bits: int, act_bits: int) -> None:
        self.weight_bits = int(weight_bits)
        self.act_bits = int(act_bits)
        self.register_buffer("act_scale", torch.ones(()))  # type: ignore[attr-defined]
        self.register_buffer("act_signed", torch.zeros((), dtype=torch.bool))  # type: ignore[attr-defined]

    def calibrate(self, x: torch.Tensor) -> None:
        """Set the clipping range from a batch of this layer's inputs (99.9th percentile)."""
        flat = x.detach().flatten().float()
        if flat.numel() > 200_000:
            flat = flat[torch.randperm(flat.numel(), device=flat.device)[:200_000]]
        self.act_signed.fill_(bool(flat.min() < 0))
        self.act_scale.fill_(float(torch.quantile(flat.abs(), 0.999).clamp_min(1e-3)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w{self.weight_bits}a{self.act_bits}"  # type: ignore[misc]


    def quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fake-quantized input and weight, computed in fp32 whatever the autocast, so
        they hold exactly 2^act_bits and 2^weight_bits levels."""
        weight: torch.Tensor = self.weight  # type: ignore[attr-defined]
        with full_precision(x):
            xq = quantize_act(x.float(), self.act_bits, self.act_scale, bool(self.act_signed))
            wq = quantize_weight(weight.float(), self.weight_bits)
        return xq, wq


class QConv2d(_QuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self.quantized(x)
        return self._conv_forward(xq, wq, self.bias)


class QLinear(_QuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self.quantized(x)
        return F.linear(xq, wq, self.bias)


def to_quant(layer: nn.Module, weight_bits: int, act_bits: int) -> nn.Module:
    """A QConv2d/QLinear with the same shape and (copied) parameters as a float layer."""
    if isinstance(layer, QConv2d | QLinear):
        layer.weight_bits, layer.act_bits = int(weight_bits), int(act_bits)
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
    q._init_quant(weight_bits, act_bits)
    q.to(layer.weight.device)
    with torch.no_grad():
        q.weight.copy_(layer.weight)
        if layer.bias is not None:
            q.bias.copy_(layer.bias)  # type: ignore[union-attr]
    return q

