"""Pruning keeps whole the groups torch-pruning cannot cut and prunes the rest (P and D's
narrower student alike); only a model with nothing left to cut is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from helpers import TEST_PRECISION
from torch import nn

from seqsearch.chain import ChainRunner, Reference, plan
from seqsearch.config import TrainSection
from seqsearch.data import load_data
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import count_bitops, param_bits
from seqsearch.models import build_model
from seqsearch.stages import StageContext, prune
from seqsearch.stages.distill import Distill
from seqsearch.stages.prune import prune_channels
from seqsearch.train import evaluate

NESTED = f"{Path(__file__).parent / 'zoo' / 'nested_concat.py'}:nested_concat"
KEPT = "'stem.0', 'dense1.conv.0', 'dense2.conv.0': channels reach grouped conv 'trans.0'"


@pytest.fixture(scope="module")
def data():
    return load_data("digits", limit=240, seed=0)


@pytest.fixture()
def ctx(data):
    train = TrainSection(epochs=1, stage_epochs=1, student_epochs=1, batch_size=64, lr=0.05,
                         precision=TEST_PRECISION)
    return StageContext(data, train, 0, (8, 8), progress=False)


@pytest.fixture()
def said(monkeypatch, capsys):
    """The one-line notes, said afresh in this test."""
    monkeypatch.setenv("SEQSEARCH_QUIET", "0")
    monkeypatch.setattr(prune, "_SAID", set())
    return lambda: capsys.readouterr().err.strip().splitlines()


def _nested(data) -> nn.Module:
    torch.manual_seed(0)
    return build_model(NESTED, input_shape=data.input_shape, num_classes=data.num_classes)


def _runs_both_ways(model: nn.Module, data) -> None:
    model.train()
    out = model(data.train.x[:8])
    nn.functional.cross_entropy(out, data.train.y[:8]).backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())


def test_torch_pruning_cuts_a_grouped_conv_as_if_evenly():
    """The torch-pruning 1.6 bug the probe works around (`ConvPruner.prune_in_channels`): a
    grouped conv's cut inputs are taken to sit at the same places in every group. If this
    test fails, torch-pruning has fixed it and `prune._uneven_grouped_cut` can go."""
    conv = nn.Conv2d(4, 2, 1, groups=2, bias=False)  # output g reads inputs 2g and 2g+1
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(2, 2, 1, 1))
    tp.prune_conv_in_channels(conv, [0, 3])  # input 0 of group 0, input 3 of group 1
    # right would be [2, 3] (input 1 -> output 0, input 2 -> output 1): valid shapes, wrong weights
    assert conv.weight.flatten().tolist() == [2.0, 4.0]
    with pytest.raises(RuntimeError):
        tp.prune_conv_in_channels(nn.Conv2d(4, 2, 1, groups=2), [0, 1])  # both in group 0


def test_nested_concat_prunes_around_what_it_keeps(data, ctx, said):
    model = _nested(data)
    before = count_bitops(model, data.input_shape)
    out = prune_channels(model, ctx, 0.4)
    lines = said()
    assert len(lines) == 1 and lines[0].startswith("[prune] kept whole") and KEPT in lines[0]
    assert out.stem[0].out_channels == 16 and out.dense1.conv[0].out_channels == 8
    assert out.trans[0].out_channels < 32 and out.head[0].out_channels < 32
    assert count_bitops(out, data.input_shape) < before
    assert model.trans[0].out_channels == 32  # the model given is left as it was
    _runs_both_ways(out, data)
    prune_channels(model, ctx, 0.4)
    assert said() == []  # said once per process


def test_nested_concat_global_pruning_ranks_without_the_kept_groups(data, ctx, said):
    model = _nested(data)
    out = prune_channels(model, ctx, 0.4, global_pruning=True)
    assert KEPT in said()[0]
    assert count_bitops(out, data.input_shape) < count_bitops(model, data.input_shape)
    _runs_both_ways(out, data)


def test_nested_concat_narrower_student(data, ctx, said):
    model = _nested(data)
    student, _ = Distill().build_student(model, ctx, width=0.5, depth=1.0)
    lines = said()
    assert len(lines) == 1 and lines[0].startswith("[distill] kept whole") and KEPT in lines[0]
    assert student.stem[0].out_channels == 16 and student.head[0].out_channels == 16
    assert count_bitops(student, data.input_shape) < count_bitops(model, data.input_shape)
    _runs_both_ways(student, data)


def test_a_cut_that_breaks_the_forward_pass_is_found_and_kept(data, ctx, said, monkeypatch):
    """A cut that raises nothing yet leaves a model that does not run: the probe runs the
    model after each cut on a fresh copy, names the group and keeps it whole."""
    runs = prune._runs

    def breaks_when_trans_is_cut(model: nn.Module, x: torch.Tensor) -> None:
        if model.trans[0].out_channels < 32:
            raise RuntimeError("shapes no longer fit")
        runs(model, x)

    monkeypatch.setattr(prune, "_runs", breaks_when_trans_is_cut)
    out = prune_channels(_nested(data), ctx, 0.4)
    assert "'trans.0': RuntimeError: shapes no longer fit" in said()[0]
    assert out.trans[0].out_channels == 32 and out.head[0].out_channels < 32


class _OnlyUneven(nn.Module):
    """Every prunable group reaches the grouped classifier conv unevenly: nothing to cut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.grow = nn.Conv2d(4, 2, 3, padding=1)
        self.out = nn.Conv2d(6, 10, 1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.out(torch.cat([x, self.grow(x)], 1)).mean((2, 3))


def test_nothing_to_cut_is_an_error(ctx):
    with pytest.raises(SeqsearchError, match=r"stage 'prune': torch-pruning can cut no layer.*"
                                             r"'stem'.*leave prune out"):
        prune_channels(_OnlyUneven(), ctx, 0.5)
    with pytest.raises(SeqsearchError, match=r"stage 'distill'.*distill.width 1.0"):
        Distill().build_student(_OnlyUneven(), ctx, width=0.5, depth=1.0)


@pytest.mark.parametrize("order", ["DPQE", "EQPD"])
def test_nested_concat_through_chains(data, said, order):
    torch.manual_seed(0)
    model = _nested(data)
    train = TrainSection(epochs=1, stage_epochs=1, student_epochs=1, batch_size=64, lr=0.05,
                         precision=TEST_PRECISION)
    ctx = StageContext(data, train, 0, (8, 8), progress=False)
    ref = Reference(float(count_bitops(model, data.input_shape)), float(param_bits(model)),
                    evaluate(model, data.test), evaluate(model, data.val))
    names = {"D": "distill", "P": "prune", "Q": "quantize", "E": "early_exit"}
    params = {"D": {"width": 0.5}, "P": {"ratio": 0.4}, "Q": {"weight_bits": 4, "act_bits": 4},
              "E": {"exits": 2, "threshold": 0.0}}
    result = ChainRunner(model, data, ctx, ref, None, NESTED).run(
        plan([(names[c], params[c]) for c in order]))
    records = result.records
    bitops = [ref.bitops] + [r["bitops"] for r in records]
    # after E at τ = 0 only the layers up to the first exit count, and those P keeps whole
    assert all(b <= a for a, b in zip(bitops, bitops[1:], strict=False)), bitops
    assert bitops[-1] < bitops[0]
    size = [sum(p.numel() for p in model.parameters())] + [r["num_params"] for r in records]
    for r, a, b in zip(records, size, size[1:], strict=False):
        assert r["letter"] not in "DP" or b < a, (r["order"], a, b)  # they did prune
    lines = said()
    for stage in ("distill", "prune"):
        assert any(f"{stage}] kept whole" in line and "stem.0'" in line for line in lines)
    out = result.model
    out.train()
    outs = out(data.train.x[:8])
    assert all(torch.isfinite(o).all() for o in outs)
    torch.stack([o.sum() for o in outs]).sum().backward()
