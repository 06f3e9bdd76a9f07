"""summary.md on complete and half-finished synthetic run roots (no training involved)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from auto_quantize_model.io_utils import write_json_atomic
from auto_quantize_model.pipeline import (
    pipeline_stages,
    resolve_run_config,
    save_or_check_run_config,
)
from auto_quantize_model.stages import update_stage_record
from auto_quantize_model.report import read_results_csv, write_summary
from auto_quantize_model.run_root import RunRoot

REPO = Path(__file__).resolve().parents[1]
SUMMARY_CLI = REPO / "scripts" / "cv-models" / "write_yolov10m_scratch_train_summary.py"
RESULTS_HEADER = (
    "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
    "metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0,lr/pg1,lr/pg2"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (mAP50, mAP50-95) per epoch; FP16 peaks at epoch 2, QAT at epoch 3.
FP16_CURVE = [(0.20, 0.111), (0.52, 0.333), (0.45, 0.222)]
QAT_CURVE = [(0.10, 0.055), (0.30, 0.155), (0.41, 0.244)]


def write_results_csv(path: Path, curve: list[tuple[float, float]]) -> None:
    """Ultralytics-style results.csv (padded headers like some Ultralytics versions write)."""
    lines = [",".join(f"{col:>12}" for col in RESULTS_HEADER.split(","))]
    for epoch, (map50, map5095) in enumerate(curve, start=1):
        values = [epoch, 10.0 * epoch, 1.9, 2.8, 1.4, 0.5, 0.4, map50, map5095, 1.8, 2.7, 1.3, 0.01, 0.01, 0.01]
        lines.append(",".join(str(v) for v in values))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_train_stage(run_root: RunRoot, stage: str, curve, finished: bool = True) -> None:
    """Artifacts the trainer leaves in a stage folder; ``finished=False`` stops before best.pt."""
    paths = run_root.train_run(stage)
    paths.weights_dir.mkdir(parents=True)
    args = {"task": "detect", "model": "yolov10n.yaml", "data": str(run_root.dataset_yaml), "epochs": 3,
            "batch": 16, "imgsz": 160, "optimizer": "SGD", "lr0": 0.01, "lrf": 0.1, "cos_lr": False,
            "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0, "warmup_momentum": 0.8,
            "warmup_bias_lr": 0.1, "seed": 0, "deterministic": True, "amp": True, "device": "cpu",
            "workers": 0, "fraction": 1.0, "close_mosaic": 10, "mosaic": 1.0}  # fmt: skip
    paths.args_yaml.write_text(yaml.safe_dump(args))
    write_results_csv(paths.results_csv, curve)
    paths.tensorboard_dir.mkdir()
    (paths.tensorboard_dir / "events.out.tfevents.1.host").write_bytes(b"\0")
    paths.loss_curves_png.write_bytes(PNG_MAGIC)
    paths.last.write_bytes(b"last")
    if stage != "fp16":
        write_json_atomic(paths.quant_scheme_json, {"name": "w4a16", "weight_bit_width": 4, "per_channel": True})
    if finished:
        paths.best.write_bytes(b"best")
        write_json_atomic(paths.metadata_json, {"status": "finished"})


def write_eval(run_root: RunRoot, stage: str, scale: float, onnx_bytes: int) -> None:
    """ONNX file of ``onnx_bytes`` and a metrics.json whose mAPs are ``scale`` x the FP16 ones."""
    onnx = run_root.onnx_model("yolov10n", stage)
    onnx.parent.mkdir(parents=True, exist_ok=True)
    onnx.write_bytes(b"\0" * onnx_bytes)
    # Same keys as auto_quantize_model.evaluate writes (null: no ground truth in that size range).
    metrics = {"mAP50_95": 0.4 * scale, "mAP50": 0.6 * scale, "mAP75": 0.45 * scale, "mAP_small": None,
               "mAP_medium": 0.3 * scale, "mAP_large": 0.5 * scale, "AR1": 0.2, "AR10": 0.5, "AR100": 0.55 * scale,
               "latency_ms": {"per_batch": {"mean": 99.0, "p95": 99.0}, "per_image": {"mean": 12.5 / scale, "p95": 15.0 / scale}},
               "providers_requested": ["CPUExecutionProvider"], "providers": ["CPUExecutionProvider"],
               "onnx": {"path": str(onnx), "sha256": "ab" * 32}, "num_images": 32, "batch": 1,
               "per_class": {f"class{i}": {"AP50_95": 0.1} for i in range(20)}}  # fmt: skip
    write_json_atomic(run_root.eval_dir(stage) / "metrics.json", metrics)


def write_provenance(run_root: RunRoot) -> None:
    """Shaped like auto_quantize_model.data.coco_dataset writes it."""

    def split(name: str, images: int, boxes: int) -> dict:
        return {"images_dir": f"/src/{name}2017", "annotations": f"/src/annotations/instances_{name}2017.json",
                "annotations_sha256": "cd" * 32, "images_in_source": images, "max_images": None,
                "counts": {"images": images, "images_without_boxes": 0, "boxes_written": boxes,
                           "per_class": {f"class{i}": 1 for i in range(80)}}}  # fmt: skip

    write_json_atomic(run_root.dataset_provenance, {
        "tool": "prepare_coco_dataset", "source_root": str(run_root.synthetic_source_dir), "subset_seed": 0,
        "names": {i: f"class{i}" for i in range(80)}, "splits": {"train": split("train", 128, 410), "val": split("val", 32, 97)},
    })  # fmt: skip


def mark_stages(run_root: RunRoot, config, status: str = "done", until: str | None = None) -> None:
    for stage in pipeline_stages(config):
        update_stage_record(run_root, stage, status=status, attempts=1, started_at="2025-01-01T00:00:00+00:00",
                            ended_at="2025-01-01T00:01:00+00:00", duration_s=61.0, exit_code=0,
                            command=["python", "x.py"], log=f"logs/{stage}.log")  # fmt: skip
        if stage == until:
            return


@pytest.fixture()
def complete_root(tmp_path: Path) -> RunRoot:
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"epochs": 3})
    save_or_check_run_config(run_root, config)
    write_provenance(run_root)
    write_train_stage(run_root, "fp16", FP16_CURVE)
    write_train_stage(run_root, "qat-w4a16", QAT_CURVE)
    write_eval(run_root, "fp16", 1.0, 2_000_000)
    write_eval(run_root, "qat-w4a16", 0.75, 500_000)
    mark_stages(run_root, config)
    return run_root


def sections(text: str) -> dict[str, str]:
    """``## heading`` -> body."""
    parts = text.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def table_row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{text}")


