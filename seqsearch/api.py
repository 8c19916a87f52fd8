"""The Python API: a study from a dict or file, with a model object (or factory) and your own
data, run through the same pipeline as `seqsearch run`; its results as plain data; an exported
model loaded for inference with its exits applied at τ.

    import seqsearch
    result = seqsearch.run_study({"name": "mine", "train": {"epochs": 5}},
                                 model=my_net, data={"train": (x, y), "test": (xt, yt)})
    result.verdicts, result.export, result.pareto       # lists and dicts
    model = seqsearch.load_model(result.export["model_file"], threshold=0.9)

A model object or factory and in-memory data are registered under names derived from their
content (`Net-<digest>`, `tensors-<digest>`), which the study then names like any built-in
model or dataset: the CLI and the API share one code path (`pipeline.run_all`), and rerunning
the same call resumes from the study folder's caches.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqsearch.config import StudyConfig, parse_study, quickstart_path, read_yaml
from seqsearch.data import GivenSplits, Split, register_splits, stratified_indices
from seqsearch.errors import SeqsearchError

# what `data=` takes: one pool, or named splits, each (images, labels) or a Dataset
DataArg = Any


@dataclass
class StudyResult:
    """A study's results as plain data (lists, dicts, numbers, strings), read from its folder.

    - `verdicts`: one dict per pair: `pair`, `outcome` (`order`, `equivalent`, `undecided`),
      `winner` (e.g. `"QP"` or None), `effect` and `interval` (accuracy points, first order
      minus second), `p_value`, `reason`;
    - `orders`: the proposed orders (every topological order of the decided pairs);
    - `export`: the exported chain (`chain`, `steps`, `feasible`, `metrics`, `from`, `note`,
      `chain_file`, `model_file`, `onnx_file`), or None;
    - `pareto`: the non-dominated measured points (validation accuracy against validation
      BitOpsCR) of the probe and the tuning, most accurate first, each with its test figures;
    - `baseline`: the baseline's metrics.
    """

    folder: str
    baseline: dict[str, Any]
    verdicts: list[dict[str, Any]]
    orders: list[str]
    export: dict[str, Any] | None
    pareto: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- running a study ----------------------------------------------------------------------------


def _raw_study(study: Mapping[str, Any] | str | Path | StudyConfig | None) -> dict[str, Any]:
    if study is None:
        return read_yaml(quickstart_path())
    if isinstance(study, StudyConfig):
        return study.model_dump()
    if isinstance(study, str | Path):
        return read_yaml(Path(study))
    if isinstance(study, Mapping):
        return copy.deepcopy(dict(study))
    raise SeqsearchError(f"study: expected a dict, a YAML file path or None, not "
                         f"{type(study).__name__}")


def _as_split(value: Any, what: str) -> Split:
    """(images, labels) tensors or arrays, a Dataset of (image, label) items or a DataLoader
    of (images, labels) batches, as a Split (held in memory)."""
    if isinstance(value, Split):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        x, y = (torch.as_tensor(v) for v in value)
    elif isinstance(value, torch.utils.data.DataLoader):
        got = [(torch.as_tensor(b[0]), torch.as_tensor(b[1])) for b in value]
        if not got:
            raise SeqsearchError(f"data {what}: the DataLoader yields no batch")
        x, y = torch.cat([b[0] for b in got]), torch.cat([b[1] for b in got])
    elif isinstance(value, torch.utils.data.Dataset):
        items = [value[i] for i in range(len(value))]  # type: ignore[arg-type]
        if not items:
            raise SeqsearchError(f"data {what}: the Dataset is empty")
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise SeqsearchError(f"data {what}: expected (images, labels) or a torch Dataset, not "
                             f"{type(value).__name__}")
    if x.dim() == 3:  # N,H,W: one channel
        x = x.unsqueeze(1)
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise SeqsearchError(f"data {what}: expected images N,C,H,W and labels N, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
    return Split(x.float(), y.long())


def _carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(the rest, a stratified `fraction`) of a split."""
    part, rest = stratified_indices(split.y, [fraction, 1.0], seed)
    return Split(split.x[rest], split.y[rest]), Split(split.x[part], split.y[part])


