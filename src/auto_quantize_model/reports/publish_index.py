"""The index of published reports (``<dest>/README.md``), rebuilt from the report folders' own files."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auto_quantize_model.reports.publish_files import MANIFEST_NAME
from auto_quantize_model.runs.run_root import FP16_STAGE, RunRoot
from auto_quantize_model.utils.io import read_json, write_text_atomic

INDEX_NAME = "README.md"
# A report folder mirrors the run root's layout, so RunRoot names its files too.
SUMMARY_MD_NAME = RunRoot(Path("/")).summary_md.name
FP_REFERENCE_FORMAT = "float32"


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
    best_ratio: float | None = None
    onnx_sizes: str | None = None


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _read_json_mapping(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ValueError:
        return {}
    return data if isinstance(data, Mapping) else {}


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class VariantStats:
    """Mean (and spread) of one (variant, weights_format) over the seeds in summary.csv."""

    label: str
    variant: str
    weights_format: str
    maps: tuple[float, ...]
    onnx_bytes: tuple[float, ...]

    @property
    def mean_map(self) -> float | None:
        return statistics.fmean(self.maps) if self.maps else None

    def map_text(self) -> str | None:
        if not self.maps:
            return None
        spread = f" ± {statistics.stdev(self.maps):.4f}" if len(self.maps) > 1 else ""
        return f"{self.mean_map:.4f}{spread}"


def variant_stats(rows: Sequence[Mapping[str, str]]) -> list[VariantStats]:
    """Group summary.csv rows by (variant, weights_format) in file order; label by variant alone when unique."""
    groups: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault((row.get("variant") or "?", row.get("weights_format") or ""), []).append(row)
    formats_per_variant: dict[str, int] = {}
    for variant, _ in groups:
        formats_per_variant[variant] = formats_per_variant.get(variant, 0) + 1
    stats = []
    for (variant, weights_format), members in groups.items():
        label = variant if formats_per_variant[variant] == 1 or not weights_format else f"{variant} ({weights_format})"
        maps = tuple(v for v in (_number(m.get("mAP50_95")) for m in members) if v is not None)
        sizes = tuple(v for v in (_number(m.get("onnx_bytes")) for m in members) if v is not None)
        stats.append(VariantStats(label, variant, weights_format, maps, sizes))
    return stats


def _read_summary_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def index_row(report_dir: Path) -> IndexRow:
    """What the index shows for one report, read only from the report folder's copied files."""
    manifest = _read_json_mapping(report_dir / MANIFEST_NAME)
    summary = _read_json_mapping(report_dir / RunRoot(report_dir).summary_json.name)
    config = _read_yaml(report_dir / RunRoot(report_dir).run_config.name)
    row = IndexRow(report_dir.name, partial=bool(manifest.get("partial")))
    row.date = summary.get("generated_at") or manifest.get("summary_generated_at")
    row.profile = summary.get("profile") or config.get("profile")
    row.model = summary.get("model") or config.get("model")
    row.variants = list(summary.get("variants") or config.get("variants") or [])
    seeds = summary.get("seeds") or config.get("seeds") or ([config["seed"]] if "seed" in config else [])
    row.seeds = list(seeds)
    stats = variant_stats(_read_summary_csv(report_dir / RunRoot(report_dir).summary_csv.name))
    _fill_metrics(row, stats)
    return row


def _fill_metrics(row: IndexRow, stats: Sequence[VariantStats]) -> None:
    fp_groups = [s for s in stats if s.variant == FP16_STAGE and s.maps]
    # The FP reference is the float32 export when the run evaluated several FP formats (float32, float16).
    fp = next((s for s in fp_groups if s.weights_format == FP_REFERENCE_FORMAT), fp_groups[0] if fp_groups else None)
    quantized = [s for s in stats if s.variant != FP16_STAGE and s.maps]
    row.fp_map = fp.map_text() if fp else None
    if quantized:
        best = max(quantized, key=lambda s: s.mean_map or 0.0)
        row.best_quantized = f"{best.label} {best.map_text()}"
        row.best_ratio = best.mean_map / fp.mean_map if fp and fp.mean_map else None
    sizes = [f"{s.label} {statistics.fmean(s.onnx_bytes) / 1e6:.2f} MB" for s in stats if s.onnx_bytes]
    row.onnx_sizes = "; ".join(sizes) or None


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
variant with the highest mean and "ratio" its mean over the FP16 mean; ONNX sizes are means
over seeds. Newest first (by the summary's generation time).
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
    "ratio to FP16",
    "ONNX sizes",
)


def render_index(rows: Sequence[IndexRow]) -> str:
    ordered = sorted(rows, key=lambda r: (r.date or "", r.run_id), reverse=True)
    lines = [INDEX_HEADER, "| " + " | ".join(INDEX_COLUMNS) + " |", "|" + "---|" * len(INDEX_COLUMNS)]
    for row in ordered:
        link = f"[{row.run_id}]({row.run_id}/{SUMMARY_MD_NAME})" + (" (partial)" if row.partial else "")
        cells = [
            link,
            _date_text(row.date),
            row.profile,
            row.model,
            row.variants,
            row.seeds,
            row.fp_map,
            row.best_quantized,
            row.best_ratio,
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
