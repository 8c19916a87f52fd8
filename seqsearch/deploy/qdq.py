"""ONNX QuantizeLinear / DequantizeLinear / Clip as torch ops, with an eager twin.

During `torch.onnx.export` (dynamo) each call becomes exactly one ONNX node with the dtype we
choose (uint8 activations, int8 weights): the generic `onnx_symbolic` op that
`torch.onnx.ops.symbolic` wraps, called directly because the wrapper's attribute encoding is
not traceable inside `torch.cond`. In eager mode the same functions compute what onnxruntime
will compute (round half to even, saturate), so a lowered model can be checked in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# ONNX TensorProto data types
_ONNX_DTYPE = {torch.float32: 1, torch.uint8: 2, torch.int8: 3}
_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


class Emit:
    """Whether the lowered layers emit ONNX nodes (set only while exporting)."""

    onnx = False


def _node(op: str, inputs: Sequence[torch.Tensor], dtype: torch.dtype,
          shape: Sequence[int | torch.SymInt], ints: dict[str, int] | None = None
          ) -> torch.Tensor:
    keys = list((ints or {}).keys())
    values = [int(v) for v in (ints or {}).values()]
    out: torch.Tensor = torch.ops.onnx_symbolic._symbolic(
        list(inputs), op, _ONNX_DTYPE[dtype], shape=list(shape), attr_keys=keys,
        attr_types=["i"] * len(keys), attr_pos=[(i, i + 1) for i in range(len(keys))],
        attr_ints=values, attr_floats=[], attr_strs=[], metadata_props_keys=[],
        metadata_props_values=[], domain="", version=None)
    return out


def _per_axis(t: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    if t.dim() == 0:
        return t
    shape = [1] * like.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *,
             axis: int = 1) -> torch.Tensor:
    """QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    if Emit.onnx:
        attrs = {"axis": axis} if scale.dim() else None
        return _node("QuantizeLinear", [x, scale, zero_point], zero_point.dtype, x.shape, attrs)
    lo, hi = _RANGE[zero_point.dtype]
    s = _per_axis(scale, x, axis)
    z = _per_axis(zero_point, x, axis).float()
    return torch.clamp(torch.round(x / s) + z, lo, hi).to(zero_point.dtype)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *,
               axis: int = 1) -> torch.Tensor:
    """DequantizeLinear: (q - zero_point) * scale, per tensor or per `axis`."""
    if Emit.onnx:
        attrs = {"axis": axis} if scale.dim() else None
        return _node("DequantizeLinear", [q, scale, zero_point], torch.float32, q.shape, attrs)
    s = _per_axis(scale, q, axis)
    z = _per_axis(zero_point, q, axis).float()
    return (q.float() - z) * s


def clip(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Clip on the integer tensor (k < 8 bits keep only 2^k levels of uint8)."""
    if Emit.onnx:
        return _node("Clip", [q, lo, hi], q.dtype, q.shape)
    return torch.clamp(q, int(lo), int(hi))