def test_results_csv_headers_are_stripped(tmp_path: Path) -> None:
    write_results_csv(tmp_path / "results.csv", FP16_CURVE)
    rows = read_results_csv(tmp_path / "results.csv")
    assert rows[1]["metrics/mAP50-95(B)"] == pytest.approx(0.333)
    assert rows[2]["epoch"] == 3.0


def test_complete_run_root(complete_root: RunRoot) -> None:
    result = write_summary(complete_root)
    text = complete_root.summary_md.read_text()
    assert result.missing == []
    assert "Complete: every expected artifact is present." in text
    parts = sections(text)

    onnx = parts["ONNX COCO evaluation (shared ONNX evaluator)"]
    assert table_row(onnx, "mAP50-95")[1:] == ["0.4000", "0.3000", "-0.1000", "0.7500"]
    assert table_row(onnx, "AR100")[1:] == ["0.5500", "0.4125", "-0.1375", "0.7500"]
    # No small objects (null in metrics.json): shown empty, no delta or ratio.
    assert table_row(onnx, "APs (mAP_small)")[1:] == ["—", "—", "—", "—"]
    assert table_row(onnx, "onnx.sha256")[1:] == ["abababababab", "abababababab"]
    assert "per_class" not in onnx and "99.00" not in text

    train = parts["Training curves and in-training validation (Ultralytics validator)"]
    assert table_row(train, "FP16/AMP baseline")[1:] == ["3", "2", "0.3330", "0.5200", "0.2220"]
    assert table_row(train, "W4A16 QAT (qat-w4a16)")[1:] == ["3", "3", "0.2440", "0.4100", "0.2440"]
    # Ultralytics numbers and ONNX-evaluator numbers never share a section.
    assert "0.3330" not in onnx and "0.4000" not in train
    assert "![FP16/AMP baseline loss curves](fp16/loss_curves.png)" in train
    assert "![W4A16 QAT (qat-w4a16) loss curves](qat-w4a16/loss_curves.png)" in train
    assert "![val mAP50-95 per epoch](val_map_comparison.png)" in train
    assert f"tensorboard --logdir {complete_root.root}" in train
    assert "`qat-w4a16/tensorboard/`" in train and "(missing)" not in train

    models = parts["ONNX models: size and latency (ONNX evaluator)"]
    assert table_row(models, "FP16/AMP baseline")[1:] == [
        "`onnx/yolov10n-fp16.onnx`",
        "—",  # no export metadata JSON in this fixture
        "2.00",
        "12.50",
        "15.00",
        "CPUExecutionProvider",
    ]
    assert table_row(models, "W4A16 QAT (qat-w4a16)")[3:5] == ["0.50", "16.67"]
    assert "Baseline / QAT ONNX size ratio: 4.00x" in models


