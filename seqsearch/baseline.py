"""The study's baseline: built, trained once, cached by a hash of what decides it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqsearch import atomic, environment
from seqsearch.config import RunSection
from seqsearch.data import DataBundle, load_data
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import measure
from seqsearch.models import build_model as build_for_data
from seqsearch.progress import note
from seqsearch.train import evaluate, fit, resolve_device, seed_everything


@dataclass
class Baseline:
    model: nn.Module
    data: DataBundle
    metrics: dict[str, Any]
    from_cache: bool


def build_data(study: RunSection, device: torch.device) -> DataBundle:
    d = study.data
    return load_data(
        d.name, root=d.root, download=d.download, limit=d.limit, test_limit=d.test_limit,
        val_fraction=d.val_fraction, test_fraction=d.test_fraction, image_size=d.image_size,
        augment=d.augment, seed=study.seed, device=device,
    )


def build_model(study: RunSection, data: DataBundle) -> nn.Module:
    model = build_for_data(study.model.name, input_shape=data.input_shape,
                           num_classes=data.num_classes, kwargs=study.model.kwargs)
    if study.model.weights is not None:
        load_weights(model, Path(study.model.weights))
    return model


def load_weights(model: nn.Module, path: Path) -> None:
    """Put a saved state dict (or a checkpoint's 'state_dict') into `model`; a missing file
    or mismatched keys or shapes is one line naming the file."""
    if not path.is_file():
        raise SeqsearchError(f"model.weights: {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a torch file, or not a plain state dict
        raise SeqsearchError(f"model.weights: {path}: not a state dict torch can load "
                             f"({type(exc).__name__}); save one with "
                             "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise SeqsearchError(f"model.weights: {path} does not fit the model: {text}") from None


def baseline_path(study: RunSection, out_dir: Path | None = None) -> Path:
    root = out_dir if out_dir is not None else study.output_dir()
    return root / "baseline" / f"{study.baseline_key()}.pt"


def baseline_metrics(study: RunSection, out_dir: Path) -> dict[str, Any]:
    """The baseline's metrics without training or building anything: from its checkpoint,
    kept beside the results as baseline.json, so that a study folder without model files (as
    committed under reports/) still decides its pairs and rebuilds its report."""
    path = baseline_path(study, out_dir)
    saved = out_dir / "baseline.json"
    key = study.baseline_key()
    if path.is_file():
        metrics = dict(torch.load(path, map_location="cpu", weights_only=True)["metrics"])
        atomic.write_json(saved, {"baseline_key": key, "metrics": metrics})
        return metrics
    if saved.is_file():
        kept = json.loads(saved.read_text())
        # a committed folder read on a machine of another kind: the study's baseline is the
        # one trained under the policy its environment.json recorded, not what `auto` means here
        recorded = environment.recorded_policy(out_dir)
        if kept.get("baseline_key") == key or (
                recorded is not None and kept.get("baseline_key") == study.baseline_key(recorded)):
            return dict(kept["metrics"])
    raise SeqsearchError(f"{path}: no baseline yet (and no baseline.json for this study's "
                         "baseline); run 'seqsearch run' (or 'baseline') first")


def get_baseline(
    study: RunSection, *, out_dir: Path | None = None, device: torch.device | None = None
) -> Baseline:
    """Load the cached baseline or train it (and cache it atomically)."""
    dev = device or resolve_device(study.device)
    data = build_data(study, dev)
    seed_everything(study.seed)  # the initial weights are part of what the seed fixes
    model = build_model(study, data)
    cost = measure(model, data.input_shape)  # also checks the model takes this input
    model.to(dev)
    path = baseline_path(study, out_dir)
    if path.is_file():
        saved = torch.load(path, map_location=dev, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        note(f"[baseline] loaded from cache {path}")
        return Baseline(model, data, dict(saved["metrics"]), from_cache=True)
    result = fit(model, data, study.train.settings(study.seed), label="baseline")
    metrics: dict[str, Any] = {
        "val_accuracy": evaluate(model, data.val),
        "test_accuracy": evaluate(model, data.test),
        "macs": cost.macs,
        "params": cost.params,
        "bitops": cost.bitops,
        "param_bits": cost.param_bits,
        "epochs": result.epochs,
        "seconds": round(result.seconds, 2),
        "val_images": len(data.val),
        "test_images": len(data.test),
        "threads": torch.get_num_threads(),  # numerics differ with it: apply pins it
    }
    # On the CPU, keeping the state dict's own mapping: its `_metadata` holds each module's
    # version, which some loaders need (torchvision's MNASNet refuses a state without it).
    state = model.state_dict()
    cpu_state = type(state)((k, v.detach().cpu()) for k, v in state.items())
    cpu_state._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    state = cpu_state
    atomic.torch_save(path, {"state_dict": state, "metrics": metrics})
    environment.record(path.parent.parent, "baseline", dev, study.train)
    return Baseline(model, data, metrics, from_cache=False)


# a baseline whose validation accuracy a one-sided binomial test cannot tell from guessing at
# this level is "near chance"
CHANCE_LEVEL = 0.05


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (in log space; scipy's binomtest gives the
    same, but importing scipy.stats costs a fresh `seqsearch baseline` about a second)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0 or p >= 1.0:
        return float(p >= 1.0)
    if k > n * p + 10 * math.sqrt(n * p * (1 - p)) + 10:
        return 0.0  # far in the tail: below 1e-20
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma(n + 1)
    terms = [lg - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def chance_warning(study: RunSection, metrics: dict[str, Any], classes: int) -> str | None:
    """One line naming the likely cause when the baseline is no better than guessing (its
    validation accuracy not above 1/classes by a binomial test at `CHANCE_LEVEL`), else None."""
    acc = float(metrics["val_accuracy"])
    n = int(metrics.get("val_images") or 0)
    chance = 1.0 / max(1, classes)
    if n > 0:
        k = min(n, round(acc * n))
        if binomial_upper_tail(k, n, chance) <= CHANCE_LEVEL:
            return None
    elif acc >= 1.5 * chance:
        return None
    t, d = study.train, study.data
    causes = []
    if t.epochs < 3:
        causes.append(f"too few epochs (train.epochs {t.epochs})")
    if t.lr > (0.01 if t.optimizer == "adam" else 0.5):
        causes.append(f"a learning rate too high for {t.optimizer} (train.lr {t.lr:g})")
    if d.limit is not None and d.limit < 20 * classes:
        causes.append(f"too few images per class (data.limit {d.limit}, {classes} classes)")
    if not causes:
        causes.append(f"train.lr {t.lr:g} or train.epochs {t.epochs}, or labels that do not "
                      "match the images")
    return (f"baseline {study.model.name} on {d.name}: validation accuracy {100 * acc:.1f} % "
            f"is near chance ({100 * chance:.1f} % for {classes} classes"
            + (f", {n} images" if n else "") + "), so compressing it would measure nothing; "
            f"likely cause: {'; or '.join(causes)}")
