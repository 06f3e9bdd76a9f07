"""summary.csv: the summary stage's writer and the one reader compare, publish and the index use
(reports/summary_csv.py)."""

from __future__ import annotations

from auto_quantize_model.reports.summary_csv import read_run_summary, summary_csv_text
from auto_quantize_model.runs import summary_schema as S

SHA = "a" * 64


def _row(variant, seed, fmt, map50_95, onnx_bytes=None, latency=None):
    return {
        S.VARIANT: variant,
        S.SEED: seed,
        S.WEIGHTS_FORMAT: fmt,
        S.MAP50_95: map50_95,
        S.MAP50: None if map50_95 is None else map50_95 * 2,
        S.VAL_MAP50_95_BEST: None,
        S.ONNX: f"seed-{seed}/onnx/m-{variant}-{fmt}.onnx",
        S.ONNX_BYTES: onnx_bytes,
        S.LATENCY_MS_P50: latency,
        S.VAL_ANN_SHA256: SHA,
    }


def test_the_reader_reads_back_what_the_summary_stage_writes(tmp_path):
    rows = [_row("fp16", 0, "float32", 0.25, 8_900_000, 10.5), _row("qat-w4a16", 0, "int4", None, 2_400_000)]
    (tmp_path / S.SUMMARY_CSV).write_text(summary_csv_text(rows))
    summary = read_run_summary(tmp_path)
    fp, qat = summary.rows
    assert (fp.variant, fp.seed, fp.weights_format, fp.map50_95, fp.map50) == ("fp16", 0, "float32", 0.25, 0.5)
    assert (fp.onnx_bytes, fp.latency_ms_p50, fp.val_ann_sha256) == (8_900_000, 10.5, SHA)
    assert qat.map50_95 is None and qat.val_map50_95_best is None and qat.onnx_bytes == 2_400_000
    assert summary.problems == (
        f"{tmp_path / S.SUMMARY_CSV}: qat-w4a16 (int4) seed 0: no mAP50_95 yet (not evaluated)",
    )


def test_unreadable_numbers_are_reported_per_row(tmp_path):
    text = summary_csv_text([_row("fp16", 0, "float32", 0.2), _row("fp16", 1, "float32", 0.22)])
    (tmp_path / S.SUMMARY_CSV).write_text(text + f"ptq-w4a16,0,qcdq,oops,,,,,,{SHA}\n")
    summary = read_run_summary(tmp_path)
    assert len(summary.rows) == 2
    assert any("summary.csv:4: not a number" in p for p in summary.problems)
