"""The index of published reports (``<dest>/README.md``), rebuilt from the report folders' own files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model.reports.publish_files import MANIFEST_NAME
from auto_quantize_model.reports.summary_csv import read_run_summary
from auto_quantize_model.reports.summary_json import read_summary_json
from auto_quantize_model.reports.variant_stats import VariantStats, format_spread, variant_label, variant_stats
from auto_quantize_model.runs import summary_schema as ss
from auto_quantize_model.runs.config import load_run_config
from auto_quantize_model.runs.run_root import SUMMARY_JSON, SUMMARY_MD, RunRoot
from auto_quantize_model.runs.variants import FP_FT_VARIANT
from auto_quantize_model.utils.io import read_json, write_text_atomic

INDEX_NAME = "README.md"


@dataclass
class IndexRow:
    """One published report as the index shows it; built from the report folder's own files."""

    run_id: str
    date: str | None = None
    profile: str | None = None
    model: str | None = None
    variants: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    partial: bool = False
    fp_map: str | None = None
    best_quantized: str | None = None
    best_ratio: float | None = None  # to the best quantized variant's matched baseline
    best_baseline: str | None = None
    onnx_sizes: str | None = None


def _read_manifest(report_dir: Path) -> Mapping[str, Any]:
    """The report's MANIFEST.json; ``{}`` when it is absent or broken (the index still lists the folder)."""
    path = report_dir / MANIFEST_NAME
    try:
        data = read_json(path) if path.is_file() else {}
    except ValueError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _read_config(report_dir: Path) -> Mapping[str, Any]:
    """The report's copy of run_config.yaml, read by the run config's own reader; ``{}`` when absent or broken."""
    try:
        return load_run_config(RunRoot(report_dir)) or {}
    except (ValueError, yaml.YAMLError):
        return {}


def index_row(report_dir: Path) -> IndexRow:
    """What the index shows for one report, read only from the report folder's copied files."""
    manifest = _read_manifest(report_dir)
    summary = read_summary_json(report_dir / SUMMARY_JSON) or {}
    config = _read_config(report_dir)
    row = IndexRow(report_dir.name, partial=bool(manifest.get("partial")))
    row.date = summary.get(ss.GENERATED_AT) or manifest.get("summary_generated_at")
    row.profile = summary.get(ss.PROFILE) or config.get("profile")
    row.model = summary.get(ss.MODEL) or config.get("model")
    row.variants = list(summary.get(ss.VARIANTS) or config.get("variants") or [])
    seeds = summary.get(ss.SEEDS) or config.get("seeds") or ([config["seed"]] if "seed" in config else [])
    row.seeds = list(seeds)
    _fill_metrics(row, variant_stats(read_run_summary(report_dir)))
    return row


def _fill_metrics(row: IndexRow, stats: Sequence[VariantStats]) -> None:
    labels = _labels(stats)
    fp_groups = [s for s in stats if s.variant == ss.FP_VARIANT and s.map50_95]
    # The FP reference is the float32 export when the run evaluated several FP formats (float32, float16).
    fp = next((s for s in fp_groups if s.weights_format == ss.FP_WEIGHTS_FORMAT), fp_groups[0] if fp_groups else None)
    quantized = [s for s in stats if s.variant not in (ss.FP_VARIANT, FP_FT_VARIANT) and s.map50_95]
    row.fp_map = format_spread(fp.map50_95) if fp else None
    if quantized:
        best = max(quantized, key=lambda s: s.map50_95.mean)
        row.best_quantized = f"{labels[best]} {format_spread(best.map50_95)}"
        row.best_ratio = best.ratio_to_baseline
        row.best_baseline = best.baseline
    sizes = [f"{labels[s]} {s.onnx_mb:.2f} MB" for s in stats if s.onnx_mb is not None]
    row.onnx_sizes = "; ".join(sizes) or None


def _labels(stats: Sequence[VariantStats]) -> dict[VariantStats, str]:
    """The variant's name, with its weights format only where the variant has several."""
    formats = Counter(s.variant for s in stats)
    return {s: s.variant if formats[s.variant] == 1 or not s.weights_format else variant_label(s) for s in stats}


def _cell(value: Any) -> str:
    if value is None or value == []:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|")


def _date_text(iso: str | None) -> str | None:
    return iso[:16].replace("T", " ") + (" UTC" if iso.endswith(("Z", "+00:00")) else "") if iso else None


INDEX_HEADER = """# Published run reports

One folder per published run root, written by `scripts/cv-models/publish_run_report.py`
(`pixi run publish-report --run-root R`). This index is regenerated on every publish from the
reports' own `summary.json`, `summary.csv` and `run_config.yaml`; do not edit it by hand.
Each folder holds the run's `summary.md`, plots, CSVs, configs, metrics and export metadata;
weights, ONNX files, logs, images and TensorBoard events stay in the run root and are listed,
with sizes and sha256s, in the folder's `MANIFEST.json`.

Columns: mAP50-95 is the shared ONNX evaluator's (`summary.csv` `mAP50_95`), as mean ± sample
standard deviation over the seeds when there are several; "best quantized" is the quantized
variant with the highest mean and "ratio" its mean over the mean of its matched baseline's
float32 export (fp16-ft for a quantized fine-tune, fp16 otherwise; named in the cell); ONNX
sizes are means over seeds. Newest first (by the summary's generation time).
"""


INDEX_COLUMNS = (
    "run",
    "date",
    "profile",
    "model",
    "variants",
    "seeds",
    "FP16 mAP50-95",
    "best quantized (mAP50-95)",
    "ratio to its baseline",
    "ONNX sizes",
)


def render_index(rows: Sequence[IndexRow]) -> str:
    ordered = sorted(rows, key=lambda r: (r.date or "", r.run_id), reverse=True)
    lines = [INDEX_HEADER, "| " + " | ".join(INDEX_COLUMNS) + " |", "|" + "---|" * len(INDEX_COLUMNS)]
    for row in ordered:
        link = f"[{row.run_id}]({row.run_id}/{SUMMARY_MD})" + (" (partial)" if row.partial else "")
        cells = [
            link,
            _date_text(row.date),
            row.profile,
            row.model,
            row.variants,
            row.seeds,
            row.fp_map,
            row.best_quantized,
            f"{row.best_ratio:.4f} ({row.best_baseline})" if row.best_ratio is not None else None,
            row.onnx_sizes,
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    if not ordered:
        lines.append("| " + " | ".join(["(none yet)"] + ["—"] * (len(INDEX_COLUMNS) - 1)) + " |")
    return "\n".join(lines) + "\n"


def published_reports(dest: Path) -> list[Path]:
    """Report folders under ``dest``: visible folders holding a MANIFEST.json (staging folders are hidden)."""
    if not dest.is_dir():
        return []
    return sorted(
        p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )


def write_index(dest: Path) -> Path:
    """Regenerate ``dest/README.md``; left untouched when its content would not change."""
    index = Path(dest) / INDEX_NAME
    text = render_index([index_row(report) for report in published_reports(Path(dest))])
    if not index.is_file() or index.read_text(encoding="utf-8") != text:
        write_text_atomic(index, text)
    return index
