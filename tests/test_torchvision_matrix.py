"""Real torchvision classifiers through the law's order (DPQE) and its reverse (EQPD).

Each model is built from a spec as a user would write it, on 1-channel digits (so the
grayscale repeat is exercised), at 16x16 (SqueezeNet 24x24), one epoch per stage on a few
hundred images. After
each chain the model must still run forward and backward, every stage must lower BitOps or
keep them, the chain must end below the baseline, and E must really exit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TEST_MEMORY_FORMAT, TEST_PRECISION

from seqsearch.chain import ChainRunner, Reference, plan
from seqsearch.config import TrainSection
from seqsearch.data import load_data
from seqsearch.errors import SeqsearchError
from seqsearch.metrics import count_bitops, param_bits
from seqsearch.models import build_model
from seqsearch.models.multi_exit import MultiExit, exit_decisions
from seqsearch.stages import StageContext
from seqsearch.train import evaluate, predict

ZOO = Path(__file__).parent / "zoo" / "small_torchvision.py"
NAMES = {"D": "distill", "P": "prune", "Q": "quantize", "E": "early_exit"}
PARAMS = {"D": {"width": 0.5, "depth": 0.5}, "P": {"ratio": 0.3},
          "Q": {"weight_bits": 4, "act_bits": 4}, "E": {"exits": 2, "threshold": 0.0}}
# (family, spec); heavy ones are marked slow but still run in CI (.ci/run runs every test)
MODELS = [
    ("resnet", "torchvision.models:resnet18"),
    ("mobilenet", "torchvision.models:mobilenet_v3_small"),
    ("squeezenet", "torchvision.models:squeezenet1_1"),  # needs 24x24 or more: data_for
    ("regnet", "torchvision.models:regnet_x_400mf"),
    ("efficientnet", "torchvision.models:efficientnet_b0"),
    ("densenet", f"{ZOO}:densenet_small"),
    ("resnext", f"{ZOO}:resnext_small"),
]


SIDES = {"squeezenet": 24}  # its pooling leaves nothing of a 16x16 input


@pytest.fixture(scope="module")
def data_for():
    cache: dict[int, object] = {}

    def get(family: str):
        side = SIDES.get(family, 16)
        if side not in cache:
            cache[side] = load_data("digits", limit=240, seed=0, image_size=side)
        return cache[side]

    return get


def _runner(spec: str, data) -> ChainRunner:
    torch.manual_seed(0)
    model = build_model(spec, input_shape=data.input_shape, num_classes=data.num_classes)
    train = TrainSection(epochs=1, stage_epochs=1, student_epochs=1, batch_size=64, lr=0.05,
                         precision=TEST_PRECISION,
                         memory_format=TEST_MEMORY_FORMAT)
    ctx = StageContext(data, train, 0, (8, 8), progress=False)
    ref = Reference(float(count_bitops(model, data.input_shape)), float(param_bits(model)),
                    evaluate(model, data.test), evaluate(model, data.val))
    return ChainRunner(model, data, ctx, ref, None, spec)


def _check(runner: ChainRunner, order: str, params: dict[str, dict]) -> None:
    result = runner.run(plan([(NAMES[c], params[c]) for c in order]))
    records = result.records
    assert [r["letter"] for r in records] == list(order)
    previous = runner.reference.bitops
    for r in records:  # every stage lowers BitOps or keeps them; E lowers them
        assert r["bitops"] <= previous * (1 + 1e-9), (r["order"], r["bitops"], previous)
        if r["letter"] == "E":
            assert r["bitops"] < previous
        previous = r["bitops"]
    assert records[-1]["bitops_cr"] > 1.0
    model = result.model
    assert isinstance(model, MultiExit)
    taken, _ = exit_decisions(predict(model, runner.data.test), model.policy.threshold,
                              model.policy.criterion)
    assert (taken < len(model.heads)).all()  # τ = 0: every sample leaves at an early exit
    model.train()
    x = runner.data.train.x[:8]
    outs = model(x)
    assert all(o.shape == (8, 10) for o in outs)
    torch.stack([torch.nn.functional.cross_entropy(o, runner.data.train.y[:8])
                 for o in outs]).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "spec"), MODELS, ids=[f for f, _ in MODELS])
def test_law_order_and_reverse(family, spec, data_for):
    runner = _runner(spec, data_for(family))
    for order in ("DPQE", "EQPD"):
        _check(runner, order, PARAMS)


@pytest.mark.slow
def test_shufflenet_channel_shuffle(data_for):
    """torch-pruning cannot trace a channel shuffle: P and a narrower student are one-line
    errors naming the stage and what to do; a shallower student, Q and E still run."""
    runner = _runner("torchvision.models:shufflenet_v2_x0_5", data_for("shufflenet"))
    with pytest.raises(SeqsearchError, match=r"stage 'prune'.*channel shuffle.*leave prune out"):
        runner.run(plan([("prune", PARAMS["P"])]))
    with pytest.raises(SeqsearchError, match=r"stage 'distill'.*distill.width 1.0"):
        runner.run(plan([("distill", PARAMS["D"])]))
    shallow = {**PARAMS, "D": {"width": 1.0, "depth": 0.5}}
    for order in ("DQE", "EQD"):
        _check(runner, order, shallow)