def test_complete_run_root_dataset_hyperparameters_and_stages(complete_root: RunRoot) -> None:
    write_summary(complete_root)
    parts = sections(complete_root.summary_md.read_text())
    dataset = parts["Dataset"]
    assert table_row(dataset, "field")[1:] == ["train", "val"]
    assert table_row(dataset, "counts.images")[1:] == ["128", "32"]
    assert table_row(dataset, "counts.boxes_written")[1:] == ["410", "97"]
    assert table_row(dataset, "images_dir")[1:] == ["/src/train2017", "/src/val2017"]
    assert table_row(dataset, "counts.per_class")[1:] == ["[80 entries]", "[80 entries]"]
    assert f"- source_root: `{complete_root.synthetic_source_dir}`" in dataset
    assert "- names: `[80 entries]`" in dataset

    hyp = parts["Training hyperparameters (Ultralytics args.yaml)"]
    assert table_row(hyp, "optimizer")[1:] == ["SGD", "SGD"]
    assert table_row(hyp, "lr schedule")[1].startswith("linear lr0 0.01 -> 0.001 (lr0*lrf) over 3 epochs, warmup 3.0")
    assert table_row(hyp, "quant scheme")[1:] == ["none (FP16/AMP)", "w4a16"]
    assert "weight_bit_width=4" in hyp

    stages = parts["Pipeline stages (run.json)"]
    for stage in ("make-synthetic-data", "train-qat-w4a16", "eval-qat-w4a16", "summary"):
        assert table_row(stages, stage)[1:3] == ["done", "1"]
    assert "[logs/train-fp16.log](logs/train-fp16.log)" in stages
    assert "1m 01s" in stages


def test_comparison_plot_is_a_png_and_written_atomically(complete_root: RunRoot) -> None:
    result = write_summary(complete_root)
    assert result.plot == complete_root.map_comparison_png
    assert complete_root.map_comparison_png.read_bytes().startswith(PNG_MAGIC)
    leftovers = [
        p.name for p in complete_root.root.iterdir() if p.name.endswith(".tmp.md") or p.name.endswith(".tmp.png")
    ]
    assert leftovers == []


