"""What a study's search covers: its stages' letters, the pairs the probe runs and the methods
each step runs with (read by the pipeline, the dry-run plan and the report alike)."""

from __future__ import annotations

from typing import Any

from seqsearch.config import StudyConfig
from seqsearch.errors import SeqsearchError
from seqsearch.stages import get_stage


def study_letters(study: StudyConfig) -> list[str]:
    return [get_stage(name).info.letter for name in study.stages]


def study_pairs(study: StudyConfig) -> list[str]:
    """The pairs the probe runs, each in the enabled stages' order (`probe.pairs`, else
    every pair); a letter that is not an enabled stage is an error naming the key."""
    letters = study_letters(study)
    every = [a + b for i, a in enumerate(letters) for b in letters[i + 1:]]
    if study.probe.pairs is None:
        return every
    out = []
    for pair in study.probe.pairs:
        missing = [c for c in pair if c not in letters]
        if missing:
            raise SeqsearchError(f"probe.pairs: {pair!r} names {', '.join(missing)}, not an "
                                 f"enabled stage (enabled: {''.join(letters)})")
        out.append(pair if pair in every else pair[::-1])
    return [p for p in every if p in out]


def methods(study: StudyConfig, fixed: dict[str, Any]) -> dict[str, Any]:
    """The methods a step runs with: each enabled stage's named choices (quantize.method,
    distill.init, distill.method, ...) as `fixed` sets them, else "sampled" where the search
    space draws them, else the stage's default."""
    from optuna.distributions import CategoricalDistribution

    out: dict[str, Any] = {}
    for name in study.stages:
        info = get_stage(name).info
        for key, default in info.defaults.items():
            dist = info.space.get(key)
            named = (isinstance(dist, CategoricalDistribution)
                     and all(isinstance(c, str) for c in dist.choices))
            if key in fixed:
                out[key] = fixed[key]
            elif named:
                out[key] = "sampled"
            elif dist is None and isinstance(default, str):
                out[key] = default
    return out
