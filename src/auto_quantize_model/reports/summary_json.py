"""``summary.json``: whether a run root is complete, what it misses, and what it holds (keys in
:mod:`~auto_quantize_model.runs.summary_schema`); written by the summary stage, read by publishing and the index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.provenance import utc_now
from auto_quantize_model.utils.io import read_json

if TYPE_CHECKING:
    from auto_quantize_model.reports.summary_view import RunView


def summary_record(view: RunView, missing: Sequence[str]) -> dict[str, Any]:
    """What ``summary.json`` holds for ``view`` (``complete`` iff nothing is ``missing``)."""
    config = view.config or {}
    return {
        ss.COMPLETE: not missing,
        ss.MISSING: list(missing),
        ss.GENERATED_AT: utc_now(),
        ss.PROFILE: config.get("profile"),
        ss.MODEL: config.get("model"),
        ss.VARIANTS: [v.name for v in view.variants],
        ss.SEEDS: view.seeds,
    }


def read_summary_json(path: Path) -> dict[str, Any] | None:
    """``summary.json`` (the one reader of that file); ``None`` when it is absent, not JSON or not an object."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
