"""Per (variant, weights format) statistics of a run root's ``summary.csv`` rows: mean ± sample std over seeds,
ratio to the root's FP baseline and to the variant's matched baseline, mean ONNX size and latency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auto_quantize_model.reports.summary_csv import RunSummary, SummaryRow
from auto_quantize_model.runs import summary_schema as S


@dataclass(frozen=True)
class Spread:
    """Mean and sample std (ddof=1) over seeds; ``std`` is None for one seed."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class VariantStats:
    """One (run root, variant, weights format): accuracy over seeds, ratio to that root's FP, size and latency."""

    run_label: str
    run_root: Path
    variant: str
    weights_format: str
    seeds: tuple[int, ...]  # seeds with an mAP50-95
    map50_95: Spread | None
    map50: Spread | None
    val_map50_95_best: Spread | None
    ratio_to_fp: float | None  # mean mAP50-95 / mean FP mAP50-95 of the same run root
    baseline: str | None  # the matched baseline (summary.csv "baseline"; fp16 in files older than the column)
    ratio_to_baseline: float | None  # mean mAP50-95 / mean float32 mAP50-95 of that baseline
    onnx_mb: float | None  # mean over seeds, 1 MB = 1e6 bytes
    latency_ms_p50: float | None  # mean over seeds of the latency stage's median (ms)
    val_ann_sha256: str | None


def spread(values: Sequence[float]) -> Spread | None:
    """Mean and sample std of the present values, None when there are none."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(mean=statistics.fmean(values), std=std, n=len(values))


def _mean_or_none(values: Sequence[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def variant_stats(run: RunSummary) -> list[VariantStats]:
    """Per (variant, weights format) of one run root, FP first, then in file order."""
    groups: dict[tuple[str, str], list[SummaryRow]] = {}
    for row in run.rows:
        groups.setdefault((row.variant, row.weights_format), []).append(row)
    float32 = {
        variant: spread([r.map50_95 for r in rows if r.map50_95 is not None])
        for (variant, fmt), rows in groups.items()
        if fmt == S.FP_WEIGHTS_FORMAT
    }
    ordered = sorted(groups, key=lambda key: key != (S.FP_VARIANT, S.FP_WEIGHTS_FORMAT))
    return [_one_variant(run, key, groups[key], float32) for key in ordered]


def _baseline_of(variant: str, rows: list[SummaryRow]) -> str | None:
    """The rows' baseline column; a summary.csv from before that column compared everything with fp16."""
    named = next((r.baseline for r in rows if r.baseline), None)
    if named or any(r.checkpoint_policy for r in rows):  # a current file: an empty cell means "the baseline itself"
        return named
    return None if variant == S.FP_VARIANT else S.FP_VARIANT


def _ratio(accuracy: Spread | None, reference: Spread | None) -> float | None:
    return accuracy.mean / reference.mean if accuracy and reference and reference.mean > 0 else None


def _one_variant(
    run: RunSummary, key: tuple[str, str], rows: list[SummaryRow], float32: dict[str, Spread | None]
) -> VariantStats:
    evaluated = [r for r in rows if r.map50_95 is not None]
    accuracy = spread([r.map50_95 for r in evaluated])  # type: ignore[misc]
    baseline = _baseline_of(key[0], rows)
    onnx_bytes = _mean_or_none([r.onnx_bytes for r in evaluated] or [r.onnx_bytes for r in rows])
    shas = sorted({r.val_ann_sha256 for r in rows if r.val_ann_sha256})
    return VariantStats(
        run_label=run.label,
        run_root=run.root,
        variant=key[0],
        weights_format=key[1],
        seeds=tuple(sorted(r.seed for r in evaluated if r.seed is not None)),
        map50_95=accuracy,
        map50=spread([r.map50 for r in evaluated if r.map50 is not None]),
        val_map50_95_best=spread([r.val_map50_95_best for r in rows if r.val_map50_95_best is not None]),
        ratio_to_fp=_ratio(accuracy, float32.get(S.FP_VARIANT)),
        baseline=baseline,
        ratio_to_baseline=_ratio(accuracy, float32.get(baseline)) if baseline else None,
        onnx_mb=onnx_bytes / 1e6 if onnx_bytes is not None else None,
        latency_ms_p50=_mean_or_none([r.latency_ms_p50 for r in evaluated]),
        val_ann_sha256=";".join(shas) or None,
    )


def variant_label(stat: VariantStats) -> str:
    return f"{stat.variant} ({stat.weights_format})"


def format_spread(value: Spread | None, digits: int = 4) -> str:
    """``mean ± std`` (``mean`` alone for one seed, "—" for none)."""
    if value is None:
        return "—"
    std = f" ± {value.std:.{digits}f}" if value.std is not None else ""
    return f"{value.mean:.{digits}f}{std}"
