"""The runtimes a `model.onnx` is measured in: onnxruntime (a dependency) and OpenVINO (the
`openvino` extra), behind one small interface: build a runner for a file, batch size and
thread count; say which operators the runtime really executes in integers.

Both read the same file as written: OpenVINO's `Core.read_model` takes onnxruntime's QDQ
graph and runs each quantized convolution as a u8 kernel where it can. OpenVINO's CPU plugin
runs float layers in bf16 by default on CPUs that have it (AMX, AVX-512 BF16); every session
here pins `INFERENCE_PRECISION_HINT` to f32, so the fp32 baseline is fp32 and the float parts of
the int8 file are what the graph says."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqsearch.errors import SeqsearchError

RUNTIMES = ("onnxruntime", "openvino")
CHOICES = (*RUNTIMES, "all")
INSTALL = {"onnxruntime": "pip install onnxruntime",
           "openvino": "pip install 'seqsearch[openvino]' (or pip install openvino)"}

Runner = Callable[[np.ndarray], np.ndarray]


def available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def version(name: str) -> str | None:
    """The installed runtime's version, or None when it is missing."""
    if not available(name):
        return None
    mod = importlib.import_module(name)
    return str(getattr(mod, "__version__", "unknown"))


def missing_line(name: str) -> str:
    return f"{name} is not installed: {INSTALL[name]}"


def resolve(choice: str, *, say: Callable[[str], None] | None = None) -> list[str]:
    """The runtimes to measure for `--runtime CHOICE`: `all` is every installed one (a
    missing one said in one line through `say`); a named one that is missing is an error."""
    if choice not in CHOICES:
        raise SeqsearchError(f"--runtime {choice!r}: use one of {', '.join(CHOICES)}")
    if choice != "all":
        if not available(choice):
            raise SeqsearchError(missing_line(choice))
        return [choice]
    found = [r for r in RUNTIMES if available(r)]
    for r in RUNTIMES:
        if r not in found and say is not None:
            say(f"{missing_line(r)}; measuring {', '.join(found) or 'nothing'} only")
    if not found:
        raise SeqsearchError("no runtime installed: " + "; ".join(INSTALL.values()))
    return found


def session(path: Path, threads: int, *, fuse_qdq: bool = True) -> Any:
    """An onnxruntime CPU session; `fuse_qdq=False` keeps Q/DQ as written (float kernels on
    dequantized values: the graph's own semantics, no integer kernels)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not fuse_qdq:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_runner(path: Path, threads: int, fuse_qdq: bool) -> Runner:

    sess = session(path, threads, fuse_qdq=fuse_qdq)
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {name: x})[0])

    return run


def ov_config(threads: int) -> dict[str, Any]:
    """One stream, `threads` inference threads, fp32 float layers (not bf16), no pinning (a
    shared machine: a pinned thread waits for its core)."""
    return {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False}


def _ov_compiled(path: Path, threads: int, batch: int | None) -> Any:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if batch is not None:  # a static batch: OpenVINO's fastest path for a fixed shape
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        model.reshape({model.inputs[0]: shape})
    return core.compile_model(model, "CPU", ov_config(threads))


def _ov_runner(path: Path, threads: int, batch: int | None) -> Runner:
    compiled = _ov_compiled(path, threads, batch)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data)  # a copy: the buffer is reused

    return run


def runner(name: str, path: Path, threads: int, *, batch: int | None = None,
           fuse_qdq: bool = True) -> Runner:
    """A callable running `path` in runtime `name`: images in, logits out. `batch` fixes the
    batch size where the runtime gains by it (OpenVINO); `fuse_qdq=False` (onnxruntime only)
    keeps Q/DQ as written: float kernels on dequantized values."""
    if name == "onnxruntime":
        return _ort_runner(path, threads, fuse_qdq)
    if name == "openvino":
        if not fuse_qdq:
            raise ValueError("OpenVINO has no switch for its int8 kernels")
        return _ov_runner(path, threads, batch)
    raise ValueError(f"unknown runtime {name!r}")


def predictions(name: str, path: Path, images: np.ndarray, batch: int = 256, *,
                fuse_qdq: bool = True) -> np.ndarray:
    """argmax of the logits of `path` in runtime `name` over `images`."""
    run = runner(name, path, 1, fuse_qdq=fuse_qdq)
    return np.concatenate([run(np.ascontiguousarray(images[i:i + batch])).argmax(axis=1)
                           for i in range(0, len(images), batch)])


CONV_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def ov_executed(path: Path, threads: int = 1) -> dict[str, Any]:
    """The layers OpenVINO's runtime model executes and in which precision: integer
    (u8/i8) vs float conv/matmul layers, and the kernels chosen (e.g. `jit_avx2_I8`,
    `brgconv_avx512_amx_I8`). Layers inside an `If` branch are not listed by the runtime
    model; the `If` itself is counted."""
    rt = _ov_compiled(path, threads, 1).get_runtime_model()
    integer: Counter[str] = Counter()
    floating: Counter[str] = Counter()
    kernels: Counter[str] = Counter()
    every: Counter[str] = Counter()
    for op in rt.get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        every[kind] += 1
        if kind in CONV_LAYERS:
            (integer if prec in ("u8", "i8") else floating)[kind] += 1
            if "primitiveType" in info:
                kernels[info["primitiveType"].astype(str)] += 1
    return {"integer": dict(integer), "float": dict(floating), "kernels": dict(kernels),
            "all": dict(sorted(every.items()))}


def executed(name: str, path: Path, optimized_path: Path) -> dict[str, Any]:
    """Integer vs float conv/matmul operators the runtime really executes on `path`."""
    if name == "onnxruntime":
        from seqsearch.deploy.graph_pass import optimized_ops

        return optimized_ops(str(path), str(optimized_path))
    return ov_executed(path)


_OV_ISA_SCRIPT = """
import sys
from pathlib import Path