def given_splits(data: DataArg, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0) -> GivenSplits:
    """A user's data as train/val/test splits. `data` is one pool ((images, labels) or a
    Dataset), split stratified into test, val and train by the study's fractions; or a dict
    with `train` and optionally `val` and `test`, each a pool: a split not given is carved
    from train."""
    if isinstance(data, Mapping):
        unknown = set(data) - {"train", "val", "test"}
        if unknown or "train" not in data:
            raise SeqsearchError("data: a dict needs 'train' and may have 'val' and 'test' "
                                 f"(got {', '.join(map(str, data))})")
        train = _as_split(data["train"], "train")
        test = _as_split(data["test"], "test") if "test" in data else None
        val = _as_split(data["val"], "val") if "val" in data else None
    else:
        train, test, val = _as_split(data, "pool"), None, None
    if test is None:
        train, test = _carve(train, test_fraction, seed)
    if val is None:
        train, val = _carve(train, val_fraction, seed + 2)
    shapes = {tuple(s.x.shape[1:]) for s in (train, val, test)}
    if len(shapes) != 1:
        raise SeqsearchError(f"data: the splits' images differ in shape: {sorted(shapes)}")
    return GivenSplits(train, val, test)


def prepare_study(study: Mapping[str, Any] | str | Path | StudyConfig | None = None, *,
                  model: nn.Module | Callable[..., nn.Module] | None = None,
                  data: DataArg = None, weights: str | Path | None = None) -> StudyConfig:
    """The validated study config that `run_study` runs: `model` and `data`, when given, are
    registered and named in its `model` and `data` sections; `weights` (a state dict file)
    is where the baseline starts (`train.epochs: 0` keeps it as it is)."""
    from seqsearch.models.registry import register_object

    raw = _raw_study(study)
    raw.setdefault("version", 1)
    raw.setdefault("name", "api-study")
    section = dict(raw.get("model") or {})
    if model is not None:
        kwargs = section.get("kwargs", {}) if not isinstance(model, nn.Module) else {}
        section = {"name": register_object(model), "kwargs": kwargs}
    if weights is not None:
        section["weights"] = str(weights)
    if not section:
        raise SeqsearchError("model: give model= (an nn.Module or a factory) or a study with "
                             "a 'model' section")
    raw["model"] = section
    if data is not None:
        d = dict(raw.get("data") or {})
        splits = given_splits(data, val_fraction=float(d.get("val_fraction", 0.1)),
                              test_fraction=float(d.get("test_fraction", 0.2)),
                              seed=int(raw.get("seed", 0)))
        for key in ("root", "download", "limit"):
            d.pop(key, None)
        raw["data"] = {**d, "name": register_splits(splits)}
    return parse_study(raw, "study")


def run_study(study: Mapping[str, Any] | str | Path | StudyConfig | None = None, *,
              model: nn.Module | Callable[..., nn.Module] | None = None, data: DataArg = None,
              weights: str | Path | None = None, out: str | Path | None = None,
              storage: str | None = None) -> StudyResult:
    """Run a whole study (baseline, probe, order, tune, export, report) as `seqsearch run`
    does, and return its results. `study`: a dict of study keys (docs/study-files.md), a
    YAML file, or None for the quickstart; `model`: an nn.Module (copied; its weights are the
    starting point) or a factory; `data`: (images, labels), a Dataset, or a dict of `train`,
    `val`, `test` splits (images used as given, not normalised); `out`: the study folder
    (default: the study's `output`, else runs/NAME). Every check runs before anything
    trains; a mistake is a `SeqsearchError` with one line. Rerunning resumes."""
    from seqsearch.pipeline import run_all

    cfg = prepare_study(study, model=model, data=data, weights=weights)
    folder = Path(out) if out is not None else cfg.output_dir()
    run_all(cfg, folder, storage=storage)
    return read_results(folder)


# --- reading results ---------------------------------------------------------------------------


VERDICT_KEYS = ("pair", "outcome", "winner", "effect", "interval", "p_value", "alpha",
                "units", "reason")


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _export(folder: Path) -> dict[str, Any] | None:
    import yaml

    chain = folder / "chain.yaml"
    confirm = _json(folder / "confirm.json")
    if not chain.is_file() or confirm is None:
        return None
    doc = yaml.safe_load(chain.read_text())
    e = confirm["exported"]
    onnx = folder / "model.onnx"
    return {"chain": e["chain"], "steps": doc.get("stages", []), "feasible": e["feasible"],
            "metrics": doc.get("metrics", {}), "from": e["from"], "id": e["id"],
            "note": e["note"], "chain_file": str(chain), "model_file": str(folder / "model.pt"),
            "onnx_file": str(onnx) if onnx.is_file() else None}


