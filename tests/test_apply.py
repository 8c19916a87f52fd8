"""`seqsearch apply`: a hand-written chain deploys like an exported one (model.onnx beside the
model), a committed chain rebuilds in runs/, and --json reports the policy resolved here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqsearch.apply_settings import apply_settings
from seqsearch.cli import main
from seqsearch.config import load_chain

ROOT = Path(__file__).parent.parent

CHAIN = """\
version: 1
name: hand
model: {{name: tiny}}
data: {{name: digits, limit: 200}}
train: {{epochs: 1, stage_epochs: 1, batch_size: 32}}
output: {out}
stages:
  - {{stage: prune, params: {{ratio: 0.5}}}}
  - {{stage: quantize, params: {{weight_bits: 8, act_bits: 8}}}}
  - {{stage: early_exit, params: {{exits: 1, threshold: 0.9}}}}
"""

# onnxruntime and numpy only: no torch, no seqsearch in this process
ORT_ALONE = """\
import sys
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
out = sess.run(None, {inp.name: x})[0]
assert out.shape == (5, 10) and np.isfinite(out).all(), out.shape
assert "torch" not in sys.modules and "seqsearch" not in sys.modules
print("ok", out.shape)
"""


def test_hand_written_chain_to_onnx_that_runs_alone(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    chain = tmp_path / "hand.yaml"
    chain.write_text(CHAIN.format(out=tmp_path / "work"))
    assert main(["apply", str(chain), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    onnx = tmp_path / "hand.onnx"
    assert res["model_file"] == str(tmp_path / "hand.pt")
    assert res["onnx_file"] == str(onnx) and onnx.is_file()
    # the policy this machine trained under, never `auto`
    assert res["policy"]["precision"] in ("fp32", "bf16", "fp16")
    assert res["policy"]["memory_format"] in ("channels_last", "contiguous")
    assert res["requested_policy"]["precision"] == "auto"
    proc = subprocess.run([sys.executable, "-c", ORT_ALONE, str(onnx)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
    # the same model in PyTorch, its exits applied at τ: one logits row per image
    import torch

    import seqsearch

    x = torch.randn(6, 1, 8, 8)
    model = seqsearch.load_model(tmp_path / "hand.pt")
    assert model.threshold == 0.9 and model(x).shape == (6, 10)
    never = seqsearch.load_model(tmp_path / "hand.pt", threshold=1.01)  # τ > 1: no early exit
    assert never.exits_taken(x).tolist() == [1] * 6
    with torch.no_grad():
        assert torch.equal(never(x), never.model(x)[-1])


@pytest.mark.parametrize("name", ["resnet20-mnist5k", "vgg11-mnist5k"])
@pytest.mark.parametrize("file", ["chain.yaml", "tune/best_chain.yaml"])
def test_committed_chain_is_relative_and_applies_in_runs(name, file):
    path = ROOT / "reports" / name / file
    cfg = load_chain(path)
    assert cfg.output is not None and not Path(cfg.output).is_absolute()
    got = apply_settings(cfg, path)
    assert got.work_dir == Path("runs") / cfg.name
    assert got.model_path == Path("runs") / cfg.name / "model.pt"
    assert not got.work_dir.resolve().is_relative_to((ROOT / "reports").resolve())
