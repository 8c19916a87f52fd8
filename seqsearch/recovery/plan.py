"""What a recovery curve runs: the stages, one sample of each, the budgets and the seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from seqsearch.config import StudyConfig, TrainSection
from seqsearch.errors import SeqsearchError
from seqsearch.stages import behaviour, get_stage, resolve_params

DEMANDING: Mapping[str, Mapping[str, Any]] = {
    "quantize": {"weight_bits": 2, "act_bits": 2},
    "prune": {"ratio": 0.5},
    "distill": {"width": 0.5, "init": "scratch"},
}
"""The default sample of each stage: demanding but inside the probe's space, where recovery
takes longest (2-bit weights and activations; half the channels; a half-width student trained
from scratch, the paper's student). A stage not listed runs its defaults (E: two linear heads
placed evenly). The study's `probe.fixed` overrides these, so the curve measures what the probe
runs; `--sample K` takes the probe's sample K instead, and `--param` overrides any value."""

SETTINGS = ("stage_epochs", "student_epochs")


@dataclass(frozen=True)
class Point:
    """One training to run: a stage with its params, a budget in epochs, a seed."""

    stage: str
    letter: str
    params: Mapping[str, Any]
    setting: str  # the train key the budget sets: stage_epochs or student_epochs
    epochs: int
    seed: int


def parse_list(text: str, flag: str, example: str) -> tuple[int, ...]:
    """A comma list of distinct whole numbers >= 0, sorted; a one-line error otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise SeqsearchError(f"{flag} {text!r}: expected a comma list of whole numbers, "
                             f"e.g. {example}") from None
    if min(values) < 0:
        raise SeqsearchError(f"{flag} {text!r}: values must be 0 or more")
    if len(set(values)) != len(values):
        raise SeqsearchError(f"{flag} {text!r}: each value may be listed once")
    return tuple(sorted(values))


def parse_stages(text: str | None, study: StudyConfig) -> tuple[str, ...]:
    """Stage names (or letters), comma-separated; default: the study's stages."""
    names = study.stages if not text else [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise SeqsearchError(f"--stages {text!r}: name at least one stage, e.g. prune,quantize")
    return tuple(dict.fromkeys(get_stage(n).info.name for n in names))


def parse_params(items: Sequence[str], stages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`--param stage.key=value` items as {stage name: {key: value}} (values read as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        stage, dot, short = key.strip().partition(".")
        if not sep or not dot or not short:
            raise SeqsearchError(f"--param {item!r}: expected STAGE.KEY=VALUE, e.g. "
                                 "quantize.weight_bits=4")
        name = get_stage(stage).info.name
        if name not in stages:
            raise SeqsearchError(f"--param {item!r}: stage {name!r} is not on the curve "
                                 f"({', '.join(stages)})")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise SeqsearchError(f"--param {item!r}: the value is not valid YAML") from None
        out.setdefault(name, {})[short] = value
    return out


def budget_setting(stage: str) -> str:
    """The train key that sets how long the stage trains, read off what the stage declares
    (`behaviour.epochs`): `stage_epochs` for a fine-tune or exit heads, `student_epochs` for
    a distilled student."""
    probe = TrainSection(epochs=3, stage_epochs=5, student_epochs=7)
    got = behaviour.epochs(stage, probe)
    if got == probe.stage_epochs:
        return "stage_epochs"
    if got == probe.student_epochs:
        return "student_epochs"
    raise SeqsearchError(f"stage {stage!r}: its training length follows neither "
                         "train.stage_epochs nor train.student_epochs; no curve can set it")


def with_budget(study: StudyConfig, setting: str, epochs: int) -> StudyConfig:
    """The study with one training budget changed (the baseline's key does not read it)."""
    return study.model_copy(update={"train": study.train.model_copy(update={setting: epochs})})


def choose_samples(study: StudyConfig, stages: Sequence[str], sample: int | None,
                   overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each stage's params (short names, defaults filled in, checked): the demanding default
    under the study's `probe.fixed`, or the probe's sample `sample`; then `overrides`."""
    out: dict[str, dict[str, Any]] = {}
    if sample is not None:
        from seqsearch.search.probe import make_samples

        if sample < 0:
            raise SeqsearchError(f"--sample {sample}: must be 0 or more (a probe sample index)")
        drawn = make_samples(stages, max(study.probe.samples, sample + 1),
                             study.probe.sampler_seed, study.probe_fixed(), study.space)
    for name in stages:
        info = get_stage(name).info
        if sample is not None:
            params: dict[str, Any] = dict(drawn[info.letter][sample])
        else:
            fixed = {info.short(k): v for k, v in study.probe_fixed().items()
                     if k.startswith(f"{name}.")}
            params = {**DEMANDING.get(name, {}), **fixed}
        params.update(overrides.get(name, {}))
        out[name] = resolve_params(info, params)
    return out


def plan_points(samples: Mapping[str, Mapping[str, Any]], epochs: Sequence[int],
                seeds: Sequence[int]) -> list[Point]:
    """Stage by stage, budget by budget (ascending), seed by seed."""
    points = []
    for name, params in samples.items():
        setting = budget_setting(name)
        letter = get_stage(name).info.letter
        for e in epochs:
            for seed in seeds:
                points.append(Point(name, letter, dict(params), setting, e, seed))
    return points


def middle_tau(study: StudyConfig) -> float:
    """The study's middle exit threshold (the upper middle of `probe.thresholds`), at which a
    model with exits is measured."""
    values = sorted(study.probe.thresholds)
    return float(values[len(values) // 2])
