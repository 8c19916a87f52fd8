"""Cost accounting measured on real forward passes: MACs, params, BitOps, CRs, exit costs.

How a quantized layer exposes its bits: any conv/linear module (a subclass of `nn.Conv2d` or
`nn.Linear` included) may carry integer attributes `weight_bits` and `act_bits`; a layer without
them counts as 32/32. `act_bits` is the precision of the layer's *input* activations, which is
what the layer multiplies by its weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seqsearch.errors import SeqsearchError, first_line

FULL_PRECISION = 32


def layer_bits(module: nn.Module) -> tuple[int, int]:
    """(weight bits, activation bits) of a conv/linear layer; 32/32 when it declares none."""
    return (
        int(getattr(module, "weight_bits", FULL_PRECISION)),
        int(getattr(module, "act_bits", FULL_PRECISION)),
    )


@dataclass(frozen=True)
class LayerCost:
    """One call of a conv or linear layer during a forward pass of one sample."""

    name: str
    macs: int
    weight_bits: int
    act_bits: int

    @property
    def bitops(self) -> int:
        return self.macs * self.weight_bits * self.act_bits


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    per_sample = output.numel() // output.shape[0]
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def _is_counted(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d | nn.Linear)


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    return torch.zeros(1, *input_shape, device=device, dtype=dtype)


def _run(model: nn.Module, x: torch.Tensor, input_shape: Sequence[int]) -> object:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    except RuntimeError as exc:
        first = first_line(exc, 1000)
        shape = ",".join(str(s) for s in input_shape)
        raise SeqsearchError(
            f"the model cannot take input shape {shape}: {first}"
        ) from None
    finally:
        model.train(was_training)


def profile(
    model: nn.Module, input_shape: Sequence[int], *, marks: Sequence[str] = ()
) -> tuple[list[LayerCost], dict[str, int]]:
    """Conv/linear calls of one forward pass in execution order, measured from real shapes.

    `marks` names modules whose forward end is located in that order: the returned dict maps
    each mark to the number of layer calls completed when it finished (its first call), which
    is how the cost of the backbone up to an exit point is measured.
    """
    calls: list[LayerCost] = []
    positions: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def on_layer(module: nn.Module, _inp: object, out: torch.Tensor) -> None:
        w, a = layer_bits(module)
        calls.append(LayerCost(names.get(module, "?"), _macs(module, out), w, a))

    def on_mark(name: str):
        def hook(_m: nn.Module, _i: object, _o: object) -> None:
            positions.setdefault(name, len(calls))

        return hook

    modules = dict(model.named_modules())
    for mark in marks:
        if mark not in modules:
            raise SeqsearchError(f"no module named {mark!r} in the model")
        handles.append(modules[mark].register_forward_hook(on_mark(mark)))
    for module in model.modules():
        if _is_counted(module):
            handles.append(module.register_forward_hook(on_layer))
    try:
        _run(model, _example_input(model, input_shape), input_shape)
    finally:
        for h in handles:
            h.remove()
    return calls, positions


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Conv + linear multiply-accumulates of one sample."""
    return sum(c.macs for c in profile(model, input_shape)[0])


def count_bitops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Σ MACs × weight bits × activation bits over the conv/linear calls of one sample."""
    return sum(c.bitops for c in profile(model, input_shape)[0])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_bits(model: nn.Module) -> int:
    """Storage bits: conv/linear weights at their weight bits, everything else at 32."""
    total = 0
    for module in model.modules():
        wbits = layer_bits(module)[0] if _is_counted(module) else FULL_PRECISION
        for pname, p in module.named_parameters(recurse=False):
            total += p.numel() * (wbits if pname == "weight" else FULL_PRECISION)
    return total


def bitops_cr(baseline_bitops: float, bitops: float) -> float:
    """BitOps compression ratio: baseline FP32 BitOps over the compressed model's."""
    return float(baseline_bitops) / float(bitops)


def size_cr(baseline_param_bits: float, compressed_param_bits: float) -> float:
    """Model-size compression ratio: baseline FP32 parameter bits over the compressed model's."""
    return float(baseline_param_bits) / float(compressed_param_bits)


def expected_exit_cost(
    exit_taken: torch.Tensor | Sequence[int],
    backbone_cost_to: Sequence[float],
    head_costs: Sequence[float],
) -> float:
    """Expected cost per sample of a multi-exit model.

    `head_costs[i]` is the cost of exit head i (ordered along the backbone) and
    `backbone_cost_to[i]` the backbone cost up to where head i reads; one more entry,
    `backbone_cost_to[len(head_costs)]`, is the full backbone (the final classifier included).
    `exit_taken[s]` is the index of the exit sample s left at, `len(head_costs)` for the final
    output. A sample pays the backbone up to its exit plus every head evaluated on the way
    (heads 0..k when it leaves at head k; all heads when it reaches the end).
    """
    n_heads = len(head_costs)
    if len(backbone_cost_to) != n_heads + 1:
        raise ValueError("backbone_cost_to needs one entry per head plus the full backbone")
    taken = torch.as_tensor(exit_taken, dtype=torch.long)
    if taken.numel() == 0:
        return float("nan")
    if int(taken.min()) < 0 or int(taken.max()) > n_heads:
        raise ValueError(f"exit indices must lie in 0..{n_heads}")
    head_cum = [0.0]
    for c in head_costs:
        head_cum.append(head_cum[-1] + float(c))
    per_exit = [
        float(backbone_cost_to[k]) + head_cum[min(k + 1, n_heads)] for k in range(n_heads + 1)
    ]
    counts = torch.bincount(taken, minlength=n_heads + 1).tolist()
    return sum(c * cost for c, cost in zip(counts, per_exit, strict=True)) / taken.numel()


@dataclass(frozen=True)
class ModelCost:
    macs: int
    params: int
    bitops: int
    param_bits: int


def measure(model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
    calls, _ = profile(model, input_shape)
    return ModelCost(
        macs=sum(c.macs for c in calls),
        params=count_params(model),
        bitops=sum(c.bitops for c in calls),
        param_bits=param_bits(model),
    )