def test_qat_not_finished_is_named(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    config = resolve_run_config("demo", {"epochs": 3})
    save_or_check_run_config(run_root, config)
    write_provenance(run_root)
    write_train_stage(run_root, "fp16", FP16_CURVE)
    write_eval(run_root, "fp16", 1.0, 2_000_000)
    write_train_stage(run_root, "qat-w4a16", QAT_CURVE[:1], finished=False)
    mark_stages(run_root, config, until="export-fp16")
    update_stage_record(run_root, "train-qat-w4a16", status="failed", exit_code=3, log="logs/train-qat-w4a16.log")

    result = write_summary(run_root)
    text = run_root.summary_md.read_text()
    assert "## Status: incomplete" in text
    assert "QAT (qat-w4a16) training not finished: no best.pt (qat-w4a16/weights/best.pt)" in result.missing
    assert "QAT (qat-w4a16) ONNX export missing: onnx/yolov10n-qat-w4a16-qcdq.onnx" in result.missing
    assert "QAT (qat-w4a16) ONNX evaluation missing: qat-w4a16-coco/metrics.json" in result.missing
    assert "stage train-qat-w4a16 failed (exit code 3): see logs/train-qat-w4a16.log" in result.missing
    assert not any(item.startswith("FP16") for item in result.missing), result.missing
    for item in result.missing:
        assert f"- {item}" in text
    stages = sections(text)["Pipeline stages (run.json)"]
    assert table_row(stages, "eval-qat-w4a16")[1] == "not run"
    onnx = sections(text)["ONNX COCO evaluation (shared ONNX evaluator)"]
    assert "Incomplete" in onnx and table_row(onnx, "mAP50-95")[1:] == ["0.4000", "—", "—", "—"]


def test_bare_run_root_names_every_missing_part(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    run_root.root.mkdir()
    missing = write_summary(run_root).missing
    assert missing[0].startswith("QAT stage unknown")
    assert "run config missing: run_config.yaml" in missing
    assert "dataset provenance missing: dataset/provenance.json (prepare-data not finished?)" in missing
    assert "FP16 training not started: no fp16/" in missing
    assert "FP16 ONNX evaluation missing: baseline-coco/metrics.json" in missing
    assert not run_root.map_comparison_png.exists()  # nothing to plot, no empty plot


def test_without_run_config_scheme_and_model_come_from_folders(tmp_path: Path) -> None:
    """An old or hand-made run root: scheme from the qat-* folder, model name from args.yaml."""
    run_root = RunRoot(tmp_path / "run")
    write_train_stage(run_root, "fp16", FP16_CURVE)
    write_train_stage(run_root, "qat-w8a16", QAT_CURVE)
    write_eval(run_root, "qat-w8a16", 0.75, 500_000)  # also creates qat-w8a16-coco/, not a stage
    missing = write_summary(run_root).missing
    text = run_root.summary_md.read_text()
    assert "W8A16 QAT (qat-w8a16)" in text and "qat-w8a16-coco (" not in text
    assert "FP16 ONNX export missing: onnx/yolov10n-fp16.onnx" in missing
    assert not any("qat-w8a16" in item and "export" in item for item in missing), missing


def test_unreadable_metrics_are_reported_not_fatal(complete_root: RunRoot) -> None:
    (complete_root.eval_dir("qat-w4a16") / "metrics.json").write_text("{not json")
    missing = write_summary(complete_root).missing
    assert any(item.startswith("unreadable qat-w4a16-coco/metrics.json") for item in missing), missing
    assert "QAT (qat-w4a16) ONNX evaluation missing: qat-w4a16-coco/metrics.json" in missing


def test_summary_cli_lists_missing_and_strict_fails(tmp_path: Path) -> None:
    run_root = RunRoot(tmp_path / "run")
    run_root.root.mkdir()
    write_provenance(run_root)
    done = subprocess.run(
        [sys.executable, str(SUMMARY_CLI), "--run-root", str(run_root.root)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "missing: FP16 training not started: no fp16/" in done.stdout
    assert run_root.summary_md.is_file()
    strict = subprocess.run(
        [sys.executable, str(SUMMARY_CLI), "--run-root", str(run_root.root), "--strict"], capture_output=True, text=True
    )
    assert strict.returncode == 1
    absent = subprocess.run(
        [sys.executable, str(SUMMARY_CLI), "--run-root", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert absent.returncode == 2 and "does not exist" in absent.stderr
    assert "| counts.images | 128 | 32 |" in run_root.summary_md.read_text()


def test_summary_written_by_the_summary_stage_does_not_flag_itself(complete_root: RunRoot) -> None:
    """Inside the pipeline the summary stage is 'running' while it writes: that is not a problem."""
    update_stage_record(complete_root, "summary", status="running", ended_at=None, exit_code=None)
    result = write_summary(complete_root)
    assert result.missing == []
    stages = sections(complete_root.summary_md.read_text())["Pipeline stages (run.json)"]
    assert table_row(stages, "summary")[1] == "running (writing this summary)"
    update_stage_record(complete_root, "eval-fp16", status="running")
    assert (
        "stage eval-fp16 is running or was interrupted: see logs/eval-fp16.log" in write_summary(complete_root).missing
    )


def test_other_metric_spellings_and_cocoeval_minus_one(complete_root: RunRoot) -> None:
    """The brief's spellings (``mAP50-95``, flat ``latency_ms.mean``) and COCOeval's -1 also work."""
    for stage, value in (("fp16", 0.5), ("qat-w4a16", 0.25)):
        metrics = {"mAP50-95": value, "mAP_small": -1.0, "latency_ms": {"mean": 3.0, "p95": 4.0}}
        write_json_atomic(complete_root.eval_dir(stage) / "metrics.json", metrics)
    write_summary(complete_root)
    parts = sections(complete_root.summary_md.read_text())
    onnx = parts["ONNX COCO evaluation (shared ONNX evaluator)"]
    assert table_row(onnx, "mAP50-95")[1:] == ["0.5000", "0.2500", "-0.2500", "0.5000"]
    assert table_row(onnx, "APs (mAP_small)")[1:] == ["-1.0000", "-1.0000", "0.0000", "—"]
    models = parts["ONNX models: size and latency (ONNX evaluator)"]
    assert table_row(models, "FP16/AMP baseline")[4:6] == ["3.00", "4.00"]


def test_provenance_in_the_briefs_shape(tmp_path: Path) -> None:
    """``source`` + ``splits -> {train, val} -> counts``: shown as written, nothing assumed."""
    run_root = RunRoot(tmp_path / "run")
    write_json_atomic(run_root.dataset_provenance, {"source": "datasets/coco2017/source-data",
                                                    "splits": {"train": {"images": 1000}, "val": {"images": 200}}})  # fmt: skip
    write_summary(run_root)
    dataset = sections(run_root.summary_md.read_text())["Dataset"]
    assert "- source: `datasets/coco2017/source-data`" in dataset
    assert table_row(dataset, "images")[1:] == ["1000", "200"]


def test_onnx_weights_column_reads_the_export_metadata(tmp_path: Path) -> None:
    from auto_quantize_model.report import _onnx_weights

    fp, qat = tmp_path / "m-fp16.onnx", tmp_path / "m-qat-w4a16-fl8-qcdq.onnx"
    (tmp_path / "m-fp16.json").write_text(json.dumps({"kind": "fp", "onnx": {"precision": "float16"}}))
    (tmp_path / "m-qat-w4a16-fl8-qcdq.json").write_text(json.dumps(
        {"kind": "qat-qcdq", "onnx": {"precision": "float32"}, "graph": {"weight_qdq_by_bit_width": {"4": 70, "8": 13}}}
    ))
    assert _onnx_weights(fp) == "float16"
    assert _onnx_weights(qat) == "QCDQ (70 convs int4, 13 convs int8; int8 containers), float activations"
    assert _onnx_weights(tmp_path / "other.onnx") is None
