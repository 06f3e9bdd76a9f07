"""The evaluator's input error: bad files, model layout or class list; its message names the file and the fix."""

from __future__ import annotations


class EvaluationInputError(ValueError):
    """Bad input to the evaluator (files, model layout, class list); the message names the file and the fix."""
