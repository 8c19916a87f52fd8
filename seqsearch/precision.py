"""The precision and memory-format policy of the one training loop (and of evaluation).

`precision` is `auto | fp32 | bf16 | fp16`: `auto` takes bfloat16 autocast only where the
hardware computes it natively (a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX),
else fp32; an emulated bf16 is slower than fp32, so `auto` never picks it. fp16 is for GPUs
and runs with a gradient scaler. `memory_format` is `auto | channels_last | contiguous`:
`auto` takes channels-last on CUDA only (see `resolve_policy` for why not on the CPU).

Fake quantisation, calibration and BitOps never run under autocast (the quantized layers
switch it off around their quantizers), so a `wXaY` layer still produces exactly 2^X and 2^Y
levels whatever the policy. Losses and the softmaxes of distillation and exits take fp32
logits. On the CPU, the convs that meet a oneDNN kernel bug under the policy take another path
during training (`Policy.guarded`, `seqsearch.kernel_guards`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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
    if onednn_cap_below_bf16():
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


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which its kernels have no bf16 dot products.
_NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                 "AVX512_CORE_VNNI")


def onednn_cap_below_bf16() -> bool:
    """Whether ONEDNN_MAX_CPU_ISA caps oneDNN below its bf16 kernels: bf16 is then emulated
    even on a CPU that has AMX, exactly as on an AVX2-only CPU. This is also how a machine of
    one kind runs the code paths of the other (`ONEDNN_MAX_CPU_ISA=AVX2 pytest`)."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISAS


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
        """The model's 4-D weights and buffers in this policy's memory format, with exactly
        that format's strides (in place).

        `Module.to(memory_format=...)` leaves a tensor alone when it already counts as being
        in the format, and a 1x1 conv weight counts as both: after a channels-last fit it kept
        channels-last strides, one loaded from the prefix cache did not, and the next fit's
        kernels then differed by those strides alone (a resumed probe no longer reproduced an
        uninterrupted one, bf16 channels-last). Fresh strides make a model's numerics depend on
        its values only."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                if t.dim() == 4 and t.stride() != _strides(t.shape, fmt):
                    t.data = t.data.clone(memory_format=fmt)
        return model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def guarded(self, model: nn.Module) -> Iterator[None]:
        """Inside: `model`'s convs avoid the CPU kernel bugs this policy would meet (see
        `seqsearch.kernel_guards`); the model is left as it was on exit."""
        from seqsearch.kernel_guards import guard_convs

        with guard_convs(model, self.device_type, bf16=self.dtype is not None,
                         channels_last=self.channels_last):
            yield


CONTIGUOUS = Policy("cpu", None, False)


def _strides(shape: torch.Size, fmt: torch.memory_format) -> tuple[int, ...]:
    return torch.empty(shape, device="meta", memory_format=fmt).stride()


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
        # CUDA only. On an AMX CPU (1 thread) channels-last made fit 1.18x a plain fp32 loop in
        # fp32 and 2.07x in bf16 (1.72x bf16 contiguous; docs/precision.md), but under bf16
        # channels-last a probe killed and resumed no longer reproduced an uninterrupted one
        # (tests/test_probe.py, cause not found), and with AVX2 kernels its backward can corrupt
        # the heap (seqsearch.kernel_guards): opt in with memory_format: channels_last.
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
