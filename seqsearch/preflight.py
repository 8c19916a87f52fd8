"""Every check a study can pass or fail before anything trains.

`--dry-run` and the start of every training command (baseline, probe, tune, export, run, and
the Python API) run these, so a typo or a model the stages cannot handle is one line and exit 2
in seconds, not a failure after the baseline trained:

- `probe.fixed` and `tune.fixed`: names and values, by the stages' own validation;
- `space`: each key a searched param of an enabled stage, narrowed within its own space;
- `tune.chains`: each a chain of known stages without a forbidden repeat;
- `device`: a device name this machine has (`gpu` is none; `cuda` needs a GPU);
- the data: the root exists, and the real class count and image size (an image folder's own);
- the model: it builds for that data, and every enabled stage accepts it (torch-pruning can
  build its groups for P and D's narrower student), on stand-in data, no training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from seqsearch.config import StudyConfig
from seqsearch.data import DataBundle, DataShape, Split, describe_data
from seqsearch.errors import SeqsearchError
from seqsearch.models import build_model
from seqsearch.search.space import check_space
from seqsearch.stages import StageContext, behaviour, get_stage, resolve_params
from seqsearch.train import resolve_device

_PASSED: set[str] = set()  # studies already checked in this process (the model check costs)


def split_fixed(section: str, fixed: Mapping[str, Any], stages: Iterable[str]
                ) -> dict[str, dict[str, Any]]:
    """`stage.param: value` entries checked by each stage's own validation, grouped by stage
    (resolved: defaults filled in); an error names the section and the key."""
    names = {get_stage(n).info.name for n in stages}
    by_stage: dict[str, dict[str, Any]] = {}
    for key, value in fixed.items():
        stage = str(key).split(".", 1)[0]
        if stage not in names or "." not in str(key):
            raise SeqsearchError(f"{section}: {key!r} is not 'stage.param' of an enabled "
                                 f"stage ({', '.join(sorted(names))})")
        by_stage.setdefault(stage, {})[key] = value
    out = {}
    for stage, params in by_stage.items():
        try:
            out[stage] = resolve_params(get_stage(stage).info, params)
        except SeqsearchError as exc:
            raise SeqsearchError(f"{section}: {exc}") from None
    return out


def tune_stages(study: StudyConfig) -> list[str]:
    """The stages tuning may use: the study's, and any a `tune.chains` entry names."""
    names = [get_stage(n).info.name for n in study.stages]
    for chain in study.tune.chains or ():
        names += [get_stage(c).info.name for c in chain if get_stage(c).info.name not in names]
    return names


def check_chains(study: StudyConfig) -> None:
    from seqsearch.search.tune import check_chain

    for chain in study.tune.chains or ():
        try:
            check_chain(chain)
        except SeqsearchError as exc:
            raise SeqsearchError(f"tune.chains: {chain!r}: {exc}") from None


def check_fixed(study: StudyConfig) -> dict[str, dict[str, Any]]:
    """probe.fixed and tune.fixed hold params of the study's stages with allowed values;
    returns the params tuning would fix, per stage, with defaults filled in."""
    check_chains(study)
    split_fixed("probe.fixed", study.probe.fixed, study.stages)
    tune_names = tune_stages(study)
    split_fixed("tune.fixed", study.tune.fixed, tune_names)
    merged = split_fixed("tune.fixed", {**study.probe.fixed, **study.tune.fixed}, tune_names)
    check_space(study.space, tune_names)
    return {n: merged.get(n, resolve_params(get_stage(n).info, {})) for n in tune_names}


def stand_in(shape: DataShape, n: int = 16) -> DataBundle:
    """Random images of the data's shape: enough for tracing, nothing to learn from."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, shape.channels, shape.side, shape.side, generator=gen)
    split = Split(x, torch.arange(n) % shape.classes)
    return DataBundle("stand-in", split, split, split, shape.classes)


def check_model(study: StudyConfig, shape: DataShape, params: Mapping[str, Mapping[str, Any]]
                ) -> None:
    model = build_model(study.model.name, input_shape=(shape.channels, shape.side, shape.side),
                        num_classes=shape.classes, kwargs=study.model.kwargs)
    ctx = StageContext(stand_in(shape), study.train, study.seed, study.first_last_bits,
                       progress=False)
    for name, stage_params in params.items():
        behaviour.check_model(name, model.eval(), ctx, stage_params)


def preflight(study: StudyConfig) -> DataShape:
    """Run every check above; returns the data's shape. A study that passed once in this
    process is not checked again."""
    params = check_fixed(study)
    resolve_device(study.device)
    if study.tune.objective != "bitops":  # latency is timed on tune.runtime: is it installed?
        from seqsearch.deploy.runtimes import resolve

        try:
            resolve(study.tune.runtime)
        except SeqsearchError as exc:
            raise SeqsearchError(f"tune.runtime: {exc}") from None
    d = study.data
    shape = describe_data(d.name, root=d.root, download=d.download, image_size=d.image_size)
    key = study.model_dump_json()
    if key not in _PASSED:
        check_model(study, shape, params)
        _PASSED.add(key)
    return shape
