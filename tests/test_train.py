from __future__ import annotations

import math

import pytest
import torch

from seqsearch.models import create_model
from seqsearch.train import DivergedError, TrainSettings, evaluate, fit, lr_at, resolve_device

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
