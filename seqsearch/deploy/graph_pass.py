"""ONNX graph passes on the exported file: drop an output requantisation the next layer makes
redundant, keep each weight in the `If` branch that uses it, and count the operators
onnxruntime runs after its own optimisation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield a.g
            yield from a.graphs


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for sub in _subgraphs(graph):
        yield from all_graphs(sub)


def _used_below(graph: onnx.GraphProto) -> set[str]:
    """Names read by nodes inside any subgraph of `graph` (outer-scope references)."""
    names: set[str] = set()
    for sub in _subgraphs(graph):
        for g in all_graphs(sub):
            for n in g.node:
                names.update(n.input)
            names.update(o.name for o in g.output)
    return names


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for g in all_graphs(model.graph):
        for init in g.initializer:
            out[init.name] = numpy_helper.to_array(init)
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _is_zero_u8(name: str, consts: dict[str, np.ndarray]) -> bool:
    v = consts.get(name)
    return v is not None and v.dtype == np.uint8 and bool(np.all(v == 0))


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Names read by `graph`'s own nodes and outputs (not its subgraphs')."""
    names = {i for n in graph.node for i in n.input}
    return names | {o.name for o in graph.output}


def sink_initializers(model: onnx.ModelProto) -> int:
    """Move every initializer that only nodes inside one `If` branch read (at any depth) into
    the deepest branch that holds all its reads. The exporter keeps every weight in the main
    graph, which ONNX allows (outer-scope names), but onnxruntime's Q/DQ fusions look a
    DequantizeLinear's weight up in the node's own graph: an int8 exit-head weight read from
    two branches deep made a file fail to load ("Missing required weight: heads.1.3.w_int").
    Returns how many moved."""
    moved = 0

    def sink(graph: onnx.GraphProto) -> None:
        nonlocal moved
        subs = list(_subgraphs(graph))
        if not subs:
            return
        here = _reads(graph)
        below = [set().union(*(_reads(g) for g in all_graphs(sub))) for sub in subs]
        keep = []
        for init in graph.initializer:
            users = [k for k, names in enumerate(below) if init.name in names]
            if init.name in here or len(users) != 1:
                keep.append(init)
                continue
            subs[users[0]].initializer.append(init)
            moved += 1
        if len(keep) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(keep)
        for sub in subs:
            sink(sub)

    sink(model.graph)
    return moved


def drop_redundant_requant(model: onnx.ModelProto) -> int:
    """Conv -> Q -> DQ -> [ReLU] -> QuantizeLinear(s): the first Q/DQ (our output requant) only
    adds a rounding, and a ReLU in front of a uint8 zero-point-0 quantizer does nothing, so
    both go and the conv feeds the quantizers directly (onnxruntime then fuses the conv into
    an integer one that writes the next layer's input). Returns how many were dropped."""
    consts = _constants(model)
    dropped = 0
    for graph in all_graphs(model.graph):
        outer = _used_below(graph) | {o.name for o in graph.output}
        producer = {o: n for n in graph.node for o in n.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        remove: list[onnx.NodeProto] = []
        for q in list(graph.node):
            if q.op_type != "QuantizeLinear":
                continue
            src = producer.get(q.input[0])
            dqs = readers.get(q.output[0], [])
            if src is None or src.op_type != "Conv" or len(dqs) != 1 \
                    or dqs[0].op_type != "DequantizeLinear" or q.output[0] in outer:
                continue
            dq = dqs[0]
            nxt = readers.get(dq.output[0], [])
            if not nxt or dq.output[0] in outer:
                continue
            relu: onnx.NodeProto | None = None
            if len(nxt) == 1 and nxt[0].op_type == "Relu":
                relu = nxt[0]
                if relu.output[0] in outer:
                    continue
                nxt = readers.get(relu.output[0], [])
                if not nxt or not all(n.op_type == "QuantizeLinear" and len(n.input) > 2
                                      and _is_zero_u8(n.input[2], consts) for n in nxt):
                    continue
            elif not all(n.op_type == "QuantizeLinear" for n in nxt):
                continue
            for n in nxt:
                n.input[0] = q.input[0]
            remove += [q, dq] + ([relu] if relu is not None else [])
            dropped += 1
        for n in remove:
            graph.node.remove(n)
    return dropped


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Operator types over the graph and every subgraph (If branches)."""
    return Counter(n.op_type for g in all_graphs(model.graph) for n in g.node)


INTEGER_OPS = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul",
               "MatMulIntegerToFloat", "QGemm", "DynamicQuantizeMatMul")
FLOAT_OPS = ("Conv", "FusedConv", "MatMul", "Gemm", "FusedMatMul", "FusedGemm")


def optimized_ops(path: str, optimized_path: str) -> dict[str, Any]:
    """Operator counts in the graph onnxruntime runs (its optimised model, saved to
    `optimized_path`): integer kernels vs float conv/matmul."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = optimized_path
    so.log_severity_level = 3
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    counts = op_counts(onnx.load(optimized_path))
    return {"integer": {k: counts[k] for k in INTEGER_OPS if counts[k]},
            "float": {k: counts[k] for k in FLOAT_OPS if counts[k]},
            "all": dict(sorted(counts.items()))}
