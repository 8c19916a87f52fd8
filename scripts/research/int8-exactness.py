"""Identical predictions of int8 kernels vs the fake-quant model, old lowering (weights widened
to ±127, largest widening) vs the current one (±64 on full-range uint8 inputs, bias-aware
widening), in the graph, onnxruntime's int8 kernels and OpenVINO (docs/deploy.md, "Integer
kernels that are exact on every x86").

Run it once plain and once as `ONEDNN_MAX_CPU_ISA=AVX2 python scripts/research/int8-exactness.py`
(OpenVINO's oneDNN limited to AVX2: the kernels of a CPU without VNNI). A ResNet-8 on 3,000
MNIST-5k images at 16x16, one quantize stage per row; stages cached under OUT (argv[1],
default /tmp/int8-exactness)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from seqsearch.chain import ChainRunner, Reference, plan
from seqsearch.config import TrainSection
from seqsearch.data import load_data
from seqsearch.deploy import lower as L
from seqsearch.deploy.onnx_export import export_compressed
from seqsearch.deploy.runtimes import predictions
from seqsearch.metrics import count_bitops, param_bits
from seqsearch.models import create_model
from seqsearch.stages import StageContext
from seqsearch.train import TrainSettings, evaluate, fit

ROWS = [("w4a4-dorefa", {"weight_bits": 4, "act_bits": 4}),
        ("w1a8-lsq", {"weight_bits": 1, "act_bits": 8, "method": "lsq"}),
        ("w4a8-lsq", {"weight_bits": 4, "act_bits": 8, "method": "lsq"}),
        ("w8a8-dorefa", {"weight_bits": 8, "act_bits": 8}),
        ("w4a4-lsq", {"weight_bits": 4, "act_bits": 4, "method": "lsq"})]


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/int8-exactness")
    out.mkdir(parents=True, exist_ok=True)
    data = load_data("mnist5k", seed=0, image_size=16, limit=3000)
    torch.manual_seed(0)
    model = create_model("resnet8", in_channels=1, num_classes=10, kwargs={"width": 1.0})
    fit(model, data, TrainSettings(epochs=3, lr=0.05, batch_size=64), progress=False)
    train = TrainSection(epochs=1, stage_epochs=2, student_epochs=1, batch_size=64, lr=0.05)
    ctx = StageContext(data, train, 0, (8, 8), progress=False)
    ref = Reference(float(count_bitops(model, data.input_shape)), float(param_bits(model)),
                    evaluate(model, data.test), evaluate(model, data.val))
    runner = ChainRunner(model, data, ctx, ref, out / "cache", "int8")
    x = data.test.x.float()
    xn = x.numpy()
    current = L.weight_limit, L.bias_widen
    for tag, params in ROWS:
        m = runner.run(plan([("quantize", params)])).model.cpu().float().eval()
        with torch.no_grad():
            want = m(x).argmax(1).numpy()
        for variant in ("old", "new"):
            if variant == "old":
                L.weight_limit = lambda grid: 127  # type: ignore[assignment]
                L.bias_widen = lambda bias, scales, xs, most: most  # type: ignore[assignment]
            else:
                L.weight_limit, L.bias_widen = current
            p = out / f"{tag}-{variant}.onnx"
            export_compressed(m, data.train.x[:256].float(), p)
            row = {"graph": (predictions("onnxruntime", p, xn, fuse_qdq=False) == want).mean(),
                   "onnxruntime int8": (predictions("onnxruntime", p, xn) == want).mean(),
                   "openvino": (predictions("openvino", p, xn) == want).mean()}
            print(tag, variant, {k: f"{100 * v:.2f} %" for k, v in row.items()}, flush=True)


if __name__ == "__main__":
    main()
