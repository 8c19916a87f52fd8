from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SEQSEARCH_QUIET", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture()
def digits_small():
    from seqsearch.data import load_data

    return load_data("digits", limit=300, seed=0)
