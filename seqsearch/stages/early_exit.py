"""E: exit heads at the model's candidate points.

`training`: `heads` (default) trains the heads alone on the frozen backbone, with CE (and KL to
the model before the stage under `train.recovery: kd`); the body is the one before the stage,
so E leaves the final output as it was, the paper's E. `joint` then fine-tunes everything on the
mean CE over every exit and the final output; `self_distill` does the same with each exit also
distilled from the final output (BYOT: CE + α·T²·KL(final ‖ exit), final detached). Both cost a
second fine-tune of `stage_epochs`.

How many heads and where are params; the exit rule (max softmax or entropy) and τ are policy:
they cost no training, so the chain runner leaves them out of the prefix-cache key and a τ
sweep on one trained model gives a whole curve. On a quantized model the heads are quantized
from the start at the body bits (the paper's QE); on a pruned or distilled model they are sized
for the current widths (PE, DE). E after E is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from torch import nn

from seqsearch.data import Split
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import expected_exit_cost
from seqsearch.models.base import exit_points_of
from seqsearch.models.multi_exit import (
    CRITERIA,
    ExitPolicy,
    MultiExit,
    exit_costs,
    exit_decisions,
)
from seqsearch.stages.base import Range, StageContext, StageInfo
from seqsearch.stages.common import (
    body_bits,
    body_method,
    calibrate,
    feature_shapes,
    make_head,
    quantize_module,
    task_loss,
    warm_up_norms,
)
from seqsearch.stages.quant_layers import no_decay_parameters
from seqsearch.train import fit, kd_term, predict

PLACEMENTS = ("early", "even", "late")
TRAINING = ("heads", "joint", "self_distill")
SELF_DISTILL_ALPHA = 0.5
SELF_DISTILL_TEMPERATURE = 1.0


def choose_points(candidates: tuple[str, ...], k: int, placement: str) -> list[str]:
    """k distinct points from the ordered candidates: spread evenly, or packed early/late."""
    n = len(candidates)
    k = max(1, min(k, n))
    if placement == "early":
        idx = list(range(k))
    elif placement == "late":
        idx = list(range(n - k, n))
    else:
        idx = sorted({min(n - 1, int((i + 1) * n / (k + 1))) for i in range(k)})
    return [candidates[i] for i in idx]


def heads_loss(outputs: object, targets: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the exit heads (the final output is frozen, so left out)."""
    assert isinstance(outputs, list)
    losses = [nn.functional.cross_entropy(o.float(), targets) for o in outputs[:-1]]
    return torch.stack(losses).mean()


def self_distill_loss(outputs: object, targets: torch.Tensor, _inputs: torch.Tensor
                      ) -> torch.Tensor:
    """BYOT: every output's CE, each exit also pulled towards the (detached) final output."""
    assert isinstance(outputs, list)
    final = outputs[-1].detach()
    losses = [nn.functional.cross_entropy(o.float(), targets) for o in outputs]
    losses += [SELF_DISTILL_ALPHA * kd_term(o, final, SELF_DISTILL_TEMPERATURE)
               for o in outputs[:-1]]
    return torch.stack(losses).sum() / len(outputs)


class EarlyExit:
    info = StageInfo(
        name="early_exit",
        letter="E",
        kind="dynamic",
        granularity="architecture",
        repeatable=False,
        space={
            "early_exit.exits": IntDistribution(1, 3),
            "early_exit.placement": CategoricalDistribution(PLACEMENTS),
            "early_exit.head": CategoricalDistribution(("linear", "conv")),
            "early_exit.threshold": FloatDistribution(0.5, 1.0),
            "early_exit.criterion": CategoricalDistribution(CRITERIA),
        },
        defaults={"early_exit.exits": 2, "early_exit.placement": "even",
                  "early_exit.head": "linear", "early_exit.threshold": 0.9,
                  "early_exit.criterion": "max_softmax", "early_exit.training": "heads"},
        limits={"early_exit.exits": Range(1, 64), "early_exit.threshold": Range(0.0, 1e9)},
        description="exit heads (on a frozen backbone, or then jointly); leave when confident",
        choices={"early_exit.training": TRAINING},
    )
    policy_params = ("threshold", "criterion")
    sweep_param = "threshold"

    @staticmethod
    def sweep(model: nn.Module, split: Split, input_shape: tuple[int, ...],
              thresholds: Sequence[float]) -> list[tuple[float, float, float]]:
        """(τ, accuracy, expected BitOps) for each τ, from one forward pass over the split."""
        assert isinstance(model, MultiExit)
        outputs = predict(model, split)
        assert isinstance(outputs, list)
        backbone_to, heads = exit_costs(model, input_shape)
        rows = []
        for tau in thresholds:
            taken, preds = exit_decisions(outputs, tau, model.policy.criterion)
            acc = float((preds == split.y).float().mean().item())
            rows.append((float(tau), acc, expected_exit_cost(taken.cpu(), backbone_to, heads)))
        return rows

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        if isinstance(model, MultiExit):
            raise SeqsearchError("stage 'early_exit' cannot follow early_exit (E after E)")
        training = str(params.get("training", "heads"))
        candidates = exit_points_of(model)
        if not candidates:
            raise SeqsearchError("stage 'early_exit': the model has no candidate exit points")
        points = choose_points(candidates, int(params["exits"]), params["placement"])
        shapes = feature_shapes(model, points, ctx.example_batch(2))
        bits = body_bits(model, ctx.input_shape)
        heads = []
        for p in points:
            head = make_head(int(shapes[p][1]), ctx.data.num_classes, params["head"])
            heads.append(quantize_module(head, *bits, body_method(model)) if bits else head)
        multi = MultiExit(model, points, heads).to(ctx.device)
        self.set_policy(multi, params)
        if bits:  # QE: heads quantized from the start, their ranges set on real statistics
            warm_up_norms(multi, multi.heads, ctx.example_batch(256))
            calibrate(multi, ctx.example_batch(256), only=set(multi.heads.modules()),
                      trained=multi.heads)
        else:
            ctx.recalibrate_norms(multi, multi.heads)
        before = ctx.teacher(model)
        fit(multi, ctx.data, ctx.settings(finetune=False),
            no_decay=no_decay_parameters(multi), loss_fn=ctx.recovery_loss(before, heads_loss),
            params=multi.heads.parameters(), label=f"{ctx.label}early_exit x{len(points)}",
            progress=ctx.progress)
        if training != "heads":
            loss = self_distill_loss if training == "self_distill" else task_loss
            fit(multi, ctx.data, ctx.settings(finetune=True),
                no_decay=no_decay_parameters(multi), loss_fn=ctx.recovery_loss(before, loss),
                label=f"{ctx.label}early_exit {training}", progress=ctx.progress)
        return multi

    @staticmethod
    def set_policy(model: nn.Module, params: Mapping[str, Any]) -> None:
        if isinstance(model, MultiExit):
            model.policy = ExitPolicy(params["criterion"], float(params["threshold"]))
