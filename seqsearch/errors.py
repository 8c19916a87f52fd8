"""The one error type for user mistakes: the CLI prints its message on one line, exit code 2."""

from __future__ import annotations


class SeqsearchError(Exception):
    """A user mistake (bad name, bad file, bad value). The message names what and what is right."""
