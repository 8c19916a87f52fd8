"""Compression stages as plug-ins: D (distill), P (prune), Q (quantize), E (early_exit), and
L (lowrank), which studies opt into (the default stays DPQE)."""

from __future__ import annotations

from seqsearch.stages.base import (
    Range,
    Stage,
    StageContext,
    StageInfo,
    get_stage,
    list_stages,
    register_stage,
    resolve_params,
    unregister_stage,
)
from seqsearch.stages.distill import Distill
from seqsearch.stages.early_exit import EarlyExit
from seqsearch.stages.lowrank import LowRank
from seqsearch.stages.prune import Prune
from seqsearch.stages.quantize import Quantize

for _stage in (Distill(), Prune(), Quantize(), EarlyExit(), LowRank()):
    register_stage(_stage)

__all__ = [
    "Range",
    "Stage",
    "StageContext",
    "StageInfo",
    "get_stage",
    "list_stages",
    "register_stage",
    "resolve_params",
    "unregister_stage",
]
