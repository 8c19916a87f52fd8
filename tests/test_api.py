"""The Python API: docs/api.md's example runs end to end as it stands, on a small CNN and
tensors; results come back as plain data; the API refuses bad input in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import seqsearch
from seqsearch.errors import SeqsearchError

DOC = Path(__file__).parent.parent / "docs" / "api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    runnable = [b for b in blocks if "run_study(study, model=SmallNet()" in b]
    assert len(runnable) == 1
    return runnable[0]


def test_docs_example_runs_end_to_end(tmp_path):
    code = _example() + (
        "\nimport json\nprint('RESULT', json.dumps(result.to_dict()))\n"
        "print('EXITS', sorted(set(model.exits_taken(x[test]).tolist())) "
        "if hasattr(model, 'exits_taken') else None)\n")
    env = {**os.environ, "SEQSEARCH_QUIET": "1",
           "PYTHONPATH": os.pathsep.join([str(DOC.parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    env.pop("SEQSEARCH_ALLOW_CHANCE_BASELINE", None)  # the example's baseline must learn
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert [v["pair"] for v in result["verdicts"]] == ["PE"]
    assert result["orders"] and result["export"]["chain"]
    assert set(result["export"]["metrics"]) == {"accuracy", "bitops_cr", "cr"}
    assert result["pareto"] and all(p["val_bitops_cr"] > 0 for p in result["pareto"])
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.5  # the baseline learned, the exported model predicts
    folder = tmp_path / "runs" / "digits-api"
    assert (folder / "chain.yaml").is_file() and (folder / "model.pt").is_file()
    again = seqsearch.read_results(folder).to_dict()
    for key in ("verdicts", "orders", "pareto", "baseline"):
        assert again[key] == result[key]
    assert again["export"]["metrics"] == result["export"]["metrics"]


def test_read_results_of_a_committed_study():
    folder = DOC.parent.parent / "reports" / "vgg11-mnist5k"
    res = seqsearch.read_results(folder)
    assert len(res.verdicts) == 6 and res.export["chain"] == "DQP"
    assert res.export["metrics"]["bitops_cr"] > 1
    front = [(p["val_accuracy"], p["val_bitops_cr"]) for p in res.pareto]
    assert front == sorted(front, key=lambda p: (-p[0], p[1]))
    for a, b in zip(front, front[1:], strict=False):  # more accurate, or more compressed
        assert a[0] > b[0] and a[1] < b[1]
    json.dumps(res.to_dict())


def test_model_objects_and_tensors_become_registry_names(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
                              torch.nn.LazyLinear(3))
    net(torch.zeros(1, 1, 8, 8))
    x, y = torch.randn(60, 1, 8, 8), torch.arange(60) % 3
    a = seqsearch.prepare_study({"name": "s"}, model=net, data=(x, y))
    b = seqsearch.prepare_study({"name": "s"}, model=net, data=(x, y))
    assert a.model.name == b.model.name and a.data.name == b.data.name  # the same cache key
    assert a.baseline_key() == b.baseline_key()
    assert a.data.name.startswith("tensors-") and a.model.name.startswith("Sequential-")
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(x, y)
    for given in (ds, DataLoader(ds, batch_size=7)):  # the same images: the same name
        assert seqsearch.prepare_study({"name": "s"}, model=net,
                                       data=given).data.name == a.data.name
    with pytest.raises(SeqsearchError, match="data train: expected"):
        seqsearch.prepare_study({"name": "s"}, model=net, data={"train": "nope"})
    with pytest.raises(SeqsearchError, match="tune.fixed"):
        from seqsearch.preflight import preflight

        preflight(seqsearch.prepare_study({"name": "s", "tune": {"fixed": {"prune.x": 1}}},
                                          model=net, data=(x, y)))


def test_weights_file_is_where_the_baseline_starts(tmp_path):
    from seqsearch.baseline import build_data, build_model

    x, y = torch.randn(60, 1, 8, 8), torch.arange(60) % 10
    study = seqsearch.prepare_study({"name": "s", "model": {"name": "tiny"}}, data=(x, y))
    data = build_data(study, torch.device("cpu"))
    torch.manual_seed(5)
    pretrained = build_model(study, data)
    path = tmp_path / "w.pt"
    torch.save(pretrained.state_dict(), path)
    started = build_model(seqsearch.prepare_study(study, weights=path), data)
    for a, b in zip(pretrained.state_dict().values(), started.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert seqsearch.prepare_study(study, weights=path).baseline_key() != study.baseline_key()
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(SeqsearchError, match="does not fit the model"):
        build_model(seqsearch.prepare_study(study, weights=tmp_path / "bad.pt"), data)
