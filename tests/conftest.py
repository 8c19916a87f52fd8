from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SEQSEARCH_QUIET", "1")
# The suite's studies train one or two epochs on a few hundred images: their baselines are
# near chance by design; tests/test_preflight.py unsets this to test the stop itself.
os.environ.setdefault("SEQSEARCH_ALLOW_CHANCE_BASELINE", "1")
# Under pytest-xdist the two workers share the two cores: one torch thread each.
_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if os.environ.get("PYTEST_XDIST_WORKER"):  # and so does every process a test starts
    os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(max(1, min(_THREADS, torch.get_num_threads())))


@pytest.fixture()
def digits_small():
    from seqsearch.data import load_data

    return load_data("digits", limit=300, seed=0)


@pytest.fixture(scope="session")
def stage_setup():
    """A trained tiny model on a few hundred digits and a context for one-epoch stages."""
    from seqsearch.chain import Reference
    from seqsearch.config import TrainSection
    from seqsearch.data import load_data
    from seqsearch.metrics import count_bitops, param_bits
    from seqsearch.models import create_model
    from seqsearch.stages import StageContext
    from seqsearch.train import TrainSettings, evaluate, fit

    data = load_data("digits", limit=300, seed=0)
    torch.manual_seed(0)
    model = create_model("resnet8", in_channels=1, num_classes=10, kwargs={"width": 0.5})
    fit(model, data, TrainSettings(epochs=3, lr=0.05, batch_size=32), progress=False)
    from helpers import TEST_MEMORY_FORMAT, TEST_PRECISION

    train = TrainSection(epochs=1, stage_epochs=1, student_epochs=1, batch_size=32, lr=0.05,
                         precision=TEST_PRECISION,
                         memory_format=TEST_MEMORY_FORMAT)
    ctx = StageContext(data, train, 0, (8, 8), progress=False)
    ref = Reference(float(count_bitops(model, data.input_shape)), float(param_bits(model)),
                    evaluate(model, data.test), evaluate(model, data.val))
    return model, data, ctx, ref
