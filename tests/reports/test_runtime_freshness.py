"""Freshness of the OpenVINO evaluations (``evaluate.py --runtime openvino``): their scores of a file go stale with
the file, as ONNX Runtime's do (reports/freshness.py)."""

from __future__ import annotations

import json
from pathlib import Path

from test_report import make_run_root  # tests/ is on sys.path (pytest rootdir conftest)

from auto_quantize_model.report import write_summary
from auto_quantize_model.runs import metrics_keys as mk
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.utils.io import sha256_file, write_json_atomic

MODEL = "yolov10n"  # the demo profile's model: the ONNX file names make_run_root writes


def _score(run_root: RunRoot, variant: str, fmt: str, runtime: str) -> Path:
    """Seed 0's ``metrics.json`` of one file by ``runtime``, recording the ONNX bytes it scored as evaluate.py does."""
    seed_root = run_root.seed(0)
    onnx = seed_root.onnx_model(MODEL, variant, fmt)
    metrics = json.loads(seed_root.eval_metrics(variant, fmt).read_text())  # the numbers make_run_root wrote
    metrics[mk.ONNX] = {mk.PATH: str(onnx), mk.SHA256: sha256_file(onnx)}
    metrics[mk.RUNTIME] = {"name": runtime}
    path = seed_root.eval_metrics(variant, fmt, runtime)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, metrics)
    return path


def test_an_openvino_score_of_a_changed_onnx_is_stale_and_labelled_with_its_runtime(tmp_path, synthetic_source):
    ann_file = synthetic_source / "annotations" / "instances_val2017.json"
    variants = ("fp16", "ptq-w8a8")  # OpenVINO scores the int8 QDQ file and the fp16 float32 one it is compared with
    run_root, _ = make_run_root(tmp_path, ann_file, seeds=(0,), variants=variants, eval_runtimes="onnxruntime,openvino")
    for variant, fmt in (("fp16", "float32"), ("ptq-w8a8", "qdq")):
        assert run_root.seed(0).eval_metrics(variant, fmt, "openvino").parent.name == f"{variant}-{fmt}-openvino"
        for runtime in ("onnxruntime", "openvino"):
            _score(run_root, variant, fmt, runtime)
    fresh = write_summary(run_root)
    assert fresh.complete, fresh.missing

    # the QDQ file is re-exported and ONNX Runtime's evaluation redone; OpenVINO's is of the old bytes
    qdq = run_root.seed(0).onnx_model(MODEL, "ptq-w8a8", "qdq")
    qdq.write_bytes(b"re-exported")
    _score(run_root, "ptq-w8a8", "qdq", "onnxruntime")
    result = write_summary(run_root)

    assert not result.complete, "an OpenVINO score of bytes the file no longer holds was called fresh"
    stale = [item for item in result.missing if "whose bytes are changed since" in item]
    assert len(stale) == 1 and stale[0].startswith(f"seed 0 ptq-w8a8 qdq (openvino): evaluated {qdq.name}"), stale
    assert not any("fp16 float32" in item for item in result.missing)  # the up-to-date OpenVINO cell
    assert json.loads(run_root.summary_json.read_text())["complete"] is False
