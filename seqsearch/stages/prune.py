"""P: structured channel pruning with torch-pruning, then fine-tuning.

Classifier and exit-head outputs are protected. A quantized model is pruned on its latent
(float) weights and fine-tuned with QAT (the paper's QP): the fake-quant layers subclass the
torch ones, so torch-pruning treats them as plain convs. A model with exits is pruned as a whole,
heads included (EP): the heads' input channels follow the backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

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


def prune_channels(
    model: nn.Module,
    ctx: StageContext,
    ratio: float,
    *,
    importance: str = "magnitude",
    global_pruning: bool = False,
) -> nn.Module:
    """Remove `ratio` of the channels (torch-pruning surgery, in place); no fine-tuning."""
    example = ctx.example_batch(32)
    ignored = classifier_layers(model, ctx.input_shape)
    was_training = model.training
    model.eval()
    pruner = tp.pruner.BasePruner(
        model,
        example,
        _importance(importance),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=ignored,
        output_transform=_sum_outputs,
    )
    if importance == "taylor":
        model.zero_grad()
        x, y = ctx.data.train.x[:128], ctx.data.train.y[:128]
        task_loss(model(x), y, x).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return model


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
                  "prune.global_pruning": False},
        limits={"prune.ratio": Range(0.0, 1.0, low_open=True, high_open=True)},
        description="torch-pruning structured channel pruning + fine-tune",
    )

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        prune_channels(model, ctx, float(params["ratio"]), importance=params["importance"],
                       global_pruning=bool(params["global_pruning"]))
        fit(model, ctx.data, ctx.settings(finetune=True), loss_fn=task_loss,
            label=f"{ctx.label}prune {params['ratio']:.2f}", progress=ctx.progress)
        return model
