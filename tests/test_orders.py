"""Every order runs, over the registry: every ordered pair of registered stages, every stage at
every position of a full chain, all 24 orders of the paper's four stages, and each repeatable
stage twice. After each stage the model keeps what earlier stages did (quantized layers stay
quantized, exits stay), trains forward and backward, and its BitOps stay below the baseline's."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqsearch.chain import ChainRunner, plan
from seqsearch.config import DEFAULT_STAGES
from seqsearch.stages import get_stage, list_stages
from seqsearch.stages.quant_layers import QConv2d, QLinear

LETTERS = "".join(get_stage(n).info.letter for n in list_stages())
PAPER = "".join(get_stage(n).info.letter for n in DEFAULT_STAGES)
PAIRS = ["".join(p) for p in itertools.permutations(LETTERS, 2)]
# each stage at each position: the rotations of the registry order and of its reverse
ROTATIONS = sorted({s[i:] + s[:i] for s in (LETTERS, LETTERS[::-1]) for i in range(len(s))})
PERMUTATIONS = ["".join(p) for p in itertools.permutations(PAPER)]
REPEATS = [c + c for c in LETTERS if get_stage(c).info.repeatable]

# light settings so a chain trains in about a second; every other param at its default
LIGHT = {"E": {"exits": 1, "threshold": 0.8}, "P": {"ratio": 0.3}, "D": {"width": 0.75},
         "Q": {"weight_bits": 8, "act_bits": 8}}
SECOND = {"D": {"width": 0.5}, "Q": {"weight_bits": 4, "act_bits": 8}}  # a repeat goes further


@pytest.fixture(scope="module")
def runner(stage_setup, tmp_path_factory):
    model, data, ctx, ref = stage_setup
    return ChainRunner(model, data, ctx, ref, tmp_path_factory.mktemp("cache"), "tiny-digits")


def _steps(order: str) -> list[tuple[str, dict]]:
    seen: set[str] = set()
    steps = []
    for letter in order:
        params = SECOND.get(letter, LIGHT.get(letter, {})) if letter in seen \
            else LIGHT.get(letter, {})
        steps.append((letter, dict(params)))
        seen.add(letter)
    return steps


def _all_quantized(model: torch.nn.Module) -> bool:
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    return bool(layers) and all(isinstance(m, QConv2d | QLinear) for m in layers)


def _exits(model: torch.nn.Module) -> int:
    heads = getattr(model, "heads", None)
    return len(heads) if heads is not None else 0


def _check(runner, order: str, ref) -> None:
    steps = plan(_steps(order))
    result = runner.run(steps)
    assert [r["letter"] for r in result.records] == list(order)
    # what each stage did survives every later stage (QP, QD, QE, QL; EP, EQ, ED, EL)
    previous = None
    for k in range(1, len(steps) + 1):
        model = runner.run(steps[:k]).model  # prefixes come from the cache
        if previous is not None:
            if _all_quantized(previous):
                assert _all_quantized(model), f"{order[:k]} lost quantized layers"
            if _exits(previous):
                assert _exits(model) >= 1, f"{order[:k]} lost the exits"
        previous = model
    final = result.records[-1]
    assert final["bitops"] < ref.bitops and final["bitops_cr"] > 1.0
    assert 0.0 <= final["accuracy"] <= 1.0
    model = result.model
    model.train()
    out = model(torch.zeros(4, 1, 8, 8))
    outs = out if isinstance(out, list) else [out]
    assert outs[-1].shape == (4, 10)
    torch.stack([o.sum() for o in outs]).sum().backward()
    assert any(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("order", PAIRS + REPEATS)
def test_every_ordered_pair_and_repeat_runs(runner, order, stage_setup):
    _check(runner, order, stage_setup[3])


@pytest.mark.parametrize("order", ROTATIONS)
def test_every_stage_at_every_position(runner, order, stage_setup):
    _check(runner, order, stage_setup[3])


@pytest.mark.parametrize("order", PERMUTATIONS)
def test_every_order_of_the_paper_stages_runs(runner, order, stage_setup):
    _check(runner, order, stage_setup[3])


def test_repeat_shrinks_further(runner):
    once = runner.run(plan(_steps("D"))).records[-1]
    twice = runner.run(plan(_steps("DD"))).records[-1]
    assert twice["bitops"] < once["bitops"]
    q8 = runner.run(plan(_steps("Q"))).records[-1]
    q8q4 = runner.run(plan(_steps("QQ"))).records[-1]
    assert q8q4["bitops"] < q8["bitops"]
