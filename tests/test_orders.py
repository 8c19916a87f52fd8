"""Every order runs: all 24 permutations of DPQE, all 12 ordered pairs, and PP, QQ, DD."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqsearch.chain import ChainRunner, plan
from seqsearch.models.multi_exit import MultiExit
from seqsearch.stages.quant_layers import QConv2d, QLinear

PERMUTATIONS = ["".join(p) for p in itertools.permutations("DPQE")]
PAIRS = ["".join(p) for p in itertools.permutations("DPQE", 2)]
REPEATS = ["PP", "QQ", "DD"]


@pytest.fixture(scope="module")
def runner(stage_setup, tmp_path_factory):
    model, data, ctx, ref = stage_setup
    return ChainRunner(model, data, ctx, ref, tmp_path_factory.mktemp("cache"), "tiny-digits")


def _params(letter: str, occurrence: int) -> dict:
    # repeats use stronger settings the second time
    return {
        "D": {"width": 0.75 if occurrence == 0 else 0.5},
        "P": {"ratio": 0.3},
        "Q": {"weight_bits": 8 if occurrence == 0 else 4, "act_bits": 8},
        "E": {"exits": 1, "threshold": 0.8},
    }[letter]


def _run(runner, order: str):
    counts: dict[str, int] = {}
    steps = []
    for letter in order:
        steps.append((letter, _params(letter, counts.get(letter, 0))))
        counts[letter] = counts.get(letter, 0) + 1
    return runner.run(plan(steps))


def _check(result, order: str, ref) -> None:
    model = result.model
    assert [r["letter"] for r in result.records] == list(order)
    final = result.records[-1]
    assert final["bitops"] < ref.bitops and final["bitops_cr"] > 1.0
    assert 0.0 <= final["accuracy"] <= 1.0
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    if "Q" in order:  # whatever came after Q (P, D, E) keeps every layer quantized (QP, QD, QE)
        assert all(isinstance(m, QConv2d | QLinear) for m in layers)
    if "E" in order:  # whatever came after E keeps the exits (EP, EQ, ED)
        assert isinstance(model, MultiExit) and len(model.heads) >= 1
    out = model(torch.zeros(2, 1, 8, 8))
    assert (out[-1] if isinstance(out, list) else out).shape == (2, 10)


@pytest.mark.parametrize("order", PERMUTATIONS)
def test_every_permutation_runs(runner, order, stage_setup):
    _check(_run(runner, order), order, stage_setup[3])


@pytest.mark.parametrize("order", PAIRS + REPEATS)
def test_pairs_and_repeats_run(runner, order, stage_setup):
    _check(_run(runner, order), order, stage_setup[3])


def test_repeat_shrinks_further(runner):
    once = _run(runner, "D").records[-1]
    twice = _run(runner, "DD").records[-1]
    assert twice["bitops"] < once["bitops"]
    q8 = _run(runner, "Q").records[-1]
    q8q4 = _run(runner, "QQ").records[-1]
    assert q8q4["bitops"] < q8["bitops"]
