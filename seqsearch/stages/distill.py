"""D: knowledge distillation into a smaller student (Hinton KD by default, CRD as an option).

The student is derived from the current model, so it inherits every compression already
applied: it is a deep copy that is made shallower (trailing shape-preserving blocks of each
residual stage dropped: ResNet-20 -> ResNet-8 at depth 1/3) and/or narrower (uniform channel
shrink by torch-pruning, which works for any traceable model). With `init: scratch` (the
paper's student, the default) it is then re-initialised and trained from scratch against the
teacher; with `init: teacher` it keeps the teacher's weights for every layer depth reduction
and width pruning kept, and distils at the fine-tune learning rate (a student that can learn
in a few epochs). Depth reduction shortens sequences of residual blocks and plain VGG-style
layer sequences alike. So a pruned teacher gives a student with the pruned widths,
a quantized teacher a student with the same bit config trained QAT from scratch, and a teacher
with exits a student with exits at the matching places, each teacher exit supervising its
student exit (the paper's ED).

CRD here is the contrastive objective of Tian et al. on penultimate features with trainable
128-d embeddings and temperature 0.07, using in-batch negatives instead of a 16,384-entry memory
bank (the training loop has no sample indices); it is added to the KD loss.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn

from seqsearch.config import TrainSection
from seqsearch.models.multi_exit import MultiExit
from seqsearch.stages.base import Range, StageContext, StageInfo
from seqsearch.stages.common import (
    backbone_of,
    first_last_layers,
    reinitialise,
)
from seqsearch.stages.prune import prune_channels
from seqsearch.stages.quant_layers import no_decay_parameters
from seqsearch.train import fit, kd_term

METHODS = ("kd", "crd")
INITS = ("scratch", "teacher")  # the paper's fresh student, or the teacher's kept weights


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


@torch.no_grad()
def _child_shapes(model: nn.Module, seq: nn.Sequential, x: torch.Tensor
                  ) -> list[tuple[Any, Any]]:
    """(input shape, output shape) of each child of `seq` in one forward pass of `model`."""
    shapes: dict[int, tuple[Any, Any]] = {}
    handles = []
    for i, child in enumerate(seq):
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor,
                 i: int = i) -> None:
            if isinstance(out, torch.Tensor):
                shapes.setdefault(i, (inp[0].shape, out.shape))

        handles.append(child.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [shapes.get(i, (None, -1)) for i in range(len(seq))]


def _shape_preserving(model: nn.Module, seq: nn.Sequential, x: torch.Tensor) -> list[bool]:
    return [a == b for a, b in _child_shapes(model, seq, x)]


def _conv_units(seq: nn.Sequential) -> list[list[int]]:
    """A plain layer sequence (VGG's conv, BN, ReLU, …, pool) as units: each conv with the
    non-conv, non-pooling layers after it."""
    units: list[list[int]] = []
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.Conv2d):
            units.append([i])
        elif units and not isinstance(layer, nn.MaxPool2d | nn.AvgPool2d
                                      | nn.AdaptiveAvgPool2d) and units[-1][-1] == i - 1:
            units[-1].append(i)
    return units


def _reduce_plain(backbone: nn.Module, name: str, seq: nn.Sequential, depth: float,
                  x: torch.Tensor, remap: dict[str, str]) -> None:
    """Drop trailing shape-preserving conv units of a plain layer sequence, keeping about
    `depth` of its convs (VGG-11's 256-256 stage keeps one conv at depth 0.5)."""
    units = _conv_units(seq)
    if len(units) < 2:
        return
    shapes = _child_shapes(backbone, seq, x)
    preserving = [shapes[u[0]][0] == shapes[u[-1]][1] for u in units]
    keep = max(1, round(depth * len(units)))
    n = len(units)
    while n > keep and preserving[n - 1]:
        n -= 1
    drop = sorted((i for u in units[n:] for i in u), reverse=True)
    if not drop:
        return
    target = f"{name}.{units[n - 1][-1]}"
    for i in drop:
        remap[f"{name}.{i}"] = target
        del seq[i]


def reduce_depth(backbone: nn.Module, depth: float, x: torch.Tensor) -> dict[str, str]:
    """Drop trailing shape-preserving blocks of every sequence of blocks, keeping about
    `depth` of each; returns {removed module name: the kept sibling that replaces it}."""
    remap: dict[str, str] = {}
    if depth >= 1.0:
        return remap
    for name, seq in list(backbone.named_modules()):
        if not isinstance(seq, nn.Sequential) or len(seq) < 2:
            continue
        children = list(seq)
        if not all(_has_conv(c) and any(True for _ in c.children()) for c in children):
            _reduce_plain(backbone, name, seq, depth, x, remap)  # e.g. a VGG block
            continue
        keep = max(1, round(depth * len(children)))
        flags = _shape_preserving(backbone, seq, x)
        n = len(children)
        while n > keep and flags[n - 1]:
            n -= 1
        for i in range(n, len(children)):
            for sub, _ in children[i].named_modules():
                full = f"{name}.{i}" + (f".{sub}" if sub else "")
                remap[full] = f"{name}.{n - 1}"
            del seq[n]
    return remap


class _Penultimate:
    """Catches the input of a model's final classifier layer during forward passes."""

    def __init__(self, layer: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = layer.register_forward_pre_hook(self._grab)

    def _grab(self, _m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.value = torch.flatten(inputs[0], 1)

    def close(self) -> None:
        self.handle.remove()


class _CRDHead(nn.Module):
    def __init__(self, d_student: int, d_teacher: int, dim: int = 128) -> None:
        super().__init__()
        self.s = nn.Linear(d_student, dim)
        self.t = nn.Linear(d_teacher, dim)

    def forward(self, fs: torch.Tensor, ft: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
        zs = F.normalize(self.s(fs), dim=1)
        zt = F.normalize(self.t(ft), dim=1)
        logits = (zs @ zt.t()).float() / tau
        labels = torch.arange(zs.shape[0], device=zs.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


class Distill:
    info = StageInfo(
        name="distill",
        letter="D",
        kind="static",
        granularity="architecture",
        student=True,
        repeatable=True,
        space={
            "distill.width": FloatDistribution(0.25, 1.0),
            "distill.depth": FloatDistribution(0.3, 1.0),
            "distill.temperature": FloatDistribution(1.0, 8.0),
            "distill.alpha": FloatDistribution(0.5, 1.0),
            "distill.method": CategoricalDistribution(METHODS),
            "distill.crd_weight": FloatDistribution(0.1, 2.0),
            "distill.init": CategoricalDistribution(INITS),
        },
        defaults={"distill.width": 0.5, "distill.depth": 1.0, "distill.temperature": 4.0,
                  "distill.alpha": 0.9, "distill.method": "kd", "distill.crd_weight": 0.8,
                  "distill.init": "scratch"},
        limits={"distill.width": Range(0.0, 1.0, low_open=True),
                "distill.depth": Range(0.0, 1.0, low_open=True),
                "distill.temperature": Range(0.0, 100.0, low_open=True),
                "distill.alpha": Range(0.0, 1.0)},
        description="KD (or CRD) into a shallower/narrower student derived from the model",
    )

    @staticmethod
    def epochs(train: TrainSection) -> int:
        """A student trains for `student_epochs` (default: the baseline's epochs)."""
        return train.epochs if train.student_epochs is None else train.student_epochs

    @staticmethod
    def stronger(params: dict[str, Any]) -> dict[str, Any]:
        """As strong as two applications: width and depth squared."""
        return {**params, "width": round(max(0.05, params["width"] ** 2), 6),
                "depth": round(max(0.05, params["depth"] ** 2), 6)}

    @staticmethod
    def check_model(model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> None:
        """A narrower student (width below 1, the default) needs torch-pruning's groups."""
        if float(params["width"]) < 1.0:
            prune_channels(
                model, ctx, 1.0 - float(params["width"]), stage="distill",
                untraceable="use distill.width 1.0 (a shallower student only) for this model")

    def build_student(self, teacher: nn.Module, ctx: StageContext, width: float, depth: float,
                      init: str = "scratch") -> tuple[nn.Module, list[int]]:
        """The student and, for each student exit head, the teacher head that supervises it."""
        student = copy.deepcopy(teacher)
        for p in student.parameters():
            p.requires_grad_(True)  # tracing for the width shrink needs autograd
        x = ctx.example_batch(2)
        remap = reduce_depth(backbone_of(student), depth, x)
        pairs: list[int] = []
        if isinstance(student, MultiExit):
            # Each exit moves to where its block went; two exits landing on one place merge,
            # the deeper teacher exit supervising the merged student exit.
            by_point: dict[str, int] = {}
            for i, point in enumerate(student.points):
                by_point[remap.get(point, point)] = i
            keep = sorted(by_point.values())
            student.points = [remap.get(student.points[i], student.points[i]) for i in keep]
            student.heads = nn.ModuleList([student.heads[i] for i in keep])
            pairs = keep
        if width < 1.0:
            # channels torch-pruning cannot cut stay at the teacher's width (one line says which)
            student = prune_channels(
                student, ctx, 1.0 - width, stage="distill",
                untraceable="use distill.width 1.0 (a shallower student only) for this model")
        if init == "scratch":
            reinitialise(student)  # else the student keeps the teacher's weights it kept
        # A quantized student keeps the teacher's calibrated activation ranges: calibrating the
        # fresh weights would read activations through reset BatchNorm statistics, which shrink
        # layer by layer (to 1 % of the trained range at VGG-11's classifier), and the fixed
        # clip would then stop the student from learning at all.
        return student, pairs

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        teacher = model.eval()
        init = str(params.get("init", "scratch"))
        student, pairs = self.build_student(teacher, ctx, float(params["width"]),
                                            float(params["depth"]), init)
        for p in teacher.parameters():
            p.requires_grad_(False)
        temperature, alpha = float(params["temperature"]), float(params["alpha"])
        crd: _CRDHead | None = None
        taps: list[_Penultimate] = []
        if params["method"] == "crd":
            last_t = dict(teacher.named_modules())[first_last_layers(teacher, ctx.input_shape)[1]]
            last_s = dict(student.named_modules())[first_last_layers(student, ctx.input_shape)[1]]
            taps = [_Penultimate(last_s), _Penultimate(last_t)]
            with torch.no_grad():  # one pass to learn the feature sizes
                student.eval()(ctx.example_batch(2))
                teacher(ctx.example_batch(2))
            assert taps[0].value is not None and taps[1].value is not None
            crd = _CRDHead(taps[0].value.shape[1], taps[1].value.shape[1]).to(ctx.device)

        def loss(outputs: object, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            feat_s = taps[0].value if taps else None
            with torch.no_grad():
                t_out = teacher(inputs)
            s_list = outputs if isinstance(outputs, list) else [outputs]
            t_list = t_out if isinstance(t_out, list) else [t_out]
            # student exit j <- teacher exit pairs[j]; final <- final
            matched = [t_list[i] for i in pairs] + [t_list[-1]]
            terms = [(1 - alpha) * F.cross_entropy(s.float(), targets)
                     + alpha * kd_term(s, t, temperature)
                     for s, t in zip(s_list, matched, strict=True)]
            total = torch.stack(terms).mean()
            if crd is not None and feat_s is not None and taps[1].value is not None:
                total = total + float(params["crd_weight"]) * crd(feat_s, taps[1].value)
            return total

        if init == "teacher":  # a warm student's cut layers: their statistics from data
            ctx.recalibrate_norms(student)
        trainable = list(student.parameters()) + (list(crd.parameters()) if crd else [])
        try:
            settings = ctx.student_settings()
            if init == "teacher":  # a warm student distils at the fine-tune learning rate
                settings = replace(settings, lr=ctx.settings(finetune=True).lr)
            fit(student, ctx.data, settings,
                no_decay=no_decay_parameters(student), loss_fn=loss, params=trainable,
                label=f"{ctx.label}distill w{params['width']:.2f} d{params['depth']:.2f}",
                progress=ctx.progress)
        finally:
            for tap in taps:
                tap.close()
        return student
