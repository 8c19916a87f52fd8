"""The precision and memory-format policy of the one training loop (and of evaluation).

`precision` is `auto | fp32 | bf16 | fp16`: `auto` takes bfloat16 autocast only where the
hardware computes it natively (a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX),
else fp32; an emulated bf16 is slower than fp32, so `auto` never picks it. fp16 is for GPUs
and runs with a gradient scaler. `memory_format` is `auto | channels_last | contiguous`:
`auto` takes channels-last on CUDA only (see `resolve_policy` for why not on the CPU).

Fake quantisation, calibration and BitOps never run under autocast (the quantized layers
switch it off around their quantizers), so a `wXaY` layer still produces exactly 2^X and 2^Y
levels whatever the policy. Losses and the softmaxes of distillation and exits take fp32
logits. On the CPU, strided convs whose output is 1 wide run in fp32 under bf16 (`guarded`):
oneDNN's native bf16 kernel gets their weight gradient wrong (`degenerate_conv`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (not emulated through fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if callable(check) and check():
            return True
    try:  # older torch: read the flags the kernel reports
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass(frozen=True)
class Policy:
    """What a fit or an evaluation runs in: autocast dtype (None: fp32) and memory format."""

    device_type: str
    dtype: torch.dtype | None
    channels_last: bool

    @property
    def scaled(self) -> bool:
        """fp16 needs a gradient scaler (its range is too small for raw gradients)."""
        return self.dtype is torch.float16

    def describe(self) -> str:
        settings = policy_settings(self)
        return f"{settings['precision']}, {settings['memory_format'].replace('_', '-')}"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def model(self, model: nn.Module) -> nn.Module:
        """The model's 4-D weights in this policy's memory format (in place)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return model.to(memory_format=fmt)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def guarded(self, model: nn.Module) -> Iterator[None]:
        """Inside: `model`'s strided convs run in fp32 on the inputs where the CPU's bf16
        kernel computes a wrong weight gradient (see `degenerate_conv`). Nothing changes on
        other devices or in fp32; the model is left as it was on exit."""
        if self.dtype is None or self.device_type != "cpu":
            yield
            return
        convs = [m for m in model.modules()
                 if isinstance(m, nn.Conv2d) and max(_pair(m.stride)) > 1
                 and "forward" not in vars(m)]
        for conv in convs:
            conv.forward = _fp32_when_degenerate(conv)  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            for conv in convs:
                del conv.forward


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        return int(value[0]), int(value[-1])
    return int(value), int(value)  # type: ignore[call-overload]


def degenerate_conv(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv` on `x` is a shape whose bf16 weight gradient oneDNN gets wrong on the CPU.

    Measured with torch 2.14.1 on a CPU with AMX and AVX-512 BF16: a 3x3 (or 5x5) conv with
    padding and a stride larger than its input along an axis (a stride-2 conv on a 1x1 map,
    stride 3 on 2x2), so its output is 1 there, returns a weight gradient off by up to 1e37 or
    non-finite, while its output and input gradient are right; fp32 is right, and so is the
    same conv once the stride no longer exceeds the input. ImageNet-style models on small
    images end in such maps (resnet18 at 16x16: layer4's first conv). The rule here is a
    little wider than the failures seen (any strided axis whose output is 1), which costs
    nothing: such convs are the smallest in a network.
    `tests/test_bf16_kernels.py` keeps the minimal reproduction.
    """
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


def _fp32_when_degenerate(conv: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    forward = conv.forward

    def guarded(x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu") and degenerate_conv(conv, x):
            with torch.autocast("cpu", enabled=False):
                return forward(x.float())
        return forward(x)

    return guarded


CONTIGUOUS = Policy("cpu", None, False)


def policy_settings(policy: Policy) -> dict[str, str]:
    """A resolved policy as the explicit settings that reproduce it anywhere."""
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[policy.dtype]
    return {"precision": precision,
            "memory_format": "channels_last" if policy.channels_last else "contiguous"}


def resolve_policy(precision: str, memory_format: str, device: torch.device) -> Policy:
    """The policy a study setting means on this device (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format {memory_format!r}: use one of "
                         f"{', '.join(MEMORY_FORMATS)}")
    dtype: torch.dtype | None
    if precision == "auto":
        dtype = torch.bfloat16 if native_bf16(device) else None
    elif precision == "bf16":
        dtype = torch.bfloat16
    elif precision == "fp16":
        dtype = torch.float16
    else:
        dtype = None
    if memory_format == "auto":
        # CUDA only. On the CPU it measured 1.16x here (AVX2, 2 threads) but crashed with
        # heap corruption in a pruned model's backward pass with one thread (torch 2.14.1):
        # opt in with memory_format: channels_last.
        channels_last = device.type == "cuda"
    else:
        channels_last = memory_format == "channels_last"
    return Policy(device.type, dtype, channels_last)


@contextlib.contextmanager
def full_precision(x: torch.Tensor) -> Iterator[None]:
    """Autocast off for what must stay exact (fake quantisation, calibration)."""
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            yield
    else:
        yield
