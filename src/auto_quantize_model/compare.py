"""Line up several run roots: one table of every variant's accuracy, size and latency, and an mAP-vs-size plot.

Reads each run root's ``summary.csv`` (columns: :mod:`auto_quantize_model.runs.summary_schema`) and writes into ``out``:

* ``comparison.md``: variants x run roots (mAP50-95 mean +- sample std over seeds, ratio to that root's FP
  baseline), then every number per (run root, variant, weights format) and the notes;
* ``comparison.csv``: the per-(run root, variant, weights format) numbers, machine-readable;
* ``map_vs_size.png``: mAP50-95 against ONNX MB for every variant of every root, the Pareto front marked
  (highest mAP50-95 for the fewest MB).

Numbers from different val annotation files are not comparable, so run roots whose ``val_ann_sha256`` differ are
refused unless ``allow_different_val``. A run root without ``summary.csv``, with an unreadable one or with
unevaluated rows is reported in ``comparison.md``, not fatal. Needs only the stdlib and matplotlib (Agg).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auto_quantize_model.reports.plots import plot_map_vs_size
from auto_quantize_model.reports.summary_csv import RunSummary, read_run_summary
from auto_quantize_model.reports.variant_stats import Spread, VariantStats, format_spread, variant_label, variant_stats
from auto_quantize_model.runs import summary_schema as S
from auto_quantize_model.utils.io import write_text_atomic

COMPARISON_MD = "comparison.md"
COMPARISON_CSV = "comparison.csv"
MAP_VS_SIZE_PNG = "map_vs_size.png"
COMPARISON_COLUMNS = (
    "run_root",
    "run_root_path",
    "variant",
    "weights_format",
    "seeds",
    "n_evaluated",
    "mAP50_95_mean",
    "mAP50_95_std",
    "mAP50_mean",
    "mAP50_std",
    "val_mAP50_95_best_mean",
    "val_mAP50_95_best_std",
    "ratio_to_fp",
    "onnx_mb",
    "latency_ms_p50",
    "val_ann_sha256",
    "pareto",
)
_LEGEND = (
    "mAP is the ONNX evaluator's COCO mAP50-95 (pycocotools on the exported models), mean ± sample std over "
    "training seeds (n = seeds evaluated). Ratio to FP = mean mAP50-95 / mean mAP50-95 of that run root's "
    f"{S.FP_VARIANT} ({S.FP_WEIGHTS_FORMAT}) baseline. ONNX MB = file size / 1e6. Latency = the evaluator's "
    "per-image p50 of session.run, mean over seeds; latencies measured on different machines are not comparable."
)


class CompareInputError(ValueError):
    """Run roots that cannot be compared (e.g. different val annotations); the message names them and the fix."""


@dataclass(frozen=True)
class ComparisonResult:
    """What :func:`compare_runs` wrote and what it found."""

    out_dir: Path
    markdown_path: Path
    csv_path: Path
    plot_path: Path | None  # None when no variant has both mAP50-95 and ONNX size
    variants: tuple[VariantStats, ...]
    pareto: tuple[bool, ...]  # per variant: on the mAP-vs-MB Pareto front
    runs: tuple[RunSummary, ...]
    notes: tuple[str, ...]  # everything reported instead of failing


# --- reading -------------------------------------------------------------------------------------


def _labels(roots: Sequence[Path]) -> list[str]:
    """Short run-root labels: the folder name, or the path where two roots share a name."""
    names = [Path(r).name or str(r) for r in roots]
    return [str(r) if names.count(n) > 1 else n for r, n in zip(roots, names)]


# --- checks --------------------------------------------------------------------------------------


def check_same_val_annotations(runs: Sequence[RunSummary], allow_different: bool) -> list[str]:
    """Refuse roots scored on different val annotations (by sha256); return notes about roots that cannot tell."""
    known = {run.label: run.val_shas for run in runs if run.val_shas}
    distinct = set().union(*known.values()) if known else set()
    notes = [
        f"{run.label}: no {S.VAL_ANN_SHA256} in summary.csv; its val set cannot be checked"
        for run in runs
        if run.rows and not run.val_shas
    ]
    if len(distinct) <= 1:
        return notes
    listing = "; ".join(f"{label}: {', '.join(sorted(s[:12] for s in shas))}" for label, shas in known.items())
    if not allow_different:
        raise CompareInputError(
            f"run roots were evaluated on different val annotations (sha256 prefix per root: {listing}); "
            "their mAPs are not comparable. Re-evaluate on one annotation file, or pass --allow-different-val"
        )
    return [f"val annotations differ between run roots ({listing}); compared anyway (--allow-different-val)", *notes]


# --- statistics ----------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For ``(size, accuracy)`` points: True where no other point is at most as big and at least as accurate, and
    strictly better in one of the two. Points with a missing coordinate are never on the front."""
    complete = [(i, s, a) for i, (s, a) in enumerate(points) if s is not None and a is not None]
    front = [False] * len(points)
    for i, size, acc in complete:
        front[i] = not any(s <= size and a >= acc and (s < size or a > acc) for j, s, a in complete if j != i)
    return front


