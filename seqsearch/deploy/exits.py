"""Exits as control flow: a multi-exit model cut into backbone segments at its exit points,
each exit decided by `torch.cond` (ONNX `If`), so the layers after an exit that fires are
never run.

The backbone is traced with torch.fx (exit-point modules and lowered layers kept whole) and
cut at each exit point's output; a cut is valid only when nothing after it reads anything
before it but that output (true after a residual block, a stage, a plain layer).

Batch semantics: every sample gets the prediction of the first exit its confidence passes, as
the fake-quant model computes it; the rest of the network runs while any sample in the batch
is still undecided (at batch 1 that is exactly the per-sample early exit). A batch is not
split into the samples that left and those that go on: that needs data-dependent shapes
(gather/scatter of a varying number of rows) on every exit, and a batch of 64 only skips its
tail when every sample leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn

from seqsearch.deploy.lower import QDQLayer
from seqsearch.models.multi_exit import MultiExit, confidence


class _Tracer(fx.Tracer):
    def __init__(self, keep: set[str]) -> None:
        super().__init__()
        self.keep = keep

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.keep or isinstance(m, QDQLayer) or super().is_leaf_module(
            m, qualname)


def _segment(root: nn.Module, graph: fx.Graph, start: fx.Node | None, nodes: list[fx.Node],
             end: fx.Node) -> fx.GraphModule:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    placeholder = g.placeholder("x")
    if start is not None:
        env[start] = placeholder

    def arg(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n.op == "get_attr":
            env[n] = g.node_copy(n, arg)
            return env[n]
        raise ValueError(f"node {n.name} is read across an exit point")

    for n in nodes:
        if n.op == "placeholder":
            env[n] = placeholder
            continue
        env[n] = g.node_copy(n, arg)
    g.output(env[end])
    return fx.GraphModule(root, g)


class _PreHooked(nn.Module):
    """The first backbone segment behind the backbone's own forward pre-hooks.

    torch.fx traces the root's `forward` and so drops the hooks registered on the root (a
    submodule's hooks run: the segments call their submodules). A model built for 3-channel
    images on 1-channel data carries its grayscale repeat as such a hook
    (`models.registry.repeat_grayscale`): without it the exit path's first conv gets 1 channel."""

    def __init__(self, owner: nn.Module, segment: nn.Module,
                 hooks: list[Callable[..., object]]) -> None:
        super().__init__()
        self.segment = segment
        self.hooks = hooks
        # the hook's first argument is the module it was registered on; held, not registered,
        # so its parameters are not a second time in this module's state
        object.__setattr__(self, "_owner", owner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args: tuple[object, ...] = (x,)
        for hook in self.hooks:
            got = hook(self._owner, args)
            if got is not None:
                args = got if isinstance(got, tuple) else (got,)
        out: torch.Tensor = self.segment(*args)
        return out


def root_pre_hooks(backbone: nn.Module) -> list[Callable[..., object]]:
    """The forward pre-hooks on the backbone itself, in call order; a hook the segments
    cannot replay (one on the output, one taking keyword arguments) is a ValueError, so
    the export falls back to computing every exit on the whole model."""
    if backbone._forward_hooks:
        raise ValueError("the backbone has forward hooks on its output")
    if backbone._forward_pre_hooks_with_kwargs:
        raise ValueError("the backbone has forward pre-hooks that take keyword arguments")
    return list(backbone._forward_pre_hooks.values())


def split_backbone(backbone: nn.Module, points: list[str]) -> list[nn.Module]:
    """len(points) + 1 segments: input -> point 1 -> ... -> point k -> final output (the
    backbone's own forward pre-hooks, lost to tracing, run before the first)."""
    hooks = root_pre_hooks(backbone)
    graph = _Tracer(set(points)).trace(backbone)
    order = [n for n in graph.nodes if n.op != "output"]
    output = next(n for n in graph.nodes if n.op == "output")
    final = output.args[0]
    if not isinstance(final, fx.Node):
        raise ValueError("the backbone returns more than one tensor")
    cuts = []
    for p in points:
        hits = [i for i, n in enumerate(order) if n.op == "call_module" and n.target == p]
        if len(hits) != 1:
            raise ValueError(f"exit point {p} is called {len(hits)} times")
        cuts.append(hits[0])
    if cuts != sorted(cuts):
        raise ValueError("exit points are not in execution order")
    segments = []
    start: fx.Node | None = None
    begin = 0
    for c in cuts:
        segments.append(_segment(backbone, graph, start, order[begin:c + 1], order[c]))
        start, begin = order[c], c + 1
    segments.append(_segment(backbone, graph, start, order[begin:], final))
    out: list[nn.Module] = list(segments)
    if hooks:
        out[0] = _PreHooked(backbone, out[0], hooks)
    return out


class ExitNet(nn.Module):
    """Backbone segments and exit heads; logits of the exit each sample takes."""

    def __init__(self, segments: list[nn.Module], heads: nn.ModuleList, criterion: str,
                 threshold: float) -> None:
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.heads = heads
        self.criterion = criterion
        self.threshold = float(threshold)

    def _from(self, i: int, feat: torch.Tensor) -> torch.Tensor:
        logits = self.heads[i](feat)
        leave = confidence(logits, self.criterion) >= self.threshold
        last = i + 1 == len(self.heads)

        def stop(logits: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
            return logits.clone()

        def go(logits: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
            nxt = self.segments[i + 1](feat)
            rest = nxt if last else self._from(i + 1, nxt)
            return torch.where(leave.unsqueeze(1), logits, rest)

        branch: Callable[..., torch.Tensor] = torch.cond
        return branch(leave.all(), stop, go, (logits, feat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._from(0, self.segments[0](x))


def exit_net(model: MultiExit) -> ExitNet:
    """The multi-exit model (already lowered) with its exits as control flow."""
    segments = split_backbone(model.backbone, model.points)
    return ExitNet(segments, model.heads, model.policy.criterion, model.policy.threshold)
