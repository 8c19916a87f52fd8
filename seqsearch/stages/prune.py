"""P: structured channel pruning with torch-pruning, then fine-tuning.

Classifier and exit-head outputs are protected. A quantized model is pruned on its latent
(float) weights and fine-tuned with QAT (the paper's QP): the fake-quant layers subclass the
torch ones, so torch-pruning treats them as plain convs. A model with exits is pruned as a whole,
heads included (EP): the heads' input channels follow the backbone. A group of coupled
channels torch-pruning cannot build or cut is kept whole and named in one line; only a model
with nothing left to cut is an error.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

from seqsearch.errors import SeqsearchError, first_line
from seqsearch.progress import note
from seqsearch.stages.base import Range, StageContext, StageInfo
from seqsearch.stages.common import classifier_layers, task_loss
from seqsearch.stages.quant_layers import no_decay_parameters, prune_weight_steps
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


def _uneven_grouped_cut(group: Any, dg: Any, names: Mapping[nn.Module, str]) -> str | None:
    """Why torch-pruning would cut this group wrongly, or None.

    torch-pruning 1.6 cuts a grouped (not depthwise) conv as if the cut were the same in every
    group of the conv (`ConvPruner.prune_in_channels` keeps the first 1/groups of the kept
    indices and uses them as positions within a group): when a group's channels reach only
    some of the conv's groups (a concatenation in front of it), the cut runs out of bounds or,
    worse, keeps the wrong weights in valid shapes. A torch-pruning bug, reproduced in
    tests/test_prune_keeps.py.
    """
    for dep, idxs in group:
        conv = dep.target.module
        if not isinstance(conv, nn.modules.conv._ConvNd) or conv.groups == 1 \
                or tp.ops.module2type(conv) != tp.ops.OPTYPE.CONV:
            continue
        if dg.is_in_channel_pruning_fn(dep.handler):
            width = conv.in_channels
        elif dg.is_out_channel_pruning_fn(dep.handler):
            width = conv.out_channels
        else:
            continue
        size = width // conv.groups
        per_group: list[set[int]] = [set() for _ in range(conv.groups)]
        for i in tp._helpers.to_plain_idxs(idxs):
            per_group[i // size].add(i % size)
        if any(g != per_group[0] for g in per_group[1:]):
            return (f"channels reach grouped conv {names.get(conv, type(conv).__name__)!r} "
                    f"(groups={conv.groups}) unevenly, which torch-pruning cannot cut")
    return None


def _cut_weight_steps(group: Any, dg: Any) -> None:
    """LSQ's per-output-channel weight steps are parameters torch-pruning does not know of:
    cut them like the layer's output channels, before the group cuts the layer."""
    for dep, idxs in group:
        layer = dep.target.module
        if getattr(layer, "weight_step", None) is None \
                or not dg.is_out_channel_pruning_fn(dep.handler):
            continue
        width = layer.weight.shape[0]
        gone = set(tp._helpers.to_plain_idxs(idxs))
        prune_weight_steps(layer, [i for i in range(width) if i not in gone])


class _Broken(Exception):
    """The cut model no longer runs, and which group broke it is not known yet."""


@torch.no_grad()
def _runs(model: nn.Module, x: torch.Tensor) -> None:
    """A cut can leave valid-looking layers that no longer fit together: run the model."""
    model(x)


class _Failed(Exception):
    """A group to keep whole, found after the model was (maybe) half cut: start again."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(layer)
        self.layer, self.reason = layer, reason


def _prune_once(model: nn.Module, ctx: StageContext, ratio: float, *, importance: str,
                global_pruning: bool, ignored: list[nn.Module], kept: dict[str, str],
                stage: str, untraceable: str, check_each: bool) -> int:
    """Prune `model` in place, leaving whole the groups that hold an `ignored` layer; returns
    how many groups lost channels. A group torch-pruning cannot build or would cut unevenly is
    added to `kept` and skipped. One whose cut raises raises `_Failed`, as does an uneven one
    under global pruning (the ranking must leave it out): the caller then starts again from a
    fresh copy. The cut model is run once at the end (`_Broken` if it fails), or after each
    group with `check_each`, which names the group that broke it (`_Failed`)."""
    names = {m: n for n, m in model.named_modules()}
    model.eval()
    try:
        pruner = tp.pruner.BasePruner(
            model,
            ctx.example_batch(32),
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
    dg = pruner.DG
    # Build each group as torch-pruning's get_all_groups will (same roots, same order), so one
    # it cannot build is known by its root and left whole instead of ending the whole step.
    visited: set[nn.Module] = set()
    for m in list(dg.module2node):
        if m in pruner.ignored_layers or m in visited \
                or not isinstance(m, tuple(pruner.root_module_types)):
            continue
        handler = dg.get_pruner_of_module(m)
        if handler is None or handler.get_out_channels(m) is None:
            continue
        try:
            group = dg.get_pruning_group(m, handler.prune_out_channels,
                                         list(range(handler.get_out_channels(m))))
        except Exception as exc:  # noqa: BLE001 - a group torch-pruning cannot build
            kept[names[m]] = _first_line(exc)
            pruner.ignored_layers.append(m)
            continue
        visited |= {dep.target.module for dep, _ in group
                    if dg.is_out_channel_pruning_fn(dep.handler)}
    if importance == "taylor":
        model.zero_grad()
        x, y = ctx.data.train.x[:128], ctx.data.train.y[:128]
        task_loss(model(x), y, x).backward()
    check = ctx.example_batch(2)
    cut = 0
    groups = pruner.step(interactive=True)
    assert groups is not None
    for group in groups:
        root = names[group[0].dep.target.module]
        reason = _uneven_grouped_cut(group, dg, names)
        if reason is not None:
            if global_pruning:
                raise _Failed(root, reason)
            kept[root] = reason
            continue
        try:
            _cut_weight_steps(group, dg)
            group.prune()
            if check_each:
                _runs(model, check)
        except Exception as exc:  # noqa: BLE001 - surgery on a layer torch-pruning cannot cut
            raise _Failed(root, _first_line(exc)) from None
        cut += bool(len(group[0].idxs))
    if not check_each:
        try:
            _runs(model, check)
        except Exception:  # noqa: BLE001 - some cut broke it: the caller finds which
            raise _Broken from None
    return cut


def _kept_line(label: str, stage: str, kept: Mapping[str, str]) -> str:
    """One line naming the layers kept whole, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for layer, reason in kept.items():
        by_reason.setdefault(reason, []).append(repr(layer))
    return (f"[{label}{stage}] kept whole, every other layer pruned: "
            + "; ".join(f"{', '.join(layers)}: {reason}" for reason, layers in by_reason.items()))


