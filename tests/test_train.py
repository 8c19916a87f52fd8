from __future__ import annotations

import math

import pytest
import torch

from seqsearch.models import create_model
from seqsearch.train import (
    DivergedError,
    TrainSettings,
    collapsed,
    evaluate,
    fit,
    lr_at,
    resolve_device,
)

FAST = TrainSettings(epochs=1, lr=0.05, batch_size=32, seed=0)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("tiny", in_channels=1, num_classes=10)


def test_fit_is_deterministic_on_cpu(digits_small):
    a, b = _tiny(), _tiny()
    fit(a, digits_small, FAST, progress=False)
    fit(b, digits_small, FAST, progress=False)
    for (_, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb)


def test_fit_learns(digits_small):
    model = _tiny()
    before = evaluate(model, digits_small.val)
    fit(model, digits_small, TrainSettings(epochs=10, lr=0.1, batch_size=32), progress=False)
    after = evaluate(model, digits_small.val)
    assert after > max(0.6, before + 0.3)


def test_trainable_set_only_changes_those(digits_small):
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, digits_small, FAST, params=model.fc.parameters(), progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BN statistics of frozen blocks did not drift
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_loss_hook_is_used_and_nan_fails(digits_small):
    seen = []

    def hook(outputs, targets, inputs):
        seen.append(inputs.shape[0])
        return torch.nn.functional.cross_entropy(outputs, targets) * float("nan")

    with pytest.raises(DivergedError):
        fit(_tiny(), digits_small, FAST, loss_fn=hook, progress=False)
    assert seen


def _rising_loss():
    """Cross-entropy plus a term that grows with every batch: the loss rises whatever the model."""
    calls = []

    def hook(outputs, targets, inputs):
        calls.append(1)
        return torch.nn.functional.cross_entropy(outputs, targets) + 0.1 * len(calls)

    return hook


def test_a_fit_that_ends_at_chance_with_a_rising_loss_fails(digits_small):
    # a finite loss that rises while the model predicts one class (a zero layer that
    # cannot learn at lr 0): the NaN guard lets it through, the collapse guard does not
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    model(digits_small.train.x[:2])
    torch.nn.init.zeros_(model[1].weight)
    torch.nn.init.zeros_(model[1].bias)
    settings = TrainSettings(epochs=2, lr=0.0, batch_size=32, seed=0)
    with pytest.raises(DivergedError, match="collapsed: loss rose from .* in epoch 1 to .* in "
                       "epoch 2 .* training accuracy is .*chance 10.0%"):
        fit(model, digits_small, settings, loss_fn=_rising_loss(), progress=False)


def test_a_fit_that_learns_is_not_collapsed_by_a_rising_loss(digits_small):
    result = fit(_tiny(), digits_small, TrainSettings(epochs=3, lr=0.1, batch_size=32),
                 loss_fn=_rising_loss(), progress=False)
    assert result.epoch_losses[-1] > result.epoch_losses[0]
    assert result.train_accuracy > 0.3  # learning, far above the 15 % the rule calls chance


def test_collapse_rule():
    assert collapsed([6.60, 8.06, 8.06], 0.10, 10)
    assert not collapsed([8.06, 6.60], 0.10, 10)  # at chance, but learning
    assert not collapsed([1.0, 1.2], 0.40, 10)  # worse loss, but far above chance
    assert not collapsed([1.0], 0.10, 10)  # one epoch: nothing to compare
    assert not collapsed([1.0, 1.2], float("nan"), 10)  # no class scores


def test_lr_schedules():
    assert lr_at(0, 100, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1, "cosine") == pytest.approx(0.05)
    assert lr_at(74, 100, 0.1, "step") == pytest.approx(0.01)
    assert lr_at(75, 100, 0.1, "step") == pytest.approx(0.001)
    assert lr_at(99, 100, 0.1, "constant") == 0.1


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_evaluate_empty_is_nan():
    from seqsearch.data import Split

    empty = Split(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long))
    assert math.isnan(evaluate(_tiny(), empty))
