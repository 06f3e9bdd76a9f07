"""Per-variant statistics of summary.csv and the publish index compare each variant with its matched baseline."""

from __future__ import annotations

import pytest

from auto_quantize_model.reports.publish_index import index_row
from auto_quantize_model.reports.summary_csv import read_run_summary, summary_csv_text
from auto_quantize_model.reports.variant_stats import variant_stats
from auto_quantize_model.runs import summary_schema as S

MAPS = {"fp16": 0.30, "fp16-ft": 0.34, "qat-w4a16-ft": 0.33, "ptq-w4a16": 0.29}
BASELINES = {"fp16": None, "fp16-ft": "fp16", "qat-w4a16-ft": "fp16-ft", "ptq-w4a16": "fp16"}


def _rows(with_baseline_column: bool) -> list[dict]:
    rows = []
    for variant, value in MAPS.items():
        fmt = "float32" if variant.startswith("fp16") else "qcdq"
        row = {S.VARIANT: variant, S.SEED: 0, S.WEIGHTS_FORMAT: fmt, S.MAP50_95: value}
        if with_baseline_column:
            row.update({S.BASELINE: BASELINES[variant], S.CHECKPOINT_POLICY: "last", S.CHECKPOINT_EPOCH: 30})
        rows.append(row)
    return rows


def test_a_fine_tune_is_rated_against_fp16_ft_and_the_index_never_calls_fp16_ft_quantized(tmp_path):
    (tmp_path / S.SUMMARY_CSV).write_text(summary_csv_text(_rows(with_baseline_column=True)))
    stats = {s.variant: s for s in variant_stats(read_run_summary(tmp_path))}
    assert stats["qat-w4a16-ft"].baseline == "fp16-ft"
    assert stats["qat-w4a16-ft"].ratio_to_baseline == pytest.approx(0.33 / 0.34)
    assert stats["qat-w4a16-ft"].ratio_to_fp == pytest.approx(0.33 / 0.30)  # the unmatched ratio stays available
    assert stats["fp16"].baseline is None and stats["fp16"].ratio_to_baseline is None
    assert stats["ptq-w4a16"].ratio_to_baseline == pytest.approx(0.29 / 0.30)
    row = index_row(tmp_path)
    # fp16-ft (0.34) is a float control, not the best quantized variant; the best one is rated on its match.
    assert row.best_quantized == "qat-w4a16-ft 0.3300"
    assert (row.best_ratio, row.best_baseline) == (pytest.approx(0.33 / 0.34), "fp16-ft")


def test_a_summary_csv_from_before_the_baseline_column_compares_with_fp16(tmp_path):
    (tmp_path / S.SUMMARY_CSV).write_text(summary_csv_text(_rows(with_baseline_column=False)))
    stats = {s.variant: s for s in variant_stats(read_run_summary(tmp_path))}
    assert stats["qat-w4a16-ft"].baseline == "fp16"
    assert stats["qat-w4a16-ft"].ratio_to_baseline == pytest.approx(0.33 / 0.30)