_SAID: set[tuple[str, tuple[tuple[str, str], ...]]] = set()  # kept-whole lines said


def prune_channels(
    model: nn.Module,
    ctx: StageContext,
    ratio: float,
    *,
    importance: str = "magnitude",
    global_pruning: bool = False,
    exclude: Sequence[str] = (),
    stage: str = "prune",
    untraceable: str = "leave prune out of the study's stages for this model",
) -> nn.Module:
    """A copy of `model` with `ratio` of its channels removed (torch-pruning surgery); no
    fine-tuning. `model` itself is left as it was.

    Coupled channels (residual adds, concatenations, grouped and depthwise convolutions,
    squeeze-excitation) are pruned together, as torch-pruning's dependency graph groups them.
    A group torch-pruning cannot build or cut is kept whole (as if its layer were listed in
    `exclude`), found by pruning copies of the model, and the rest is pruned; one line (once
    per process) names the layers kept and why. A model it cannot trace, or one where every
    group it would cut must be kept whole, is a `SeqsearchError` naming `stage` and
    `untraceable` (what to do instead).
    """
    names = {m: n for n, m in model.named_modules()}
    protected = {names[m] for m in classifier_layers(model, ctx.input_shape)
                 + excluded_layers(model, exclude, stage)}
    kept: dict[str, str] = {}
    check_each = False  # one forward pass per group only once a cut model failed to run
    while True:  # each pass that fails keeps one more layer whole, so this ends
        trial = copy.deepcopy(model)
        modules = dict(trial.named_modules())
        ignored = [modules[n] for n in sorted(protected | kept.keys())]
        try:
            cut = _prune_once(trial, ctx, ratio, importance=importance,
                              global_pruning=global_pruning, ignored=ignored, kept=kept,
                              stage=stage, untraceable=untraceable, check_each=check_each)
        except _Broken:
            check_each = True
            continue
        except _Failed as failed:
            if failed.layer in kept:  # cannot happen: a kept layer's group is never cut
                raise SeqsearchError(f"stage {stage!r}: layer {failed.layer!r} cannot be "
                                     f"pruned ({failed.reason}); {untraceable}") from None
            kept[failed.layer] = failed.reason
            continue
        break
    if kept and not cut:
        layer, reason = next(iter(kept.items()))
        raise SeqsearchError(
            f"stage {stage!r}: torch-pruning can cut no layer of this model ({len(kept)} kept "
            f"whole, e.g. {layer!r}: {reason}); {untraceable}")
    said = (stage, tuple(sorted(kept.items())))
    if kept and said not in _SAID:
        _SAID.add(said)
        order = {n: i for i, n in enumerate(names.values())}
        note(_kept_line(ctx.label, stage, dict(sorted(kept.items(), key=lambda k: order[k[0]]))))
    trial.zero_grad(set_to_none=True)
    trial.train(model.training)
    return trial


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

    @staticmethod
    def check_model(model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> None:
        """torch-pruning can build this model's groups and cut it (on a copy, no training)."""
        prune_channels(model, ctx, float(params["ratio"]), importance="magnitude",
                       global_pruning=bool(params["global_pruning"]),
                       exclude=_names(params["exclude"]))

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        before = ctx.teacher(model)
        model = prune_channels(model, ctx, float(params["ratio"]),
                               importance=params["importance"],
                               global_pruning=bool(params["global_pruning"]),
                               exclude=_names(params["exclude"]))
        ctx.recalibrate_norms(model)
        fit(model, ctx.data, ctx.settings(finetune=True),
            no_decay=no_decay_parameters(model), loss_fn=ctx.recovery_loss(before),
            label=f"{ctx.label}prune {params['ratio']:.2f}", progress=ctx.progress)
        return model
