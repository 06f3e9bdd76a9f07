"""Small helpers for one-line error messages."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (libraries raise multi-line messages; ours quote one line)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