# --- writing -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _matrix_table(runs: Sequence[RunSummary], stats: Sequence[VariantStats]) -> list[str]:
    """Variants down, run roots across: mAP50-95 mean ± std (n seeds), × ratio to that root's FP."""
    keys = list(dict.fromkeys((s.variant, s.weights_format) for s in stats))
    usable = [run for run in runs if run.usable]
    by_cell = {(s.run_label, s.variant, s.weights_format): s for s in stats}
    lines = [
        "| variant (weights) | " + " | ".join(run.label for run in usable) + " |",
        "|---|" + "---|" * len(usable),
    ]
    for variant, weights in keys:
        cells = []
        for run in usable:
            stat = by_cell.get((run.label, variant, weights))
            if stat is None or stat.map50_95 is None:
                cells.append("—")
                continue
            ratio = f", ×{stat.ratio_to_fp:.3f} FP" if stat.ratio_to_fp is not None else ""
            cells.append(f"{format_spread(stat.map50_95)} (n={stat.map50_95.n}{ratio})")
        lines.append(f"| {variant} ({weights}) | " + " | ".join(cells) + " |")
    return lines


def _detail_table(stats: Sequence[VariantStats], pareto: Sequence[bool]) -> list[str]:
    lines = [
        (
            "| run root | variant (weights) | seeds | mAP50-95 | mAP50 | val mAP50-95 best (Ultralytics) "
            "| ratio to FP | ONNX MB | latency p50 ms | Pareto |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stat, on_front in zip(stats, pareto):
        lines.append(
            f"| {stat.run_label} | {variant_label(stat)} | {','.join(map(str, stat.seeds)) or '—'} "
            f"| {format_spread(stat.map50_95)} | {format_spread(stat.map50)} | {format_spread(stat.val_map50_95_best)} "
            f"| {_fmt(stat.ratio_to_fp, 3)} | {_fmt(stat.onnx_mb, 2)} | {_fmt(stat.latency_ms_p50, 2)} "
            f"| {'yes' if on_front else ''} |"
        )
    return lines


def _runs_table(runs: Sequence[RunSummary]) -> list[str]:
    lines = ["| run root | path | val annotations sha256 | status |", "|---|---|---|---|"]
    for run in runs:
        shas = ", ".join(s[:12] for s in sorted(run.val_shas)) or "—"
        status = "compared" if run.usable else "not compared (see notes)"
        lines.append(f"| {run.label} | `{run.root}` | {shas} | {status} |")
    return lines


def render_markdown(
    runs: Sequence[RunSummary],
    stats: Sequence[VariantStats],
    pareto: Sequence[bool],
    notes: Sequence[str],
    plot: Path | None,
) -> str:
    """The text of ``comparison.md``."""
    lines = [
        f"# Comparison of {len(runs)} run roots",
        "",
        _LEGEND,
        "",
        *_runs_table(runs),
        "",
        "## mAP50-95 by variant and run root",
        "",
        *_matrix_table(runs, stats),
        "",
        "## All numbers",
        "",
        *_detail_table(stats, pareto),
        "",
    ]
    if plot is not None:
        lines += [
            "## mAP50-95 vs ONNX size",
            "",
            f"![mAP50-95 vs ONNX MB]({plot.name})",
            "",
            "Pareto front (no other variant is both smaller and more accurate): "
            + (", ".join(f"{s.run_label}/{variant_label(s)}" for s, p in zip(stats, pareto) if p) or "none"),
            "",
        ]
    lines += ["## Notes", ""] + ([f"- {note}" for note in notes] or ["- none"])
    return "\n".join(lines) + "\n"


def render_csv(stats: Sequence[VariantStats], pareto: Sequence[bool]) -> str:
    """The text of ``comparison.csv``: full float precision, empty cells for missing values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COMPARISON_COLUMNS)
    for stat, on_front in zip(stats, pareto):
        writer.writerow(
            [
                stat.run_label,
                str(stat.run_root),
                stat.variant,
                stat.weights_format,
                " ".join(map(str, stat.seeds)),
                len(stat.seeds),
                *_spread_cells(stat.map50_95),
                *_spread_cells(stat.map50),
                *_spread_cells(stat.val_map50_95_best),
                _csv_value(stat.ratio_to_fp),
                _csv_value(stat.onnx_mb),
                _csv_value(stat.latency_ms_p50),
                stat.val_ann_sha256 or "",
                int(on_front),
            ]
        )
    return buffer.getvalue()


def _csv_value(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _spread_cells(value: Spread | None) -> list[str]:
    return ["", ""] if value is None else [_csv_value(value.mean), _csv_value(value.std)]


def compare_runs(
    run_roots: Sequence[str | Path], out_dir: str | Path, *, allow_different_val: bool = False
) -> ComparisonResult:
    """Read every run root's ``summary.csv``; write ``comparison.md``, ``comparison.csv`` and ``map_vs_size.png``.

    Raises :class:`CompareInputError` (before writing anything) when run roots were scored on different val
    annotations and ``allow_different_val`` is False. Missing or half-finished run roots are listed in the notes.
    """
    if not run_roots:
        raise CompareInputError("no run roots given; pass one or more run root folders")
    roots = [Path(r) for r in run_roots]
    runs = [read_run_summary(root, label) for root, label in zip(roots, _labels(roots))]
    notes = check_same_val_annotations(runs, allow_different_val)
    notes += [problem for run in runs for problem in run.problems]
    notes += _seed_mismatch_notes(runs)
    stats = [stat for run in runs if run.usable for stat in variant_stats(run)]
    pareto = pareto_front([(s.onnx_mb, s.map50_95.mean if s.map50_95 else None) for s in stats])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_map_vs_size(stats, pareto, out / MAP_VS_SIZE_PNG)
    csv_path = write_text_atomic(out / COMPARISON_CSV, render_csv(stats, pareto))
    markdown = write_text_atomic(out / COMPARISON_MD, render_markdown(runs, stats, pareto, notes, plot))
    return ComparisonResult(out, markdown, csv_path, plot, tuple(stats), tuple(pareto), tuple(runs), tuple(notes))


def _seed_mismatch_notes(runs: Sequence[RunSummary]) -> list[str]:
    """A ratio of means over different seed sets mixes seed noise into the ratio: say where that happens."""
    notes = []
    for run in runs:
        if not run.usable:
            continue
        stats = variant_stats(run)
        fp = next((s for s in stats if (s.variant, s.weights_format) == (S.FP_VARIANT, S.FP_WEIGHTS_FORMAT)), None)
        for stat in stats:
            if fp is not None and stat is not fp and stat.seeds and stat.seeds != fp.seeds:
                notes.append(
                    f"{run.label}: {variant_label(stat)} evaluated seeds {list(stat.seeds)} but FP seeds "
                    f"{list(fp.seeds)}; its ratio to FP compares different seed sets"
                )
    return notes