import numpy as np

from seqsearch.deploy.runtimes import _ov_compiled

path, src, dst, threads = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(src)
CHUNK = 256


def compiled(batch=None):
    return _ov_compiled(path, threads, batch)


def predict(batch_static):
    out, last = [], None
    for i in range(0, len(x), CHUNK):
        chunk = np.ascontiguousarray(x[i:i + CHUNK])
        if last is None or (batch_static and len(chunk) != last[1]):
            c = compiled(len(chunk) if batch_static else None)
            last = (c, len(chunk), c.create_infer_request())
        last[2].infer({0: chunk})
        logits = np.array(last[2].get_output_tensor(0).data)
        if len(logits) != len(chunk):
            return None, last[0], logits.shape
        out.append(logits.argmax(axis=1))
    return np.concatenate(out), last[0], None


got, comp, bad = predict(False)
mode = "dynamic"
if got is None:  # the dynamic batch returned the wrong number of rows: say so, try a static one
    mode = "static (the dynamic batch returned logits of shape %s)" % (tuple(bad),)
    print("MODE " + mode, flush=True)
    got, comp, bad = predict(True)
    if got is None:
        print("ERROR a static batch too returned logits of shape %s" % (tuple(bad),))
        sys.exit(3)
np.save(dst, got)
kernels = sorted({str(op.get_rt_info()["primitiveType"].astype(str))
                  for op in comp.get_runtime_model().get_ordered_ops()
                  if "primitiveType" in op.get_rt_info()
                  and "I8" in op.get_rt_info()["primitiveType"].astype(str)})
if mode == "dynamic":
    print("MODE " + mode)
print("KERNELS " + " ".join(kernels))
"""


@dataclass(frozen=True)
class IsaRun:
    """`path` in OpenVINO at a limited ISA: its predictions (None where it could not run),
    the int8 kernels chosen, and how it ran: "dynamic" (the file as written), "static (…)"
    (the dynamic batch gave the wrong number of rows, a fixed batch did not), or why it
    failed."""

    predictions: np.ndarray | None
    kernels: list[str]
    mode: str


def ov_predictions_at_isa(path: Path, images: np.ndarray, isa: str = "AVX2") -> IsaRun:
    """Predictions of `path` in OpenVINO with its oneDNN kernels limited to `isa`
    (`ONEDNN_MAX_CPU_ISA`, read when the CPU plugin loads: a child process), i.e. as on a CPU
    without VNNI, where u8 × s8 pairs are summed into a saturating int16; and the int8
    kernels it chose (e.g. `jit_avx2_I8`: the limit took). OpenVINO 2026.4 at AVX2 returns
    an empty batch for some files with a dynamic batch (a ResNet-20 with an exit and float
    activations): that is reported in `mode`, and a static batch tried instead."""
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(src, images.astype(np.float32))
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
        proc = subprocess.run([sys.executable, "-c", _OV_ISA_SCRIPT, str(path), str(src),
                               str(dst), "1"], capture_output=True, text=True, env=env)
        lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                     if line.startswith(("MODE ", "KERNELS ", "ERROR ")))
        if proc.returncode != 0 or not dst.is_file():
            err = proc.stderr.strip().splitlines()
            why = lines.get("ERROR") or (err[-1] if err else f"exit {proc.returncode}")
            tried = lines.get("MODE")
            return IsaRun(None, [], f"{tried}; then: {why}" if tried else why)
        return IsaRun(np.load(dst), lines.get("KERNELS", "").split(), lines.get("MODE", ""))
