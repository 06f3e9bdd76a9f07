"""Which run-root files a published report copies and which it leaves behind (reports/publish_files.py)."""

from __future__ import annotations

from auto_quantize_model.reports.publish_files import classify, plan_publish
from auto_quantize_model.runs.run_root import RunRoot


def test_the_walk_classifies_by_name_and_suffix():
    assert classify("fp16/results.csv") is None and classify("seed-2/eval/fp16-float32/metrics.json") is None
    assert classify("seed-2/eval/fp16-float32/detections.json") == "detections"
    assert classify("seed-2/onnx/m.onnx") == "onnx" and classify("onnx/m.onnx.data") == "onnx"
    assert classify("logs/summary.md") == "log" and classify("fp16/labels.jpg") == "image"
    assert classify("fp16/nonfinite_losses.jsonl") == "other"


def test_plan_skips_dataset_images_generated_data_and_set_aside_work(tmp_path):
    leftovers = ("dataset/images/val/a.jpg", "dataset/labels/val/a.txt", "synthetic-coco/x.json")
    for relative in (*leftovers, "set-aside/seed-0/fp16.stale-1/results.csv"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    (tmp_path / "dataset" / "dataset.yaml").write_text("nc: 1\n")
    plan = plan_publish(RunRoot(tmp_path))
    assert plan.copied == ("dataset/dataset.yaml",)
    assert plan.skipped_dirs == ("dataset/images", "dataset/labels", "set-aside", "synthetic-coco")
