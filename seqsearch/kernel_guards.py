"""Workarounds for two CPU convolution kernel bugs (oneDNN in torch 2.14.1), scoped to a fit.

1. **bf16 weight gradient** (native bf16 kernels, AMX / AVX-512 BF16): a padded conv whose
   stride exceeds its input along an axis (a 3x3 stride-2 conv on a 1x1 map, stride 3 on 2x2)
   returns a weight gradient off by up to 1e37 or non-finite; its output and input gradient
   are right, fp32 is right, and the AVX2 kernels (bf16 emulated) are right. ImageNet-style
   models on small images end in such maps (resnet18 at 16x16: layer4's first conv), where one
   SGD step then wrote inf into the weight. Guard: such convs run in fp32 under autocast. The
   rule (`degenerate_conv`) is a little wider than the failures seen: any strided axis whose
   output is 1; they are the smallest convs of a network, so fp32 costs nothing there.
2. **channels-last heap corruption** (AVX2 kernels, one thread): the backward of a 1x1
   stride-2 conv with fewer than 8 input channels, in channels-last, writes outside its buffer
   ("munmap_chunk(): invalid pointer", abort). Pruned and narrow models have such shortcut
   convs. Not seen with 2 threads, with AVX-512 kernels, with 3x3 kernels or in contiguous
   format. Guard: with AVX2 kernels such convs run contiguous (`channels_last_hazard`).

`tests/test_bf16_kernels.py` keeps both minimal reproductions; where a later torch fixes a bug,
its documenting test skips and the guard costs nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
from torch import nn


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        return int(value[0]), int(value[-1])
    return int(value), int(value)  # type: ignore[call-overload]


def avx512_kernels() -> bool:
    """Whether oneDNN runs AVX-512 (or newer) kernels here: the CPU has them and
    ONEDNN_MAX_CPU_ISA does not cap it below."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap not in ("ALL", "DEFAULT") and not cap.startswith(("AVX512", "AVX10")):
        return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def degenerate_conv(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv` on `x` has a strided axis whose output is 1 wide (bug 1 above)."""
    if x.dim() != 4:
        return False
    kernel, stride = _pair(conv.kernel_size), _pair(conv.stride)
    padding = _pair(conv.padding) if not isinstance(conv.padding, str) else (0, 0)
    dilation = _pair(conv.dilation)
    for axis in (0, 1):
        if stride[axis] <= 1:
            continue
        extent = x.shape[2 + axis] + 2 * padding[axis] - dilation[axis] * (kernel[axis] - 1) - 1
        if extent // stride[axis] + 1 <= 1:
            return True
    return False


def channels_last_hazard(conv: nn.Conv2d) -> bool:
    """A 1x1 strided conv with fewer than 8 input channels (bug 2 above)."""
    return (_pair(conv.kernel_size) == (1, 1) and max(_pair(conv.stride)) > 1
            and conv.in_channels < 8)


def _guarded_forward(conv: nn.Conv2d, bf16: bool, contiguous: bool
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    forward = conv.forward

    def guarded(x: torch.Tensor) -> torch.Tensor:
        if contiguous:
            x = x.contiguous()
        if bf16 and torch.is_autocast_enabled("cpu") and degenerate_conv(conv, x):
            with torch.autocast("cpu", enabled=False):
                return forward(x.float())
        return forward(x)

    return guarded


@contextlib.contextmanager
def guard_convs(model: nn.Module, device_type: str, *, bf16: bool, channels_last: bool
                ) -> Iterator[None]:
    """Inside: `model`'s convs that would meet bug 1 or 2 under this policy take the safe path.
    Nothing changes on other devices, in fp32 contiguous, or with AVX-512 channels-last."""
    contiguous_fix = channels_last and not avx512_kernels()
    if device_type != "cpu" or not (bf16 or contiguous_fix):
        yield
        return
    saved: dict[nn.Conv2d, torch.memory_format | None] = {}
    for m in model.modules():
        if not isinstance(m, nn.Conv2d) or "forward" in vars(m):
            continue
        strided = max(_pair(m.stride)) > 1
        hazard = contiguous_fix and channels_last_hazard(m)
        if not (strided and bf16) and not hazard:
            continue
        saved[m] = None
        if hazard:  # the weight contiguous too, or the conv picks channels-last again; a 1x1
            # weight is "contiguous" in both formats, so only fresh default strides tell
            saved[m] = torch.channels_last
            m.weight.data = m.weight.data.clone(memory_format=torch.contiguous_format)
        m.forward = _guarded_forward(m, bf16, hazard)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for m, fmt in saved.items():
            del m.forward
            if fmt is not None:
                m.weight.data = m.weight.data.clone(memory_format=fmt)

