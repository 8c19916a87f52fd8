"""P: structured channel pruning with torch-pruning, then fine-tuning.

Classifier and exit-head outputs are protected. A quantized model is pruned on its latent
(float) weights and fine-tuned with QAT (the paper's QP): the fake-quant layers subclass the
torch ones, so torch-pruning treats them as plain convs. A model with exits is pruned as a whole,
heads included (EP): the heads' input channels follow the backbone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

from seqsearch.errors import SeqsearchError, first_line
from seqsearch.stages.base import Range, StageContext, StageInfo
from seqsearch.stages.common import classifier_layers, task_loss
from seqsearch.train import fit

IMPORTANCES = ("magnitude", "taylor", "bn_scale")


def _importance(kind: str) -> Any:
    if kind == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.TaylorImportance()
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise ValueError(kind)


def _sum_outputs(outs: Any) -> torch.Tensor:
    if isinstance(outs, list | tuple):
        return torch.stack([o.sum() for o in outs]).sum()
    return outs.sum()


def excluded_layers(model: nn.Module, names: Sequence[str], stage: str) -> list[nn.Module]:
    """The conv/linear layers at or under each named module; an unknown name is an error."""
    modules = dict(model.named_modules())
    out: list[nn.Module] = []
    for name in names:
        if name not in modules:
            raise SeqsearchError(f"stage {stage!r}: exclude names {name!r}, which is no module of "
                                 "the model; use names as `seqsearch count` sees them "
                                 "(e.g. 'layer1.0.conv1' or a whole block 'features.3')")
        out += [m for m in modules[name].modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return out


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, 160)}"


def prune_channels(
    model: nn.Module,
    ctx: StageContext,
    ratio: float,
    *,
    importance: str = "magnitude",
    global_pruning: bool = False,
    exclude: Sequence[str] = (),
    stage: str = "prune",
    remedy: str = "list it in prune.exclude",
    untraceable: str = "leave prune out of the study's stages for this model",
) -> nn.Module:
    """Remove `ratio` of the channels (torch-pruning surgery, in place); no fine-tuning.

    Coupled channels (residual adds, concatenations, grouped and depthwise convolutions,
    squeeze-excitation) are pruned together, as torch-pruning's dependency graph groups them.
    A model it cannot trace, or a layer it cannot cut, is a `SeqsearchError` that names
    `stage`, the layer and `remedy` (or `untraceable`).
    """
    example = ctx.example_batch(32)
    ignored = classifier_layers(model, ctx.input_shape) + excluded_layers(model, exclude, stage)
    was_training = model.training
    model.eval()
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            _importance(importance),
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            ignored_layers=ignored,
            output_transform=_sum_outputs,
        )
    except Exception as exc:  # noqa: BLE001 - torch-pruning's tracer fails in many ways
        raise SeqsearchError(
            f"stage {stage!r}: torch-pruning cannot trace this model's channel dependencies "
            f"({_first_line(exc)}); a channel shuffle or a reshape that mixes channels is not "
            f"supported: {untraceable}") from None
    if importance == "taylor":
        model.zero_grad()
        x, y = ctx.data.train.x[:128], ctx.data.train.y[:128]
        task_loss(model(x), y, x).backward()
    names = {m: n for n, m in model.named_modules()}
    groups = pruner.step(interactive=True)
    assert groups is not None
    for group in groups:
        try:
            group.prune()
        except Exception as exc:  # noqa: BLE001 - surgery on a layer torch-pruning cannot cut
            root = group[0].dep.target.module
            raise SeqsearchError(
                f"stage {stage!r}: layer {names.get(root, type(root).__name__)!r} cannot be "
                f"pruned ({_first_line(exc)}); {remedy}") from None
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return model


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SeqsearchError(f"stage 'prune': param exclude = {value!r} must be a list of module "
                             "names, e.g. ['features.3', 'classifier.1']")
    return tuple(value)


class Prune:
    info = StageInfo(
        name="prune",
        letter="P",
        kind="static",
        granularity="neuron",
        repeatable=True,
        space={
            "prune.ratio": FloatDistribution(0.1, 0.8),
            "prune.importance": CategoricalDistribution(IMPORTANCES),
            "prune.global_pruning": CategoricalDistribution((False, True)),
        },
        defaults={"prune.ratio": 0.5, "prune.importance": "magnitude",
                  "prune.global_pruning": False, "prune.exclude": []},
        limits={"prune.ratio": Range(0.0, 1.0, low_open=True, high_open=True)},
        description="torch-pruning structured channel pruning + fine-tune",
    )

    @staticmethod
    def stronger(params: dict[str, Any]) -> dict[str, Any]:
        """As strong as two applications: keep (1 - ratio)^2 of the channels."""
        return {**params, "ratio": round(1 - (1 - params["ratio"]) ** 2, 6)}

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        prune_channels(model, ctx, float(params["ratio"]), importance=params["importance"],
                       global_pruning=bool(params["global_pruning"]),
                       exclude=_names(params["exclude"]))
        fit(model, ctx.data, ctx.settings(finetune=True), loss_fn=task_loss,
            label=f"{ctx.label}prune {params['ratio']:.2f}", progress=ctx.progress)
        return model
