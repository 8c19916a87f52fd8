"""Deployment: the compressed network as a plain ONNX file (real pruned shapes, BatchNorm
folded, int8 Q/DQ layers, exits as `If`) and its measured cost in onnxruntime and OpenVINO
(the `openvino` extra).

Needs onnx, onnxruntime and onnxscript (dependencies of the package); where an install lacks
one, `missing()` says which, so callers say one line instead of failing."""

from __future__ import annotations

import importlib.util

DEPLOY_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install onnx onnxruntime onnxscript"


def missing() -> list[str]:
    """The deployment packages that cannot be imported here."""
    return [p for p in DEPLOY_PACKAGES if importlib.util.find_spec(p) is None]


def missing_line(what: str) -> str | None:
    """One line naming what to install, or None when everything is there."""
    gone = missing()
    if not gone:
        return None
    return f"{what} needs {', '.join(gone)}: {INSTALL_HINT}"


__all__ = ["DEPLOY_PACKAGES", "INSTALL_HINT", "missing", "missing_line"]
