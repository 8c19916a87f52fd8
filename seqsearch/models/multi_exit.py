"""A multi-exit model: an unchanged backbone plus exit heads reading named intermediate outputs.

The backbone's definition is untouched: the features an exit head reads are caught with forward
hooks registered for the duration of one forward pass only (so the model deep-copies, pickles
and prunes like any module). `forward` returns a list: one logits tensor per head, in backbone
order, then the backbone's own output. How a sample leaves early (criterion and threshold τ) is
policy data held here too, since it is part of the deployed model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CRITERIA = ("max_softmax", "entropy")


@dataclass
class ExitPolicy:
    """Leave at the first head whose confidence passes τ.

    `max_softmax`: max softmax probability ≥ τ. `entropy`: normalised entropy ≤ 1 − τ (so a
    larger τ is stricter for both). τ > 1 never exits early.
    """

    criterion: str = "max_softmax"
    threshold: float = 0.9


class MultiExit(nn.Module):
    def __init__(self, backbone: nn.Module, points: list[str], heads: list[nn.Module],
                 policy: ExitPolicy | None = None) -> None:
        super().__init__()
        if len(points) != len(heads):
            raise ValueError("one head per exit point")
        self.backbone = backbone
        self.points = list(points)
        self.heads = nn.ModuleList(heads)
        self.policy = policy or ExitPolicy()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        modules = dict(self.backbone.named_modules())
        handles = []
        for name in self.points:
            def grab(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                feats.setdefault(name, out)

            handles.append(modules[name].register_forward_hook(grab))
        try:
            final = self.backbone(x)
        finally:
            for h in handles:
                h.remove()
        return [head(feats[p]) for p, head in zip(self.points, self.heads, strict=True)] + [final]

    def predictions_and_bitops(self, outputs: list[torch.Tensor], input_shape: tuple[int, ...],
                               threshold: float | None = None) -> tuple[torch.Tensor, float]:
        """Each sample's prediction at the exit it takes under the policy (or `threshold`),
        and the expected BitOps per sample of those exits."""
        from seqsearch.metrics import expected_exit_cost

        tau = self.policy.threshold if threshold is None else threshold
        taken, preds = exit_decisions(outputs, tau, self.policy.criterion)
        backbone_to, heads = exit_costs(self, input_shape)
        return preds, expected_exit_cost(taken.cpu(), backbone_to, heads)


class ExitsApplied(nn.Module):
    """A multi-exit model for inference: each sample's logits are those of the exit it takes
    under the model's criterion at τ (`threshold`, default the model's own), so
    `model(x).argmax(1)` is the deployed prediction. Every exit is computed for the batch (the
    ONNX export, with exits as `If`, is what stops a batch-1 sample early);
    `exits_taken(x)` says which exit each sample takes (the last index: the full network)."""

    def __init__(self, model: MultiExit, threshold: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.threshold = model.policy.threshold if threshold is None else float(threshold)

    def _decide(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = self.model(x)
        taken, _ = exit_decisions(outs, self.threshold, self.model.policy.criterion)
        logits = torch.stack(outs)[taken, torch.arange(x.shape[0], device=x.device)]
        return logits, taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._decide(x)[0]

    def exits_taken(self, x: torch.Tensor) -> torch.Tensor:
        return self._decide(x)[1]


def confidence(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-sample confidence in [0, 1] under a criterion (higher = surer)."""
    probs = F.softmax(logits.float(), dim=1)
    if criterion == "max_softmax":
        return probs.max(dim=1).values
    if criterion == "entropy":
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
        return 1.0 - ent / math.log(logits.shape[1])
    raise ValueError(f"unknown exit criterion {criterion!r}; use one of {', '.join(CRITERIA)}")


def exit_decisions(
    outputs: list[torch.Tensor], threshold: float, criterion: str = "max_softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(exit index taken, prediction) per sample; index len(outputs) - 1 is the final output."""
    n = outputs[0].shape[0]
    last = len(outputs) - 1
    taken = torch.full((n,), last, dtype=torch.long, device=outputs[0].device)
    preds = outputs[-1].argmax(dim=1).clone()
    undecided = torch.ones(n, dtype=torch.bool, device=outputs[0].device)
    for i, logits in enumerate(outputs[:-1]):
        leave = undecided & (confidence(logits, criterion) >= threshold)
        taken[leave] = i
        preds[leave] = logits.argmax(dim=1)[leave]
        undecided &= ~leave
    return taken, preds


def exit_costs(model: MultiExit, input_shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """BitOps of the backbone up to each exit point (plus the full backbone) and of each head.

    Measured on one real forward pass: the layer calls completed when each point's module
    finishes are the backbone cost up to that exit.
    """
    from seqsearch.metrics import profile

    marks = [f"backbone.{p}" for p in model.points]
    calls, positions = profile(model, input_shape, marks=marks)
    backbone = [c for c in calls if not c.name.startswith("heads.")]
    to_point = [sum(c.bitops for c in calls[: positions[m]]) for m in marks]
    heads = [sum(c.bitops for c in calls if c.name.startswith(f"heads.{i}."))
             for i in range(len(model.points))]
    return to_point + [sum(c.bitops for c in backbone)], heads
