"""The contract every registered stage passes (user stages included, if registered)."""

from __future__ import annotations

import copy

import pytest
import torch
from optuna.distributions import BaseDistribution

from seqsearch.chain import accuracy_and_bitops, load_model, save_model
from seqsearch.models.multi_exit import MultiExit
from seqsearch.stages import get_stage, list_stages, resolve_params

STAGES = list_stages()


def test_builtin_stages_registered():
    assert {"distill", "prune", "quantize", "early_exit"} <= set(STAGES)
    assert [get_stage(x).info.name for x in "DPQE"] == [
        "distill", "prune", "quantize", "early_exit"]


@pytest.mark.parametrize("name", STAGES)
def test_info_is_data(name):
    info = get_stage(name).info
    assert len(info.letter) == 1 and info.kind in ("static", "dynamic")
    assert info.granularity in ("architecture", "neuron", "sub-neuron")
    assert info.space and all(k.startswith(f"{name}.") for k in info.space)
    assert all(isinstance(d, BaseDistribution) for d in info.space.values())
    resolved = resolve_params(info, {})
    assert set(resolved) >= {k.split(".", 1)[1] for k in info.space}


@pytest.mark.parametrize("name", STAGES)
def test_apply_contract(name, stage_setup, tmp_path):
    model, data, ctx, _ = stage_setup
    stage = get_stage(name)
    before = accuracy_and_bitops(model, data.val, data.input_shape)[1]
    out = stage.apply(copy.deepcopy(model), ctx, resolve_params(stage.info, {}))
    # forward and backward work on the result
    out.train()
    y = out(data.train.x[:8])
    logits = y if isinstance(y, list) else [y]
    torch.stack([o.sum() for o in logits]).sum().backward()
    assert all(torch.isfinite(o).all() for o in logits)
    out.eval()
    # metrics move the right way: the most aggressive setting costs fewer BitOps
    after = accuracy_and_bitops(out, data.val, data.input_shape,
                                threshold=0.0 if isinstance(out, MultiExit) else None)[1]
    assert after < before
    # save / load round-trips to identical outputs
    save_model(tmp_path / "m.pt", out)
    back = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        a, b = out(data.val.x), back(data.val.x)
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b],
                    strict=True):
        assert torch.equal(u, v)


@pytest.mark.parametrize("params", [
    {"importance": "taylor"}, {"importance": "bn_scale"}, {"global_pruning": True},
])
def test_prune_importances(params, stage_setup):
    model, data, ctx, _ = stage_setup
    stage = get_stage("prune")
    out = stage.apply(copy.deepcopy(model), ctx, resolve_params(stage.info, params))
    assert sum(p.numel() for p in out.parameters()) < sum(p.numel() for p in model.parameters())
    assert out(data.val.x[:4]).shape == (4, 10)


def test_distill_crd_option(stage_setup):
    model, data, ctx, _ = stage_setup
    stage = get_stage("distill")
    out = stage.apply(copy.deepcopy(model), ctx,
                      resolve_params(stage.info, {"method": "crd", "width": 0.5}))
    assert out(data.val.x[:4]).shape == (4, 10)
    assert not any(h for m in out.modules() for h in m._forward_pre_hooks.values())


def test_distill_after_quantize_student_learns(stage_setup):
    """QD: the quantized student keeps the teacher's activation ranges and learns (calibrating
    its fresh weights once clipped every activation to a sliver and left it at chance)."""
    from seqsearch.stages.quant_layers import QConv2d, QLinear
    from seqsearch.train import evaluate

    model, data, ctx, _ = stage_setup
    q = get_stage("quantize").apply(copy.deepcopy(model), ctx,
                                    {"weight_bits": 8, "act_bits": 8})
    student_ctx = copy.copy(ctx)
    student_ctx.train = ctx.train.model_copy(update={"student_epochs": 4})
    stage = get_stage("distill")
    out = stage.apply(copy.deepcopy(q), student_ctx,
                      resolve_params(stage.info, {"width": 1.0, "depth": 1.0}))
    scales = [float(m.act_scale) for m in q.modules() if isinstance(m, QConv2d | QLinear)]
    assert [float(m.act_scale) for m in out.modules()
            if isinstance(m, QConv2d | QLinear)] == scales
    assert evaluate(out, data.val) > 0.3  # chance is 0.1


def test_entropy_criterion_orders_like_max_softmax():
    from seqsearch.models.multi_exit import confidence, exit_decisions

    sure = torch.tensor([[8.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    for crit in ("max_softmax", "entropy"):
        c = confidence(sure, crit)
        assert c[0] > c[1] and float(c.min()) >= 0.0 and float(c.max()) <= 1.0
    final = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    taken, preds = exit_decisions([sure, final], 0.9, "entropy")
    assert taken.tolist() == [0, 1] and preds.tolist() == [0, 1]
