"""Export a compressed model (or the float baseline) to an ONNX file onnxruntime loads alone.

The compressed model is lowered first (lower.py), its output requantisations calibrated on
training images, its exits turned into `If` (exits.py); the file carries the lowering notes in
its metadata (`seqsearch.notes`), so `bench-model` can say them from the file alone.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from seqsearch import atomic
from seqsearch.deploy.exits import exit_net
from seqsearch.deploy.graph_pass import all_graphs, drop_redundant_requant, sink_initializers
from seqsearch.deploy.lower import calibrate_outputs, lower
from seqsearch.deploy.qdq import Emit
from seqsearch.models.multi_exit import MultiExit, confidence

OPSET = 18
NOTES_KEY = "seqsearch.notes"


@dataclass
class Exported:
    path: Path
    notes: list[str] = field(default_factory=list)
    quantized_layers: int = 0
    exact_layers: int = 0
    requant_dropped: int = 0
    exits_as_if: bool = False


class AllExits(nn.Module):
    """Every exit computed, each sample given the first exit its confidence passes (the
    fallback when the backbone cannot be cut at its exit points)."""

    def __init__(self, model: MultiExit) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.model(x)
        tau, crit = self.model.policy.threshold, self.model.policy.criterion
        result = outs[-1]
        for logits in reversed(outs[:-1]):
            leave = confidence(logits, crit) >= tau
            result = torch.where(leave.unsqueeze(1), logits, result)
        return result


def deployable(model: nn.Module, calibration: torch.Tensor, *, requant: bool = False
               ) -> tuple[nn.Module, Exported]:
    """The network to export (lowered, exits as control flow) and what it could not keep.
    `requant=False` leaves convs whose output is not quantized next in float (exact, slower)."""
    low = lower(model, calibration[:2])
    if requant:
        calibrate_outputs(low.model, calibration)
    info = Exported(Path(), list(low.notes), low.quantized, low.exact)
    net: nn.Module = low.model
    if isinstance(low.model, MultiExit):
        multi = low.model
        try:
            net = exit_net(multi)
            info.exits_as_if = True
        except (ValueError, TypeError, torch.fx.proxy.TraceError) as exc:
            info.notes.append(f"exits: the backbone cannot be cut at its exit points ({exc}); "
                              "every exit is computed and each sample takes the first that "
                              "passes (no If)")
            net = AllExits(multi)
    return net.eval(), info


def to_onnx(net: nn.Module, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Dynamic-batch ONNX of `net` (input `input`, output `logits`), our Q/DQ nodes emitted
    as ONNX operators."""
    example = torch.zeros((2, *input_shape))
    batch = torch.export.Dim("batch", min=1, max=4096)
    Emit.onnx = True
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (example,), dynamo=True, opset_version=OPSET,
                                        dynamic_shapes=({0: batch},), input_names=["input"],
                                        output_names=["logits"], verbose=False)
    finally:
        Emit.onnx = False
    assert program is not None
    proto: onnx.ModelProto = program.model_proto
    return proto


def _save(proto: onnx.ModelProto, path: Path, notes: list[str]) -> None:
    # the exporter's per-node metadata (source lines, module stacks) is most of a small
    # file: the deployed file carries the graph and the weights only
    for graph in all_graphs(proto.graph):
        graph.doc_string = ""
        del graph.value_info[:]  # intermediate shapes: onnxruntime infers them
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = NOTES_KEY, json.dumps(notes)
    atomic.write_bytes(path, proto.SerializeToString())


def export_compressed(model: nn.Module, calibration: torch.Tensor, path: Path, *,
                      requant: bool = False) -> Exported:
    """Write the deployable ONNX of a compressed model to `path` (atomically)."""
    net, info = deployable(model, calibration, requant=requant)
    proto = to_onnx(net, tuple(calibration.shape[1:]))
    info.requant_dropped = drop_redundant_requant(proto)
    sink_initializers(proto)
    info.path = path
    _save(proto, path, info.notes)
    return info


def export_float(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Write the fp32 ONNX of an uncompressed model (the baseline), as torch runs it."""
    model = copy.deepcopy(model).cpu().float().eval()
    _save(to_onnx(model, input_shape), path, [])


def file_notes(path: Path) -> list[str]:
    """The lowering notes stored in an exported file (empty for a foreign one)."""
    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == NOTES_KEY:
            return list(json.loads(p.value))
    return []
