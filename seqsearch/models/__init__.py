"""Model registry: built-in CNN families and user models by spec."""

from __future__ import annotations

from seqsearch.models.base import exit_points_of
from seqsearch.models.registry import (
    build_model,
    create_model,
    list_models,
    register_model,
    resolve_factory,
)

__all__ = [
    "build_model", "create_model", "exit_points_of", "list_models", "register_model",
    "resolve_factory",
]