def pareto_points(folder: Path) -> list[dict[str, Any]]:
    """The non-dominated points of the probe (runs.csv) and the tuning (tune/trials.csv) in
    validation accuracy and log validation BitOpsCR, most accurate first."""
    import math

    import pandas as pd

    from seqsearch.search.pareto import pareto_front

    rows: list[dict[str, Any]] = []
    runs = folder / "runs.csv"
    if runs.is_file():
        for _, r in pd.read_csv(runs).iterrows():
            rows.append({"chain": str(r["order"]), "source": f"probe {r['kind']}",
                         "tau": None if pd.isna(r.get("tau")) else float(r["tau"]),
                         **{k: float(r[k]) for k in ("val_accuracy", "test_accuracy",
                                                     "val_bitops_cr", "bitops_cr")}})
    trials = folder / "tune" / "trials.csv"
    if trials.is_file():
        t = pd.read_csv(trials)
        if "val_bitops_cr" in t:
            for _, r in t[(t["state"] == "COMPLETE") & t["val_bitops_cr"].notna()].iterrows():
                rows.append({"chain": str(r["chain"]), "source": f"tune trial {r['number']}",
                             "tau": None if pd.isna(r.get("tau")) else float(r["tau"]),
                             **{k: float(r[k]) for k in ("val_accuracy", "test_accuracy",
                                                         "val_bitops_cr", "bitops_cr")}})
    front = set(pareto_front((r["val_accuracy"], math.log(r["val_bitops_cr"]))
                             for r in rows if r["val_bitops_cr"] > 0))
    out, seen = [], set()
    for r in sorted(rows, key=lambda r: (-r["val_accuracy"], -r["val_bitops_cr"])):
        key = (r["val_accuracy"], math.log(r["val_bitops_cr"])) if r["val_bitops_cr"] > 0 \
            else None
        if key in front and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def read_results(folder: str | Path) -> StudyResult:
    """A study folder's results as plain data (nothing trains): what `run_study` returns,
    also for a folder a CLI run wrote, or a committed one under reports/."""
    path = Path(folder)
    order = _json(path / "order.json")
    if order is None:
        raise SeqsearchError(f"{path / 'order.json'}: no verdicts yet; run the study first")
    base = _json(path / "baseline.json") or {}
    return StudyResult(
        folder=str(path), baseline=dict(base.get("metrics", {})),
        verdicts=[{k: p.get(k) for k in VERDICT_KEYS} for p in order["pairs"]],
        orders=list(order["orders"]), export=_export(path), pareto=pareto_points(path))


# --- loading a result for inference -------------------------------------------------------


def _chain_beside(path: Path) -> Path | None:
    for candidate in (path.with_suffix(".yaml"), path.parent / "chain.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load_model(path: str | Path, *, threshold: float | None = None,
               device: torch.device | str = "cpu") -> nn.Module:
    """A compressed model (model.pt of an export, or what `apply` saved; a study folder means
    its model.pt) ready for inference: in eval mode, returning one logits tensor per sample.
    A model with exits returns, for each sample, the logits of the exit it takes at τ
    (`threshold`; default: the τ the chain chose), so `model(x).argmax(1)` is the deployed
    prediction. A model whose classes come from a user's model file gets that file's spec
    from the chain file beside it (the spec path as the study named it, relative to the
    folder the study ran from)."""
    from seqsearch.chain import load_model as load_file
    from seqsearch.models.multi_exit import ExitsApplied, MultiExit
    from seqsearch.models.registry import resolve_factory

    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    chain = _chain_beside(p)
    if chain is not None:
        from seqsearch.config import load_chain

        spec = load_chain(chain).model.name
        if ".py:" in spec:
            resolve_factory(spec)  # imports the user's file under its stable module name
    model = load_file(p, device)
    if isinstance(model, MultiExit):
        return ExitsApplied(model, threshold).eval()
    if threshold is not None:
        raise SeqsearchError(f"{p}: threshold given, but the model has no exits")
    return model


__all__: Sequence[str] = ["StudyResult", "load_model", "prepare_study", "read_results",
                          "run_study"]
