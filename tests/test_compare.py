"""Report across run roots (auto_quantize_model.compare and scripts/cv-models/compare_runs.py).

Each test writes small ``summary.csv`` files the way the summary stage does (columns from summary_schema).
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from auto_quantize_model.compare import (
    COMPARISON_COLUMNS,
    CompareInputError,
    compare_runs,
    pareto_front,
)
from auto_quantize_model.runs import summary_schema as S

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "scripts" / "cv-models" / "compare_runs.py"
SHA_A = "a" * 64
SHA_B = "b" * 64


def row(variant, seed, fmt, map50_95, *, map50=None, best=None, onnx_bytes=None, latency=None, sha=SHA_A):
    return {
        S.VARIANT: variant,
        S.SEED: seed,
        S.WEIGHTS_FORMAT: fmt,
        S.MAP50_95: map50_95,
        S.MAP50: map50,
        S.VAL_MAP50_95_BEST: best,
        S.ONNX: f"onnx/m-{variant}.onnx" if onnx_bytes else None,
        S.ONNX_BYTES: onnx_bytes,
        S.LATENCY_MS_P50: latency,
        S.VAL_ANN_SHA256: sha,
    }


def write_summary(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / S.SUMMARY_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=S.SUMMARY_COLUMNS)
        writer.writeheader()
        for entry in rows:
            writer.writerow({k: "" if v is None else v for k, v in entry.items()})
    return root


def two_seed_root(root: Path, sha: str = SHA_A) -> Path:
    """FP (float32, 8.9 MB) and QAT (qcdq, 2.4 MB) over seeds 0 and 1."""
    return write_summary(
        root,
        [
            row("fp16", 0, "float32", 0.20, map50=0.40, best=0.21, onnx_bytes=8_900_000, latency=10.0, sha=sha),
            row("fp16", 1, "float32", 0.22, map50=0.44, best=0.23, onnx_bytes=8_900_000, latency=12.0, sha=sha),
            row("qat-w4a16", 0, "qcdq", 0.18, map50=0.36, best=0.19, onnx_bytes=2_400_000, latency=13.0, sha=sha),
            row("qat-w4a16", 1, "qcdq", 0.19, map50=0.39, best=0.20, onnx_bytes=2_400_000, latency=15.0, sha=sha),
        ],
    )


def test_pareto_front_keeps_only_undominated_points():
    points = [
        (8.9, 0.21),  # biggest and best: on the front
        (2.4, 0.19),  # on the front
        (2.4, 0.17),  # same size, less accurate: dominated
        (5.0, 0.18),  # bigger and worse than (2.4, 0.19): dominated
        (1.0, 0.05),  # smallest: on the front
        (None, 0.30),  # no size: never on the front
        (3.0, None),
        (8.9, 0.21),  # an exact tie dominates nobody: both stay
    ]
    assert pareto_front(points) == [True, True, False, False, True, False, False, True]
    assert pareto_front([]) == []


def test_md_and_csv_numbers_match_the_inputs(tmp_path):
    result = compare_runs([two_seed_root(tmp_path / "runA")], tmp_path / "out")
    fp, qat = result.variants
    assert (fp.variant, qat.variant) == ("fp16", "qat-w4a16")
    assert qat.map50_95.mean == pytest.approx(0.185)
    assert qat.map50_95.std == pytest.approx(statistics.stdev([0.18, 0.19]))
    assert qat.ratio_to_fp == pytest.approx(0.185 / 0.21)
    assert qat.onnx_mb == pytest.approx(2.4) and qat.latency_ms_p50 == pytest.approx(14.0)
    assert result.pareto == (True, True)

    with open(result.csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == COMPARISON_COLUMNS
    qat_row = table[1]
    assert qat_row["variant"] == "qat-w4a16" and qat_row["weights_format"] == "qcdq"
    assert qat_row["seeds"] == "0 1" and qat_row["n_evaluated"] == "2"
    assert float(qat_row["mAP50_95_mean"]) == pytest.approx(0.185)
    assert float(qat_row["mAP50_mean"]) == pytest.approx(0.375)
    assert float(qat_row["val_mAP50_95_best_mean"]) == pytest.approx(0.195)
    assert float(qat_row["ratio_to_fp"]) == pytest.approx(0.185 / 0.21)
    assert float(qat_row["onnx_mb"]) == pytest.approx(2.4)
    assert float(table[0]["latency_ms_p50"]) == pytest.approx(11.0)

    text = result.markdown_path.read_text()
    assert "| qat-w4a16 (qcdq) | 0.1850 ± 0.0071 (n=2, ×0.881 FP) |" in text
    assert "| fp16 (float32) | 0.2100 ± 0.0141 (n=2, ×1.000 FP) |" in text
    assert "| 2.40 | 14.00 | yes |" in text
    assert result.plot_path is not None and result.plot_path.stat().st_size > 1000


def test_variants_by_run_roots_matrix(tmp_path):
    a = two_seed_root(tmp_path / "runA")
    b = write_summary(
        tmp_path / "runB",
        [
            row("fp16", 0, "float32", 0.30, onnx_bytes=8_900_000),
            row("qat-w4a16-fl8", 0, "qcdq", 0.27, onnx_bytes=2_600_000),
        ],
    )
    result = compare_runs([a, b], tmp_path / "out")
    text = result.markdown_path.read_text()
    assert "| variant (weights) | runA | runB |" in text
    assert "| qat-w4a16 (qcdq) | 0.1850 ± 0.0071 (n=2, ×0.881 FP) | — |" in text
    assert "| qat-w4a16-fl8 (qcdq) | — | 0.2700 (n=1, ×0.900 FP) |" in text
    on_front = {(s.run_label, s.variant) for s, p in zip(result.variants, result.pareto) if p}
    # runB's FP (8.9 MB, 0.30) dominates runA's FP (8.9 MB, 0.21); runA's QAT is the smallest.
    assert on_front == {("runB", "fp16"), ("runB", "qat-w4a16-fl8"), ("runA", "qat-w4a16")}


def test_different_val_annotations_are_refused_naming_the_roots(tmp_path):
    a = two_seed_root(tmp_path / "runA", sha=SHA_A)
    b = two_seed_root(tmp_path / "runB", sha=SHA_B)
    with pytest.raises(CompareInputError, match=r"runA: aaaaaaaaaaaa; runB: bbbbbbbbbbbb.*--allow-different-val"):
        compare_runs([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before writing anything

    result = compare_runs([a, b], tmp_path / "out", allow_different_val=True)
    assert len(result.variants) == 4
    assert any("val annotations differ" in note for note in result.notes)
    assert "val annotations differ between run roots" in result.markdown_path.read_text()


def test_cli_refuses_different_val_and_accepts_the_override(tmp_path):
    a = two_seed_root(tmp_path / "runA", sha=SHA_A)
    b = two_seed_root(tmp_path / "runB", sha=SHA_B)
    command = [sys.executable, str(CLI), str(a), str(b), "--out", str(tmp_path / "out")]
    refused = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "different val annotations" in refused.stderr
    allowed = subprocess.run(
        [*command, "--allow-different-val"], check=False, capture_output=True, text=True, timeout=120
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "out" / "comparison.md").is_file() and (tmp_path / "out" / "map_vs_size.png").is_file()


def test_missing_and_half_finished_run_roots_are_reported_not_fatal(tmp_path):
    good = two_seed_root(tmp_path / "runA")
    missing = tmp_path / "runMissing"
    missing.mkdir()
    half = write_summary(
        tmp_path / "runHalf",
        [
            row("fp16", 0, "float32", None, onnx_bytes=8_900_000),  # trained and exported, not evaluated yet
            row("qat-w4a16", 0, "qcdq", 0.15, onnx_bytes=2_400_000),
        ],
    )
    broken = tmp_path / "runBroken"
    broken.mkdir()
    (broken / S.SUMMARY_CSV).write_text("something,else\n1,2\n")

    result = compare_runs([good, missing, half, broken], tmp_path / "out")
    notes = "\n".join(result.notes)
    assert "runMissing/summary.csv: missing" in notes
    assert "fp16 (float32) seed 0: no mAP50_95 yet" in notes
    assert "runHalf/summary.csv: no evaluated FP baseline" in notes
    assert "runBroken/summary.csv: no column(s)" in notes
    half_qat = next(s for s in result.variants if s.run_label == "runHalf" and s.variant == "qat-w4a16")
    assert half_qat.map50_95.mean == pytest.approx(0.15) and half_qat.ratio_to_fp is None
    text = result.markdown_path.read_text()
    assert "| runMissing |" in text and "not compared (see notes)" in text
    assert {s.run_label for s in result.variants} == {"runA", "runHalf"}


def test_nothing_to_compare_exits_1_with_a_report(tmp_path):
    missing = tmp_path / "runMissing"
    missing.mkdir()
    done = subprocess.run(
        [sys.executable, str(CLI), str(missing), "--out", str(tmp_path / "out")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "summary.csv: missing" in done.stdout
    assert (tmp_path / "out" / "comparison.md").is_file() and not (tmp_path / "out" / "map_vs_size.png").exists()
