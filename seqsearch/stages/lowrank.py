"""L: low-rank factorisation of convolutions and linear layers (truncated SVD), then fine-tuning.

A k×k convolution C_in → C_out becomes a k×k convolution C_in → r (same stride, padding and
dilation) followed by a 1×1 convolution r → C_out carrying the bias; a linear layer becomes two
thinner ones. Each layer's rank r is the smallest that keeps `energy` of its weight's squared
singular values, capped at `rank_ratio` of its full rank; a layer is left whole when the
factorised pair would not cost fewer MACs. The first layer and every layer that outputs class
logits (the classifier and exit heads' last layers) stay whole, as Q keeps them at their own
bits. The model is then fine-tuned like P.

It composes with every other stage: after Q the factors are fake-quant layers at the layer's
bits (the first factor keeps the layer's activation range, the second is calibrated on data);
P after L prunes the factors (the rank is a channel dimension torch-pruning sees); D and E
treat the factor pairs as ordinary layers. BitOps come from the real factor layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from optuna.distributions import FloatDistribution
from torch import nn

from seqsearch.stages.base import Range, StageContext, StageInfo
from seqsearch.stages.common import (
    calibrate,
    classifier_layers,
    counted_layers,
    first_last_layers,
    replace_module,
)
from seqsearch.stages.quant_layers import QConv2d, QLinear, no_decay_parameters, to_quant
from seqsearch.train import fit


def choose_rank(singular: torch.Tensor, energy: float, rank_ratio: float) -> int:
    """Smallest r keeping `energy` of the squared singular values, capped at rank_ratio·full."""
    sq = singular.double() ** 2
    total = float(sq.sum())
    full = int(singular.numel())
    if total <= 0:
        return 1
    kept = torch.cumsum(sq, 0) / total
    r = int((kept < energy - 1e-12).sum().item()) + 1
    return max(1, min(r, full, math.ceil(rank_ratio * full)))


def _macs_per_position(layer: nn.Module) -> tuple[int, int, int]:
    """(in, out, k·k) of a conv or linear layer."""
    if isinstance(layer, nn.Conv2d):
        kk = int(layer.kernel_size[0] * layer.kernel_size[1])
        return layer.in_channels, layer.out_channels, kk
    assert isinstance(layer, nn.Linear)
    return layer.in_features, layer.out_features, 1


def worth_it(layer: nn.Module, r: int) -> bool:
    """True when the factor pair costs fewer MACs than the layer."""
    c_in, c_out, kk = _macs_per_position(layer)
    return r * c_in * kk + c_out * r < c_in * c_out * kk


def factorise(layer: nn.Module, energy: float, rank_ratio: float
              ) -> tuple[nn.Module, nn.Module] | None:
    """The (first, second) factor layers of a conv or linear layer, or None to keep it whole.
    Fake-quant layers give fake-quant factors at the same bits."""
    assert isinstance(layer, nn.Conv2d | nn.Linear)
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return None  # grouped or depthwise: no dense matrix to factorise
    weight: torch.Tensor = layer.weight
    device = weight.device
    w = weight.detach().float()
    c_out = w.shape[0]
    matrix = w.reshape(c_out, -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    r = choose_rank(s, energy, rank_ratio)
    if not worth_it(layer, r):
        return None
    root = s[:r].sqrt()
    a = (root[:, None] * vh[:r])  # r × (C_in·k·k)
    b = u[:, :r] * root[None, :]  # C_out × r
    bias: torch.Tensor | None = layer.bias
    first: nn.Module
    second: nn.Module
    if isinstance(layer, nn.Conv2d):
        first = nn.Conv2d(layer.in_channels, r, layer.kernel_size,  # type: ignore[arg-type]
                          layer.stride, layer.padding, layer.dilation,  # type: ignore[arg-type]
                          bias=False, padding_mode=layer.padding_mode)
        second = nn.Conv2d(r, c_out, 1, bias=bias is not None)
        weights = (a.reshape(r, *w.shape[1:]), b.reshape(c_out, r, 1, 1))
    else:
        first = nn.Linear(w.shape[1], r, bias=False)
        second = nn.Linear(r, c_out, bias=bias is not None)
        weights = (a, b)
    with torch.no_grad():
        first.weight.copy_(weights[0])
        second.weight.copy_(weights[1])
        if bias is not None:
            second.bias.copy_(bias)  # type: ignore[union-attr]
    first.to(device)
    second.to(device)
    if isinstance(layer, QConv2d | QLinear):
        method = getattr(layer, "method", "dorefa")
        first = to_quant(first, layer.weight_bits, layer.act_bits, method)
        second = to_quant(second, layer.weight_bits, layer.act_bits, method)
        q: Any = first
        q.act_scale.copy_(layer.act_scale)  # the same input as the layer it replaces
        q.act_signed.copy_(layer.act_signed)
        if method == "lsq" and layer.act_bits < 32:
            with torch.no_grad():
                q.act_step.copy_(layer.act_step)  # its learned step too
    return first, second


class LowRank:
    info = StageInfo(
        name="lowrank",
        letter="L",
        kind="static",
        granularity="neuron",
        repeatable=True,
        space={
            "lowrank.energy": FloatDistribution(0.5, 0.99),
            "lowrank.rank_ratio": FloatDistribution(0.1, 1.0),
        },
        defaults={"lowrank.energy": 0.9, "lowrank.rank_ratio": 1.0},
        limits={"lowrank.energy": Range(0.0, 1.0, low_open=True),
                "lowrank.rank_ratio": Range(0.0, 1.0, low_open=True)},
        description="truncated-SVD factorisation of conv/linear layers, then fine-tuning",
    )

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        energy, ratio = float(params["energy"]), float(params["rank_ratio"])
        before = ctx.teacher(model)
        first, _ = first_last_layers(model, ctx.input_shape)
        keep = {id(m) for m in classifier_layers(model, ctx.input_shape)}
        new_second: set[nn.Module] = set()
        done = 0
        for name, layer in list(counted_layers(model)):
            if name == first or id(layer) in keep:
                continue
            pair = factorise(layer, energy, ratio)
            if pair is None:
                continue
            replace_module(model, name, nn.Sequential(*pair))
            if isinstance(pair[1], QConv2d | QLinear):
                new_second.add(pair[1])
            done += 1
        if new_second:  # the second factors' inputs are new: set their ranges on real data
            calibrate(model, ctx.example_batch(256), only=new_second)
        ctx.recalibrate_norms(model)
        fit(model, ctx.data, ctx.settings(finetune=True),
            no_decay=no_decay_parameters(model), loss_fn=ctx.recovery_loss(before),
            label=f"{ctx.label}lowrank e{energy:.2f} ({done} layers)", progress=ctx.progress)
        return model
