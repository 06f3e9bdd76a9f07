"""``summary.csv``, one row per (variant, seed, weights format), columns from :mod:`summary_schema`: the rows the
summary stage writes (:func:`summary_rows`) and the one reader every other module uses (:func:`read_run_summary`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.runs import summary_schema as ss


def summary_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ``summary.csv`` text of ``rows`` (empty cells for missing values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ss.SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


_REQUIRED_COLUMNS = (ss.VARIANT, ss.SEED, ss.WEIGHTS_FORMAT, ss.MAP50_95)


@dataclass(frozen=True)
class SummaryRow:
    """One row of a run root's ``summary.csv``; ``None`` where the cell is empty."""

    variant: str
    seed: int | None
    weights_format: str
    map50_95: float | None
    map50: float | None
    val_map50_95_best: float | None
    onnx: str | None
    onnx_bytes: int | None
    latency_ms_p50: float | None
    val_ann_sha256: str | None
    baseline: str | None = None  # columns added with issue 21: absent from older summary.csv files
    checkpoint_policy: str | None = None
    checkpoint_epoch: int | None = None


@dataclass(frozen=True)
class RunSummary:
    """A run root as read: its rows (empty when unreadable) and what is wrong or missing in it."""

    root: Path
    label: str
    rows: tuple[SummaryRow, ...]
    problems: tuple[str, ...]

    @property
    def usable(self) -> bool:
        """True when at least one row holds an mAP50-95."""
        return any(row.map50_95 is not None for row in self.rows)

    @property
    def val_shas(self) -> frozenset[str]:
        """The val annotation hashes its rows name (normally exactly one)."""
        return frozenset(row.val_ann_sha256 for row in self.rows if row.val_ann_sha256)


def _cell(row: dict[str, str | None], key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def _number(row: dict[str, str | None], key: str, kind: type = float) -> float | int | None:
    """Parse a numeric cell; empty, nan and unparsable cells are missing (the caller reports the bad ones)."""
    value = _cell(row, key)
    if value is None:
        return None
    number = float(value)  # ValueError for garbage: caught per row by the reader
    if math.isnan(number):
        return None
    return int(number) if kind is int else number


def _parse_row(raw: dict[str, str | None]) -> SummaryRow:
    return SummaryRow(
        variant=_cell(raw, ss.VARIANT) or "",
        seed=_number(raw, ss.SEED, int),  # type: ignore[arg-type]
        weights_format=_cell(raw, ss.WEIGHTS_FORMAT) or "",
        map50_95=_number(raw, ss.MAP50_95),
        map50=_number(raw, ss.MAP50),
        val_map50_95_best=_number(raw, ss.VAL_MAP50_95_BEST),
        onnx=_cell(raw, ss.ONNX),
        onnx_bytes=_number(raw, ss.ONNX_BYTES, int),  # type: ignore[arg-type]
        latency_ms_p50=_number(raw, ss.LATENCY_MS_P50),
        val_ann_sha256=_cell(raw, ss.VAL_ANN_SHA256),
        baseline=_cell(raw, ss.BASELINE),
        checkpoint_policy=_cell(raw, ss.CHECKPOINT_POLICY),
        checkpoint_epoch=_number(raw, ss.CHECKPOINT_EPOCH, int),  # type: ignore[arg-type]
    )


def read_run_summary(root: str | Path, label: str | None = None) -> RunSummary:
    """Read ``<root>/summary.csv``; never raises for a missing or broken file, it lists the problem instead."""
    root = Path(root)
    label = label or root.name
    path = root / ss.SUMMARY_CSV
    if not root.is_dir():
        return RunSummary(root, label, (), (f"{root}: run root not found",))
    if not path.is_file():
        return RunSummary(root, label, (), (f"{path}: missing (run the summary stage, or the run is not finished)",))
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        raw_rows = list(reader)
        columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return RunSummary(root, label, (), (f"{path}: unreadable ({error})",))
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        return RunSummary(root, label, (), (f"{path}: no column(s) {missing}; rewrite it with the summary stage",))
    rows, problems = [], []
    for line, raw in enumerate(raw_rows, start=2):
        try:
            rows.append(_parse_row(raw))
        except ValueError as error:
            problems.append(f"{path}:{line}: not a number ({error}); row ignored")
    return RunSummary(root, label, tuple(rows), tuple(problems) + _half_finished(path, rows))


def _half_finished(path: Path, rows: list[SummaryRow]) -> tuple[str, ...]:
    """What a half-finished run root lacks: unevaluated rows and a missing FP baseline."""
    notes = [
        f"{path}: {row.variant} ({row.weights_format}) seed {row.seed}: no mAP50_95 yet (not evaluated)"
        for row in rows
        if row.map50_95 is None
    ]
    if not rows:
        notes.append(f"{path}: no rows yet")
    elif not any(_is_fp(row) and row.map50_95 is not None for row in rows):
        notes.append(f"{path}: no evaluated FP baseline ({ss.FP_VARIANT}, {ss.FP_WEIGHTS_FORMAT}); ratios are n/a")
    return tuple(notes)


def _is_fp(row: SummaryRow) -> bool:
    return row.variant == ss.FP_VARIANT and row.weights_format == ss.FP_WEIGHTS_FORMAT
