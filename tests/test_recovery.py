"""Stages that recover: LSQ quantizers, KD recovery, BatchNorm re-estimation, exit training."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from seqsearch.chain import load_model, save_model
from seqsearch.models.multi_exit import MultiExit
from seqsearch.stages import get_stage, resolve_params
from seqsearch.stages.common import recalibrate_norms, task_loss
from seqsearch.stages.quant_layers import (
    QConv2d,
    QLinear,
    lsq_bounds,
    lsq_quantize,
    no_decay_parameters,
    to_quant,
)
from seqsearch.train import TrainSettings, _make_optimizer, kd_recovery


def _ctx(ctx, **train):
    return dataclasses.replace(ctx, train=ctx.train.model_copy(update=train))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_lsq_grid_has_exactly_its_levels_and_learns_its_step(bits, signed):
    torch.manual_seed(bits)
    x = torch.randn(20_000) * 3
    qn, qp = lsq_bounds(bits, signed)
    s = 5.0 / qp  # the grid reaches 5 (clipped above, and below where signed)
    step = torch.tensor(s, requires_grad=True)
    q = lsq_quantize(x, step, bits, signed, per_step=x.numel())
    ints = q.detach() / s
    assert torch.allclose(ints, ints.round(), atol=1e-4)
    assert int(ints.round().min()) == -qn and int(ints.round().max()) == qp
    assert len(torch.unique(ints.round())) == 2**bits
    q.sum().backward()
    assert step.grad is not None and float(step.grad) != 0.0


def test_lsq_layer_levels_hold_under_bf16_autocast():
    torch.manual_seed(0)
    conv = to_quant(nn.Conv2d(3, 4, 3, padding=1), 2, 2, "lsq")
    x = torch.rand(8, 3, 6, 6)
    conv.calibrate(x)
    conv.init_act_step()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xq, wq = conv.quantized(x)
    assert xq.dtype == torch.float32 and wq.dtype == torch.float32
    assert len(torch.unique(xq)) <= 4 and len(torch.unique(wq[0])) <= 4
    ints = (wq / conv.weight_step).detach()
    assert torch.allclose(ints, ints.round(), atol=1e-4)
    assert float(ints.min()) >= -2 and float(ints.max()) <= 1
    # 1-bit weights are BWN: sign(w)·mean|w|, not LSQ's empty signed grid
    one = to_quant(nn.Conv2d(3, 4, 3), 1, 8, "lsq")
    _, w1 = one.quantized(x)
    assert torch.allclose(w1.abs(), one.weight.abs().mean().expand_as(w1))


def test_lsq_steps_train_without_weight_decay():
    model = nn.Sequential(to_quant(nn.Conv2d(1, 4, 3), 4, 4, "lsq"), nn.Flatten(),
                          to_quant(nn.Linear(4 * 4, 3), 4, 4, "dorefa"))
    skip = {id(p) for p in no_decay_parameters(model)}
    assert skip == {id(model[0].weight_step), id(model[0].act_step)}
    opt = _make_optimizer(list(model.parameters()), TrainSettings(weight_decay=5e-4), skip)
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(model[0].weight_step)] == 0.0 and decays[id(model[0].weight)] == 5e-4


def test_requantizing_switches_method_and_reinitialises_steps():
    layer = to_quant(nn.Conv2d(2, 4, 3), 4, 8, "lsq")
    first = layer.weight_step.detach().clone()
    to_quant(layer, 2, 8, "lsq")  # QQ at new bits: steps for the new grid
    assert layer.weight_bits == 2 and not torch.equal(layer.weight_step.detach(), first)
    to_quant(layer, 2, 8, "dorefa")
    assert layer.method == "dorefa" and "weight_step" not in dict(layer.named_parameters())


def test_lsq_quantized_model_prunes_its_steps_and_round_trips(stage_setup, tmp_path):
    """QP with LSQ: torch-pruning cuts the layers' output channels, the per-channel steps are
    cut with them; the model runs, trains and saves."""
    model, data, ctx, _ = stage_setup
    q = get_stage("quantize").apply(copy.deepcopy(model), ctx,
                                    resolve_params(get_stage("quantize").info,
                                                   {"weight_bits": 2, "act_bits": 4,
                                                    "method": "lsq"}))
    layers = [m for m in q.modules() if isinstance(m, QConv2d | QLinear)]
    assert layers and all(m.method == "lsq" for m in layers)
    p = get_stage("prune").apply(q, ctx, resolve_params(get_stage("prune").info,
                                                        {"ratio": 0.5}))
    cut = [m for m in p.modules() if isinstance(m, QConv2d)]
    assert any(m.out_channels < m2.out_channels for m, m2 in zip(
        cut, [m for m in model.modules() if isinstance(m, nn.Conv2d)], strict=False))
    assert all(m.weight_step.shape[0] == m.weight.shape[0] for m in cut)
    p.train()
    task_loss(p(data.train.x[:8]), data.train.y[:8], data.train.x[:8]).backward()
    save_model(tmp_path / "m.pt", p)
    back = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(p.eval()(data.val.x), back(data.val.x))


def test_kd_recovery_adds_kl_to_the_model_before_the_stage():
    torch.manual_seed(0)
    student = nn.Linear(5, 3)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    same = kd_recovery(task_loss, copy.deepcopy(student), 1.0, 1.0)
    assert torch.allclose(same(student(x), y, x), task_loss(student(x), y, x), atol=1e-6)
    other = nn.Linear(5, 3)
    kd = kd_recovery(task_loss, other, 2.0, 0.5)
    extra = kd(student(x), y, x) - task_loss(student(x), y, x)
    p_t = torch.softmax(other(x) / 2, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student(x) / 2, 1))).sum(1).mean() * 4
    assert torch.allclose(extra, 0.5 * kl, atol=1e-5)


def test_bn_recalibration_averages_the_batches_and_zero_is_off(stage_setup):
    model, data, ctx, _ = stage_setup
    m = copy.deepcopy(model)
    norm = next(x for x in m.modules() if isinstance(x, nn.BatchNorm2d))
    norm.running_mean.fill_(5.0)
    kept = {k: v.clone() for k, v in m.state_dict().items()}
    _ctx(ctx, bn_recalibration=0).recalibrate_norms(m)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in kept.items())
    _ctx(ctx, bn_recalibration=2).recalibrate_norms(m)
    assert float(norm.running_mean.abs().max()) < 5.0
    assert int(norm.num_batches_tracked) == 2
    assert norm.momentum == next(x for x in model.modules()
                                 if isinstance(x, nn.BatchNorm2d)).momentum
    weights = [k for k in kept if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(kept[k], m.state_dict()[k]) for k in weights)  # only statistics
    # the same batches give the same statistics (seeded)
    again = copy.deepcopy(model)
    recalibrate_norms(again, data.train, 2, ctx.train.batch_size, ctx.seed)
    assert torch.equal(next(x for x in again.modules()
                            if isinstance(x, nn.BatchNorm2d)).running_mean, norm.running_mean)


@pytest.mark.parametrize("training", ["heads", "joint", "self_distill"])
def test_exit_training_modes(stage_setup, training):
    """`heads` leaves the body as it was; `joint` and `self_distill` fine-tune it too."""
    model, data, ctx, _ = stage_setup
    stage = get_stage("early_exit")
    out = stage.apply(copy.deepcopy(model), _ctx(ctx, recovery="kd", bn_recalibration=2),
                      resolve_params(stage.info, {"exits": 1, "training": training}))
    assert isinstance(out, MultiExit)
    body = dict(out.backbone.named_parameters())
    moved = any(not torch.equal(p, body[n]) for n, p in model.named_parameters())
    assert moved == (training != "heads")
    with torch.no_grad():
        outs = out.eval()(data.val.x)
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("stage", ["prune", "quantize"])
def test_kd_recovery_and_recalibration_run_in_the_stages(stage_setup, stage):
    model, data, ctx, _ = stage_setup
    st = get_stage(stage)
    out = st.apply(copy.deepcopy(model), _ctx(ctx, recovery="kd", bn_recalibration=3),
                   resolve_params(st.info, {}))
    with torch.no_grad():
        assert torch.isfinite(out.eval()(data.val.x)).all()


def test_recipe_params_are_checked_but_not_sampled():
    from seqsearch.errors import SeqsearchError

    q, e = get_stage("quantize").info, get_stage("early_exit").info
    assert "quantize.method" not in q.space and "early_exit.training" not in e.space
    assert resolve_params(q, {"method": "lsq"})["method"] == "lsq"
    assert resolve_params(e, {})["training"] == "heads"
    with pytest.raises(SeqsearchError, match="method = 'lsqq' is not allowed.*'dorefa', 'lsq'"):
        resolve_params(q, {"method": "lsqq"})
    with pytest.raises(SeqsearchError, match="training = 'both'"):
        resolve_params(e, {"training": "both"})
