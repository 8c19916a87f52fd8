"""seqsearch: find the best order in which to compress a convolutional network."""

from __future__ import annotations

from seqsearch.errors import SeqsearchError

__version__ = "0.1.0"

__all__ = ["SeqsearchError", "__version__"]
