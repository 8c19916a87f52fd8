"""Helpers the stages share: the task loss, layer lookup, re-initialisation, calibration, heads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from seqsearch.data import Split, batches
from seqsearch.metrics import profile
from seqsearch.models.multi_exit import MultiExit
from seqsearch.stages.quant_layers import QConv2d, QLinear, to_quant


def task_loss(outputs: object, targets: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; for a multi-exit model the mean over every exit and the final output.
    In fp32 whatever the autocast (CPU autocast already runs it so; CUDA's may not)."""
    if isinstance(outputs, list | tuple):
        return torch.stack([F.cross_entropy(o.float(), targets) for o in outputs]).mean()
    assert isinstance(outputs, torch.Tensor)
    return F.cross_entropy(outputs.float(), targets)


def backbone_of(model: nn.Module) -> nn.Module:
    return model.backbone if isinstance(model, MultiExit) else model


def counted_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            yield name, m


def first_last_layers(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, str]:
    """Names (in `model`) of the backbone's first and last conv/linear layers in execution."""
    calls, _ = profile(model, input_shape)
    backbone = [c.name for c in calls if not c.name.startswith("heads.")]
    return backbone[0], backbone[-1]


def classifier_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[nn.Module]:
    """Layers whose outputs are class logits: the final classifier and each head's last layer."""
    modules = dict(model.named_modules())
    out = [modules[first_last_layers(model, input_shape)[1]]]
    if isinstance(model, MultiExit):
        for head in model.heads:
            layers = [m for _, m in counted_layers(head)]
            out.append(layers[-1])
    return out


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def body_bits(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (weight, activation) bits most quantized layers use, first/last excluded."""
    first, last = first_last_layers(model, input_shape)
    bits = Counter(
        (m.weight_bits, m.act_bits)
        for n, m in model.named_modules()
        if isinstance(m, QConv2d | QLinear) and n not in (first, last)
    )
    return bits.most_common(1)[0][0] if bits else None


def quantize_module(module: nn.Module, weight_bits: int, act_bits: int,
                    method: str = "dorefa") -> nn.Module:
    """Every conv/linear inside `module` replaced by its fake-quant version (in place)."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        return to_quant(module, weight_bits, act_bits, method)
    for name, layer in list(counted_layers(module)):
        replace_module(module, name, to_quant(layer, weight_bits, act_bits, method))
    return module


def body_method(model: nn.Module) -> str:
    """The quantization method most quantized layers use (DoReFa where none is quantized)."""
    methods = Counter(getattr(m, "method", "dorefa") for m in model.modules()
                      if isinstance(m, QConv2d | QLinear))
    return methods.most_common(1)[0][0] if methods else "dorefa"


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor, only: set[nn.Module] | None = None, *,
              trained: nn.Module | None = None) -> None:
    """Set each quantized layer's activation range from its float inputs on one batch.

    `trained` is the part of `model` the fit that follows trains (default: all of it). Its
    BatchNorms normalise with this batch's statistics during the pass, as they will in that
    fit; the rest runs in eval mode, as frozen modules do there. Ranges read through running
    statistics fit only when those statistics match the weights, and they need not: MNASNet's
    BatchNorm momentum is 3e-4, so after a short baseline its running statistics are still
    near their initial values and eval-mode inputs grow from 2 at its first layer to 2e22 at
    its last, against 5 in training. Ranges that wide rounded every training activation to
    one level (0, or s/255 when signed), the BatchNorms after saw zero batch variance, and
    their backward (gain 1/sqrt(eps) each) overflowed into NaN. Running statistics are kept.
    """
    layers = [m for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    if only is not None:
        layers = [m for m in layers if m in only]
    if not layers:
        return
    saved = {m: m.act_bits for m in layers}
    norms = [m for m in (model if trained is None else trained).modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    stats = {m: {k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms}
    seen: set[nn.Module] = set()

    def grab(m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if m not in seen:
            seen.add(m)
            m.calibrate(inputs[0])  # type: ignore[operator]

    handles = [m.register_forward_pre_hook(grab) for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.act_bits = 32  # calibrate on float activations
        model.eval()
        for norm in norms:
            norm.train()
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, b in saved.items():
            m.act_bits = b
            if m in seen:
                m.init_act_step()  # LSQ: the step starts from the calibrated range
        for norm, buffers in stats.items():
            for k, v in buffers.items():
                getattr(norm, k).copy_(v)
        model.train(was_training)


@contextmanager
def _averaging_norms(model: nn.Module, part: nn.Module) -> Iterator[bool]:
    """While open: the BatchNorms in `part` start from empty statistics and average every batch
    that passes (momentum None), the rest of `model` runs in eval mode; yields whether `part`
    has any BatchNorm. The momenta and `model`'s mode are restored on leaving."""
    norms = [m for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momentum = {m: m.momentum for m in norms}
    was_training = model.training
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches that follow
            norm.train()
        yield bool(norms)
    finally:
        for norm, momentum in saved_momentum.items():
            norm.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def warm_up_norms(model: nn.Module, part: nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """Estimate the BatchNorm statistics inside `part` (new layers of `model`) from data.

    New layers hold initial statistics (mean 0, variance 1); a quantizer calibrated through
    them gets a range that does not fit the trained layer (QE's heads: 1.5-2x too narrow, and
    with 1-bit weights no sample ever left early). The rest of `model` stays in eval mode;
    activations are not quantized during the pass, since their ranges are what comes next.
    """
    quant = [m for m in part.modules() if isinstance(m, QConv2d | QLinear)]
    saved_bits = {m: m.act_bits for m in quant}
    try:
        with _averaging_norms(model, part) as any_norm:
            if not any_norm:
                return
            for layer in quant:
                layer.act_bits = 32
            for chunk in x.split(batch):
                model(chunk)
    finally:
        for layer, bits in saved_bits.items():
            layer.act_bits = bits


@torch.no_grad()
def recalibrate_norms(model: nn.Module, split: Split, n_batches: int, batch_size: int,
                      seed: int, *, part: nn.Module | None = None) -> None:
    """BatchNorm re-estimation (EagleEye; NNCF's BatchnormAdaptation): the statistics of the
    BatchNorms in `part` (default: all of `model`) recomputed as a plain average over
    `n_batches` shuffled training batches, with the model as it now is (pruned, quantized:
    quantizers on), no gradient; the rest runs in eval mode and nothing else changes."""
    if len(split) == 0:
        return
    gen = torch.Generator().manual_seed(seed)
    with _averaging_norms(model, model if part is None else part) as any_norm:
        if not any_norm:
            return
        for k, (x, _) in enumerate(batches(split, batch_size, shuffle=True, gen=gen)):
            if k >= n_batches:
                break
            model(x)


def reinitialise(model: nn.Module) -> None:
    """Fresh weights everywhere (a student trained from scratch keeps only the structure)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and any(True for _ in m.parameters(recurse=False)):
            reset()


def feature_shapes(model: nn.Module, points: list[str], x: torch.Tensor) -> dict[str, torch.Size]:
    modules = dict(model.named_modules())
    shapes: dict[str, torch.Size] = {}
    handles = []
    for p in points:
        def grab(_m: nn.Module, _i: object, out: torch.Tensor, p: str = p) -> None:
            shapes.setdefault(p, out.shape)

        handles.append(modules[p].register_forward_hook(grab))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return shapes


def make_head(channels: int, num_classes: int, kind: str) -> nn.Module:
    """An exit head. `linear`: global pool, BN, Linear. `conv`: 3x3 conv-BN-ReLU first.

    The BatchNorm on the pooled features puts them on the scale the classifier's fresh weights
    expect, so heads trained for a few epochs on a frozen backbone converge.
    """
    pooled: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(channels),
                               nn.Linear(channels, num_classes)]
    if kind == "linear":
        return nn.Sequential(*pooled)
    if kind == "conv":
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(), *pooled,
        )
    raise ValueError(f"unknown head kind {kind!r}")
