"""`--dry-run`: what a study will run and roughly what it costs, without data or training.

Counts come from the probe design (n stages, K samples, S seeds: n·K·S first-stage and
n(n−1)·K·S second-stage trainings with the prefix cache) and the tuning budget (at most
trials × chain length stage trainings). The compute estimate is 6 × MACs × training samples ×
epochs per training (2 FLOPs per MAC, forward + backward ≈ 3 forward passes), for the
baseline model: an upper bound, since compressed models are smaller.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from seqsearch.config import StudyConfig
from seqsearch.data import check_available, describe_data
from seqsearch.metrics import count_macs
from seqsearch.models import build_model
from seqsearch.search.stats import edge_looks, look_alpha, min_units_for


def dry_run(study: StudyConfig) -> dict[str, Any]:
    from seqsearch.stages import behaviour, get_stage

    d = study.data
    # a plan for data that is not there would only fail later
    check_available(d.name, d.root, d.download)
    shape = describe_data(d.name, root=d.root, download=d.download, image_size=d.image_size)
    c, side, classes, n_images = shape.channels, shape.side, shape.classes, shape.images
    pool = n_images if d.limit is None else min(n_images, d.limit)
    held_out = 0.0  # the share of the pool held out as test
    if not shape.official_test:
        if d.test_limit is not None:
            pool -= d.test_limit
        else:
            held_out = d.test_fraction
    elif d.limit is not None and d.test_limit is not None:
        pool = min(n_images, d.limit - d.test_limit)
    train_images = int(pool * (1 - d.val_fraction) * (1 - held_out))
    model = build_model(study.model.name, input_shape=(c, side, side), num_classes=classes,
                        kwargs=study.model.kwargs)
    macs = count_macs(model, (c, side, side))
    letters = [get_stage(s).info.letter for s in study.stages]
    n, k, s = len(letters), study.probe.samples, len(study.probe.seeds)
    from seqsearch.search.scope import study_pairs

    pairs = max(1, len(study_pairs(study)))  # `probe.pairs`, else every pair
    plan = edge_looks(study.probe.alpha, study.probe.look_units(), pairs)
    edge_level = look_alpha(study.probe.alpha,
                            study.probe.planned_looks() if plan is None else plan[0])
    t = study.train

    def epochs_of(letter: str) -> int:
        return behaviour.epochs(letter, t)

    chosen = study_pairs(study)
    probed = [a for a in letters if any(a in p for p in chosen)]
    first = len(probed) * k * s
    second = 2 * pairs * k * s
    probe_epochs = k * s * (sum(epochs_of(a) for a in probed)
                            + sum(epochs_of(p[0]) + epochs_of(p[1]) for p in chosen))
    tune_trainings = study.tune.trials * n
    tune_epochs = study.tune.trials * sum(epochs_of(a) for a in letters)
    total_epochs = t.epochs + probe_epochs + tune_epochs
    flops = 6.0 * macs * train_images * total_epochs
    # the brute force trains every distinct prefix of every full order once (prefix cache):
    # n!/(n-j)! prefixes of length j, each ending in one of the stages
    orders = math.factorial(n)
    brute_trainings = k * s * sum(orders // math.factorial(n - j) for j in range(1, n + 1))
    brute_epochs = k * s * sum(
        sum(epochs_of(p[-1]) for p in itertools.permutations(letters, j))
        for j in range(1, n + 1))
    return {
        "study": study.name, "model": study.model.name, "data": d.name,
        "input": [c, side, side], "classes": classes, "train_images": train_images,
        "baseline_macs": macs, "stages": "".join(letters),
        "probe_runs": first + second,
        "pairs": study_pairs(study),
        "probe_stage_trainings": first + second,
        "probe_stage_trainings_without_cache": 2 * second + first,
        "tune_trials": study.tune.trials, "tune_stage_trainings_at_most": tune_trainings,
        "epochs": {"baseline": t.epochs, "probe": probe_epochs, "tune_at_most": tune_epochs},
        "estimated_tflops": flops / 1e12,
        "min_samples_to_decide": max(min_units_for(edge_level / pairs),
                                     0 if plan is None else plan[1]),
        "sequential": {"adaptive": study.probe.adaptive,
                       "planned_looks": study.probe.planned_looks(),
                       "samples": k, "max_samples": study.probe.most_samples(),
                       "sample_looks": study.probe.sample_looks(),
                       "first_pair_level": edge_level / pairs,
                       # looks whose units cannot reject get no alpha for edges
                       "looks_with_edge_alpha": len(study.probe.look_units())
                       if plan is None else plan[0],
                       "look_units": study.probe.look_units(),
                       "stage_trainings_at_most": n * n * study.probe.most_samples() * s},
        "brute_force": {"orders": orders, "stage_trainings": brute_trainings,
                        "epochs": brute_epochs,
                        "times_the_probe": brute_trainings / max(1, first + second),
                        "estimated_tflops": 6.0 * macs * train_images * brute_epochs / 1e12},
    }


def min_units(alpha: float, looks: int, pairs: int = 1) -> int:
    """The fewest parameter samples with which the paired test can decide a pair at all: the
    first step of Holm's correction over `pairs` at alpha / looks."""
    return min_units_for(look_alpha(alpha, looks) / max(1, pairs))


def done_runs(out_dir: Path) -> dict[str, int] | None:
    """The probe runs (single and pair units) already done in `out_dir`, by kind, or None
    where none is: what a run of the same command skips."""
    units = out_dir / "units"
    if not units.is_dir():
        return None
    counts = {"single": 0, "pair": 0}
    for path in units.glob("*.json"):
        kind = path.name.split("-", 1)[0]
        if kind in counts:
            counts[kind] += 1
    return counts if sum(counts.values()) else None


def pilot_power(out_dir: Path) -> list[dict[str, Any]] | None:
    """Each pair's power line from a probe already run in `out_dir` (its order.json), or None
    where none ran: before a pilot the noise, hence the power, is unknown."""
    import json

    path = out_dir / "order.json"
    if not path.is_file():
        return None
    pairs = json.loads(path.read_text()).get("pairs", [])
    return [{"pair": p["pair"], "units": p["units"], "effect": p.get("effect"),
             **(p.get("power") or {})} for p in pairs]
