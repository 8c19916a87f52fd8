"""What onnxruntime pays for int8 weights under float activations: a study's `model.onnx`
against a copy whose weight DequantizeLinear nodes are folded into float initializers.

A layer whose activations stay float (act_bits 32) is lowered as int8 weights + DequantizeLinear
+ float Conv: the file is smaller, but onnxruntime keeps DequantizeLinear on initializers (it
does not constant-fold them, so QDQ fusion can see them) and dequantizes the weights on every
call. OpenVINO folds them. Times batch 1 in onnxruntime (one thread, the three files in turn,
3 rounds of 300 calls cycling over 100 test images spread over the split) and checks that the
folded copy predicts the same. Nothing is trained:

    python scripts/research/fold-weight-dq.py reports/resnet20-fashionmnist6k
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from seqsearch.config import load_chain
from seqsearch.deploy.measure import batch1_inputs
from seqsearch.deploy.runtimes import session


def fold(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> int:
    """Replace every DequantizeLinear whose inputs are all initializers (in `graph` and its
    subgraphs) by its float result; returns how many."""
    keep, n = [], 0
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                n += fold(attr.g, inits)
        names = [i for i in node.input if i]
        if node.op_type != "DequantizeLinear" or not all(i in inits for i in names):
            keep.append(node)
            continue
        q, s = (numpy_helper.to_array(inits[i]).astype(np.float32) for i in names[:2])
        z = numpy_helper.to_array(inits[names[2]]).astype(np.float32) if len(names) > 2 else 0.0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if s.ndim == 1 and s.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            s = s.reshape(shape)
            z = np.reshape(z, shape) if np.ndim(z) else z
        tensor = numpy_helper.from_array(((q - z) * s).astype(np.float32), node.output[0])
        graph.initializer.append(tensor)
        inits[node.output[0]] = tensor
        n += 1
    del graph.node[:]
    graph.node.extend(keep)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    from seqsearch.data import load_data

    d = load_chain(args.folder / "chain.yaml").data
    x = load_data(d.name, root=d.root, limit=d.limit, test_limit=d.test_limit,
                  val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                  image_size=d.image_size).test.x.numpy().astype(np.float32)
    model = onnx.load(args.folder / "model.onnx")
    n = fold(model.graph, {t.name: t for t in model.graph.initializer})
    folded = Path(tempfile.mkdtemp()) / "folded.onnx"
    onnx.save(model, folded)
    files = {"model.onnx": args.folder / "model.onnx", "folded": folded,
             "fp32 baseline": args.folder / "deploy" / "baseline.onnx"}
    sessions = {k: session(p, 1) for k, p in files.items()}
    ones = batch1_inputs(x, 100)
    name = sessions["model.onnx"].get_inputs()[0].name

    def preds(k: str) -> np.ndarray:
        return np.array([sessions[k].run(None, {name: o})[0].argmax() for o in ones])

    same = float((preds("model.onnx") == preds("folded")).mean())
    ms: dict[str, list[float]] = {k: [] for k in files}
    for _ in range(3):
        for k, sess in sessions.items():
            for i in range(300):
                t = time.perf_counter()
                sess.run(None, {name: ones[i % len(ones)]})
                ms[k].append((time.perf_counter() - t) * 1e3)
    print(f"{args.folder}: {n} weight DequantizeLinear folded; identical predictions "
          f"{100 * same:.1f} % over {len(ones)} images")
    for k, v in ms.items():
        print(f"  onnxruntime batch 1, {k}: median {np.median(v):.3f} ms, mean {np.mean(v):.3f}")


if __name__ == "__main__":
    main()
