"""How far onnxruntime's integer kernels move a study's quantized models: every cached chain
model with a Q stage (or the keys given), lowered to ONNX and run on the study's test split
as written (Q/DQ kept: float kernels on dequantized values) and with onnxruntime's Q/DQ fusions
(QLinearConv, QLinearAdd), against the fake-quant model in torch.

Fusion computes in integers what the graph computes in float, so an output can land one level
apart where the float sum sits at a rounding edge; a deep network carries such a level on, and
a sensitive one grows it. Prints, per model: torch's test accuracy, the share of predictions
each ONNX session shares with torch, and its accuracy. Nothing is trained:

    python scripts/research/int-kernel-agreement.py studies/mobilenetv2-fashionmnist6k.yaml
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from seqsearch.chain import load_model
from seqsearch.config import load_study
from seqsearch.deploy.onnx_export import export_compressed
from seqsearch.deploy.runtimes import session
from seqsearch.models.multi_exit import MultiExit, exit_decisions
from seqsearch.pipeline import study_baseline


def quantized_models(cache: Path) -> list[tuple[str, str, dict[str, object]]]:
    """(key, order, last stage's params) of every cached model whose chain has a Q stage."""
    out = []
    for meta in sorted(cache.glob("*.json")):
        rec = json.loads(meta.read_text())["record"]
        if "Q" in rec["order"] and meta.with_suffix(".pt").is_file():
            out.append((meta.stem, rec["order"], rec["params"]))
    return sorted(out, key=lambda t: (len(t[1]), t[1], t[0]))


def decisions(model: torch.nn.Module, logits: torch.Tensor) -> np.ndarray:
    if isinstance(model, MultiExit):
        return exit_decisions(logits, model.policy.threshold, model.policy.criterion)[1].numpy()
    return logits.argmax(1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("keys", nargs="*", help="cache keys (default: every model with a Q stage)")
    ap.add_argument("--images", type=int, default=1000, help="test images (from the first)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    study = load_study(Path(args.study))
    out_dir = study.output_dir()
    base = study_baseline(study, out_dir)
    x = base.data.test.x.float().cpu()[:args.images]
    y = base.data.test.y.cpu().numpy()[:args.images]
    calib = base.data.train.x[:256].float().cpu()
    found = quantized_models(out_dir / "cache")
    chosen = [f for f in found if not args.keys or f[0] in args.keys]
    print("key                  order  torch acc | as written: same, acc | fused: same, acc")
    with tempfile.TemporaryDirectory() as tmp:
        for key, order, params in chosen:
            model = load_model(out_dir / "cache" / f"{key}.pt").float().eval()
            path = Path(tmp) / f"{key}.onnx"
            export_compressed(model, calib, path)
            with torch.no_grad():
                want = decisions(model, model(x))
            row = [f"{key} {order:6s} {(want == y).mean():.3f}"]
            for fuse in (False, True):
                sess = session(path, 1, fuse_qdq=fuse)
                name = sess.get_inputs()[0].name
                logits = np.concatenate([sess.run(None, {name: x[i:i + 250].numpy()})[0]
                                         for i in range(0, len(x), 250)])
                got = logits.argmax(1)  # an exit model's file returns the exit it took
                row.append(f"{(got == want).mean():.3f} {(got == y).mean():.3f}")
            print(" | ".join(row), json.dumps(params, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
