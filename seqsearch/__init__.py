"""seqsearch: find the best order in which to compress a convolutional network.

The Python API (docs/api.md): `run_study` runs a study from a dict or file with a model object
and your own data, `read_results` reads a study folder's verdicts, export and Pareto points as
plain data, `load_model` loads a compressed model for inference with its exits applied at τ.
They load lazily, so `import seqsearch` (and the command line's start) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seqsearch.errors import SeqsearchError
from seqsearch.version import __version__

__all__ = ["SeqsearchError", "StudyResult", "__version__", "load_model", "prepare_study",
           "read_results", "run_study"]

_API = ("StudyResult", "load_model", "prepare_study", "read_results", "run_study")

if TYPE_CHECKING:
    from seqsearch.api import StudyResult, load_model, prepare_study, read_results, run_study


def __getattr__(name: str) -> Any:
    if name in _API:
        from seqsearch import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqsearch' has no attribute {name!r}")
