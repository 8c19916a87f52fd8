"""Apply a list of (stage, params) to a baseline, with a prefix cache and per-stage metrics.

The prefix cache: the model after stages 1..k is saved (atomically) under a hash of the
baseline, those k stages with their training params, and the training settings and seed (and,
for k ≥ 2, the stage-seed derivation's version), so a second chain that shares a prefix trains
only its new stages. Policy params that cost no
training (E's τ and criterion) are left out of the key and set after loading.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqsearch import atomic
from seqsearch.data import DataBundle, Split
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import bitops_cr, count_bitops, param_bits, size_cr
from seqsearch.stages import StageContext, behaviour, get_stage, resolve_params
from seqsearch.train import predict, seed_everything, torch_threads

MODEL_FORMAT = 1
# Stage j of a run with seed s trains with seed s + j * STAGE_SEED_STRIDE: distinct for every
# run seed below the stride (probe seeds, the study seed, the fresh confirmation seeds), where
# s + j let probe seed 0's second stage share seed 1's first stage's RNG.
STAGE_SEED_STRIDE = 1_000_003
STAGE_SEEDS = 2  # the derivation's version, in the prefix key of chains of two or more stages


def stage_seed(run_seed: int, index: int) -> int:
    """The RNG seed stage `index` (0-based) of a run with `run_seed` trains with. The first
    stage keeps the run seed, so one-stage prefix-cache entries stay valid."""
    return run_seed + index * STAGE_SEED_STRIDE


@dataclass(frozen=True)
class Step:
    stage: str
    params: Mapping[str, Any]

    @property
    def letter(self) -> str:
        return get_stage(self.stage).info.letter

    def training_params(self) -> dict[str, Any]:
        policy = behaviour.policy_params(self.stage)
        return {k: v for k, v in sorted(self.params.items()) if k not in policy}


def plan(steps: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[Step]:
    """Check a whole chain before anything trains: stage names, params, forbidden repeats."""
    out: list[Step] = []
    seen: set[str] = set()
    for name, params in steps:
        stage = get_stage(name)
        info = stage.info
        if info.name in seen and not info.repeatable:
            raise SeqsearchError(
                f"stage {info.name!r} ({info.letter}) cannot be applied twice "
                f"({info.letter} after {info.letter})"
            )
        seen.add(info.name)
        out.append(Step(info.name, resolve_params(info, params)))
    return out


def letters(steps: Sequence[Step]) -> str:
    return "".join(s.letter for s in steps)


# --- metrics of a (possibly multi-exit) model -------------------------------------------------


def accuracy_and_bitops(model: nn.Module, split: Split, input_shape: tuple[int, ...],
                        *, threshold: float | None = None) -> tuple[float, float]:
    """Top-1 accuracy and BitOps per sample. A model whose samples take different paths (one
    with exits) says itself which prediction each sample gets and what that costs
    (`predictions_and_bitops`: expected BitOps under its policy, or under `threshold`)."""
    outputs = predict(model, split)
    own = getattr(model, "predictions_and_bitops", None)
    if own is not None:
        preds, bitops = own(outputs, input_shape, threshold)
    else:
        assert isinstance(outputs, torch.Tensor)
        preds = outputs.argmax(1)
        bitops = float(count_bitops(model, input_shape))
    return float((preds == split.y).float().mean().item()), bitops


def operating_points(model: nn.Module, steps: Sequence[Step], data: DataBundle,
                     final: Mapping[str, Any], values: Sequence[float]) -> list[dict[str, Any]]:
    """The evaluated points of a chain's final model on validation and test. When a stage of
    the chain sweeps a policy param (E's τ), one point per value from one forward pass per
    split, `tau` holding the value; otherwise the one point in `final` (the last record)."""
    i = behaviour.sweeping_step([s.stage for s in steps])
    if i is None:
        return [{"tau": None, "val_accuracy": final["val_accuracy"],
                 "test_accuracy": final["test_accuracy"], "val_bitops": final["val_bitops"],
                 "bitops": final["bitops"]}]
    stage = steps[i].stage
    val = behaviour.sweep(stage, model, data.val, data.input_shape, values)
    test = behaviour.sweep(stage, model, data.test, data.input_shape, values)
    return [{"tau": v, "val_accuracy": va, "test_accuracy": ta, "val_bitops": vb, "bitops": tb}
            for (v, va, vb), (_, ta, tb) in zip(val, test, strict=True)]


def with_policy_value(steps: Sequence[Step], value: float) -> list[list[Any]]:
    """The chain as [stage, params] with the swept policy param set to the chosen value (the
    exported chain carries it)."""
    i = behaviour.sweeping_step([s.stage for s in steps])
    out: list[list[Any]] = [[s.stage, dict(s.params)] for s in steps]
    if i is not None:
        name = behaviour.sweep_param(steps[i].stage)
        assert name is not None
        out[i][1][name] = value
    return out


@dataclass(frozen=True)
class Reference:
    """What compression ratios are measured against: the FP32 baseline."""

    bitops: float
    param_bits: float
    test_accuracy: float
    val_accuracy: float


def model_metrics(model: nn.Module, data: DataBundle, ref: Reference) -> dict[str, float]:
    val_acc, val_bitops = accuracy_and_bitops(model, data.val, data.input_shape)
    test_acc, test_bitops = accuracy_and_bitops(model, data.test, data.input_shape)
    bits = param_bits(model)
    return {
        "accuracy": test_acc,
        "test_accuracy": test_acc,
        "val_accuracy": val_acc,
        "bitops": test_bitops,
        "val_bitops": val_bitops,
        "bitops_cr": bitops_cr(ref.bitops, test_bitops),
        "cr": size_cr(ref.param_bits, bits),
        "num_params": float(sum(p.numel() for p in model.parameters())),
        "param_bits": float(bits),
    }


# --- save / load ------------------------------------------------------------------------------


def save_model(path: Path, model: nn.Module, meta: Mapping[str, Any] | None = None) -> None:
    """The whole module (pruned shapes, fake-quant layers, exits) in one file, atomically."""
    cpu = copy.deepcopy(model).cpu()
    atomic.torch_save(path, {"format": MODEL_FORMAT, "model": cpu, "meta": dict(meta or {})})


def load_model(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    if not Path(path).is_file():
        raise SeqsearchError(f"{path}: no such model file")
    try:
        blob = torch.load(path, map_location=device, weights_only=False)
    except ModuleNotFoundError as exc:
        if str(exc.name).startswith("seqsearch_user_"):
            raise SeqsearchError(
                f"{path}: the model's classes come from a user model file; resolve its spec "
                "first (seqsearch.models.resolve_factory('path/to/file.py:factory'))") from None
        raise SeqsearchError(f"{path}: needs module {exc.name!r}, which is not installed"
                             ) from None
    except Exception as exc:  # noqa: BLE001 - a truncated, foreign or non-torch file
        raise SeqsearchError(f"{path}: not a readable seqsearch model file "
                             f"({type(exc).__name__}); re-export it or point at another file"
                             ) from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise SeqsearchError(f"{path}: not a seqsearch model file (format {MODEL_FORMAT})")
    model = blob["model"]
    assert isinstance(model, nn.Module)
    return model.eval()


# --- the runner --------------------------------------------------------------------------------


@dataclass
class ChainResult:
    model: nn.Module
    records: list[dict[str, Any]]
    trained: int = 0
    cached: int = 0


@dataclass
class ChainRunner:
    """Runs chains from one baseline, sharing a prefix cache folder."""

    baseline: nn.Module
    data: DataBundle
    ctx: StageContext
    reference: Reference
    cache_dir: Path | None
    base_key: str
    trained: int = 0
    cached: int = 0
    # torch threads each stage of a chain trains with (apply: as the exported chain's models
    # were trained); None: this process's own
    stage_threads: Sequence[int] | None = None
    _settings_key: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._settings_key = json.dumps(
            {"train": self.ctx.train.model_dump(), "bits": list(self.ctx.first_last_bits),
             "seed": self.ctx.seed}, sort_keys=True, default=str)

    def prefix_key(self, steps: Sequence[Step]) -> str:
        body: dict[str, Any] = {"base": self.base_key, "settings": self._settings_key,
                                "steps": [[s.stage, s.training_params()] for s in steps]}
        if len(steps) > 1:  # trained with `stage_seed`'s seeds: not the entries of s + j
            body["stage_seeds"] = STAGE_SEEDS
        payload = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def _paths(self, steps: Sequence[Step]) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        key = self.prefix_key(steps)
        return self.cache_dir / f"{key}.pt", self.cache_dir / f"{key}.json"

    def _apply_policies(self, model: nn.Module, steps: Sequence[Step]) -> None:
        for s in steps:
            behaviour.set_policy(s.stage, model, s.params)

    def run(self, steps: Sequence[Step]) -> ChainResult:
        records: list[dict[str, Any]] = []
        model: nn.Module | None = None
        start = 0
        for k in range(len(steps), 0, -1):
            paths = self._paths(steps[:k])
            if paths and paths[0].is_file() and paths[1].is_file():
                model = load_model(paths[0], self.ctx.device)
                start = k
                break
        for k in range(1, start + 1):
            paths = self._paths(steps[:k])
            assert paths is not None
            stored = json.loads(paths[1].read_text())
            rec = stored["record"]
            wanted = json.loads(json.dumps([dict(s.params) for s in steps[:k]]))
            if stored.get("steps") != wanted:
                # Same training, other policy (E's τ here or earlier): re-measure, no training.
                prefix_model = load_model(paths[0], self.ctx.device)
                self._apply_policies(prefix_model, steps[:k])
                rec = self._record(prefix_model, steps, k - 1, 0.0)
            records.append({**rec, "from_cache": True})
        if model is None:
            model = copy.deepcopy(self.baseline)
        self.cached += start
        result = ChainResult(model, records, cached=start)
        for j in range(start, len(steps)):
            step = steps[j]
            stage = get_stage(step.stage)
            ctx = copy.copy(self.ctx)
            ctx.seed = stage_seed(self.ctx.seed, j)
            ctx.label = f"{letters(steps[: j + 1])}: "
            t0 = time.perf_counter()
            pinned = self.stage_threads[j] if self.stage_threads is not None else None
            with torch_threads(pinned):
                threads = torch.get_num_threads()
                seed_everything(ctx.seed)  # stages draw fresh weights (students, heads) first
                model = stage.apply(model, ctx, step.params)
            self._apply_policies(model, steps[: j + 1])
            seconds = time.perf_counter() - t0
            self.trained += 1
            result.trained += 1
            rec = {**self._record(model, steps, j, seconds), "threads": threads}
            records.append(rec)
            paths = self._paths(steps[: j + 1])
            if paths:
                save_model(paths[0], model, {"steps": [[s.stage, dict(s.params)]
                                                       for s in steps[: j + 1]]})
                atomic.write_json(paths[1], {"record": rec, "steps": [dict(s.params)
                                                                     for s in steps[: j + 1]]})
        self._apply_policies(model, steps)
        result.model = model
        return result

    def lineage_threads(self, steps: Sequence[Step]) -> list[int | None]:
        """The torch threads each stage of `steps` trained with, from the prefix cache's
        records (None where a record predates them or the cache lacks the prefix)."""
        out: list[int | None] = []
        for k in range(1, len(steps) + 1):
            paths = self._paths(steps[:k])
            kept = None
            if paths and paths[1].is_file():
                kept = json.loads(paths[1].read_text())["record"].get("threads")
            out.append(int(kept) if kept is not None else None)
        return out

    def _record(self, model: nn.Module, steps: Sequence[Step], j: int,
                seconds: float) -> dict[str, Any]:
        step = steps[j]
        return {
            "stage": step.stage,
            "letter": step.letter,
            "order": letters(steps[: j + 1]),
            "params": dict(step.params),
            **model_metrics(model, self.data, self.reference),
            "seconds": round(seconds, 3),
            "from_cache": False,
        }


def runner_for(cfg: Any, base: Any, cache_dir: Path | None, *, progress: bool = True,
               seed: int | None = None) -> ChainRunner:
    """A runner for a study or chain config (`RunSection`) and its trained `Baseline`; stage
    training seeds start at `seed` (default: the config's seed)."""
    ctx = StageContext(base.data, cfg.train, cfg.seed if seed is None else seed,
                       tuple(cfg.first_last_bits), progress)
    m = base.metrics
    ref = Reference(float(m["bitops"]), float(m["param_bits"]), float(m["test_accuracy"]),
                    float(m["val_accuracy"]))
    return ChainRunner(base.model, base.data, ctx, ref, cache_dir, cfg.baseline_key())
