"""The one error type for user mistakes: the CLI prints its message on one line, exit code 2."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line of text (or its type name), for one-line error messages."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


class SeqsearchError(Exception):
    """A user mistake (bad name, bad file, bad value). The message names what and what is right."""
