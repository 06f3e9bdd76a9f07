"""The summary of a run root: ``summary.md`` (for people), ``summary.csv`` and ``summary.json`` (for tools).

``summary.md`` opens with the headline: per variant and seed, the ONNX-evaluator mAP50-95, mean ± std
over seeds, the ratio of means to the FP baseline, a paired bootstrap 95% CI of the difference
(same val-image resample for both models, from the saved detections), size and latency ratios, and
one verdict line per quantized variant that does not claim more than the interval supports.

Numbers of the shared ONNX evaluator (``metrics.json``) and of Ultralytics' in-training validator
(``results.csv``) are kept in separate tables: different pipelines, not comparable cell by cell.
Everything is read from the run root through :class:`~auto_quantize_model.runs.run_root.RunRoot` and the
producers' key constants (:mod:`metrics_keys`, :mod:`summary_schema`); a half-finished run root gives
a summary that names what is missing, and ``summary.json`` says ``complete: false`` then; so does a root
holding an artifact built from something that has changed since, or scored on part of the val set
(:mod:`auto_quantize_model.reports.freshness`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auto_quantize_model.reports.freshness import stale_items
from auto_quantize_model.reports.plots import write_map_comparison_plot
from auto_quantize_model.reports.summary_csv import summary_csv_text
from auto_quantize_model.reports.summary_json import summary_record
from auto_quantize_model.reports.summary_sections import (
    section_dataset,
    section_detail,
    section_header,
    section_headline,
    section_missing,
    section_onnx,
    section_precision,
    section_stages,
    section_training,
    section_validator,
)
from auto_quantize_model.reports.summary_view import load_view, missing_items, summary_rows
from auto_quantize_model.reports.tensorboard import write_onnx_tensorboard
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state
from auto_quantize_model.utils.io import write_json_atomic, write_text_atomic


@dataclass(frozen=True)
class SummaryResult:
    """Where the summary went and what it found missing (``complete`` iff nothing is)."""

    path: Path
    missing: list[str]
    csv_path: Path
    json_path: Path

    @property
    def complete(self) -> bool:
        return not self.missing


def write_summary(run_root: RunRoot) -> SummaryResult:
    """Write ``summary.md``, ``summary.csv``, ``summary.json`` and the mAP plot (each atomically)."""
    view = load_view(run_root)
    state = load_run_state(run_root)
    plot = write_map_comparison_plot(view, run_root.map_comparison_png)
    headline, _ = section_headline(view)
    sections = (
        section_precision(view)
        + section_onnx(view)
        + section_validator(view)
        + section_detail(view)
        + section_training(view, plot)
        + section_dataset(view)
        + section_stages(view, state)
    )
    missing = missing_items(view, state) + stale_items(view, state)
    text = "\n".join(section_header(view, missing) + headline + sections + section_missing(missing)).rstrip() + "\n"
    write_text_atomic(run_root.summary_csv, summary_csv_text(summary_rows(view)))
    write_json_atomic(run_root.summary_json, summary_record(view, missing))
    write_text_atomic(run_root.summary_md, text)  # its presence means summary.csv and summary.json are current
    write_onnx_tensorboard(view)
    return SummaryResult(run_root.summary_md, missing, run_root.summary_csv, run_root.summary_json)
