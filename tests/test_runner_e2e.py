"""The real runner, end to end, in the demo profile with tiny settings (slow: trains two models).

One run root goes through: a partial run (``--stop-after``), a failing stage (its input removed),
a resume after restoring the input, and a rerun that must change nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from auto_quantize_model.pipeline import pipeline_stages, resolve_run_config
from auto_quantize_model.stages import load_run_state
from auto_quantize_model.run_root import RunRoot

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "cv-models"
RUNNER = SCRIPTS / "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh"
REQUIRED_CLIS = ("make_synthetic_coco.py", "prepare_coco_dataset.py", "train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py",
                 "export_onnx.py", "eval_yolov10m_onnx_coco.py", "write_yolov10m_scratch_train_summary.py")  # fmt: skip
# Tiny: 16 + 8 synthetic images at 64 px, one epoch per model.
TINY = ("--profile", "demo", "--epochs", "1", "--imgsz", "64", "--batch", "8", "--set", "synthetic_train=16",
        "--set", "synthetic_val=8", "--set", "synthetic_imgsz=64")  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(not (SCRIPTS / name).is_file() for name in REQUIRED_CLIS),
        reason="pipeline CLIs not all present: " + ", ".join(n for n in REQUIRED_CLIS if not (SCRIPTS / n).is_file()),
    ),
]


def runner(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_ROOT", "YOLOV10M_PIPELINE_TOOLS_DIR")}
    done = subprocess.run(["bash", str(RUNNER), *TINY, "--run-root", str(root), *extra],
                          capture_output=True, text=True, env=env, timeout=1200)  # fmt: skip
    print(done.stdout[-4000:], done.stderr[-4000:])  # shown by pytest only when the test fails
    return done


def expected_artifacts(run_root: RunRoot) -> list[Path]:
    config = resolve_run_config("demo", {"epochs": 1, "imgsz": 64, "batch": 8})
    qat = f"qat-{config['quant_scheme']}"
    paths = [run_root.run_config, run_root.run_json, run_root.summary_md, run_root.map_comparison_png,
             run_root.dataset_yaml, run_root.val_annotations, run_root.dataset_provenance]  # fmt: skip
    paths += [run_root.stage_log(stage) for stage in pipeline_stages(config)]
    for stage in ("fp16", qat):
        train = run_root.train_run(stage)
        paths += [
            train.best,
            train.last,
            train.args_yaml,
            train.results_csv,
            train.loss_curves_png,
            train.tensorboard_dir,
        ]
        paths += [run_root.onnx_model("yolov10n", stage), run_root.eval_dir(stage) / "metrics.json"]
    return paths


def snapshot(root: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def test_runner_demo_partial_fail_resume_and_idempotent_rerun(tmp_path: Path) -> None:
    root = tmp_path / "demo-run"
    run_root = RunRoot(root)

    partial = runner(root, "--stop-after", "export-qat-w4a16")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert list(load_run_state(run_root)["stages"])[-1] == "export-qat-w4a16"

    # Take away eval-fp16's input: the pipeline must stop there, say so, and record the failure.
    onnx = run_root.onnx_model("yolov10n", "fp16")
    backup = tmp_path / "fp16.onnx.bak"
    onnx.rename(backup)
    failed = runner(root)
    assert failed.returncode != 0
    assert (
        f"stage 'eval-fp16' failed (exit code {failed.returncode}). Log: {run_root.stage_log('eval-fp16')}"
        in failed.stderr
    )
    assert "warning: its output(s) are missing now" in failed.stdout  # export-fp16 is done but its file is gone
    record = load_run_state(run_root)["stages"]["eval-fp16"]
    assert record["status"] == "failed" and record["exit_code"] == failed.returncode

    # Restore it: the rerun continues at eval-fp16 and finishes.
    backup.rename(onnx)
    resumed = runner(root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stages = load_run_state(run_root)["stages"]
    assert all(rec["status"] == "done" for rec in stages.values()), stages
    assert stages["eval-fp16"]["attempts"] == 2 and stages["train-fp16"]["attempts"] == 1
    missing = [str(path) for path in expected_artifacts(run_root) if not path.exists()]
    assert missing == []
    summary = run_root.summary_md.read_text()
    assert "Complete: every expected artifact is present." in summary, summary[:3000]
    log = run_root.stage_log("eval-fp16").read_text()
    assert "stage eval-fp16, attempt 2 (previous attempt failed)" in log

    # A rerun of a finished run root touches nothing.
    before = snapshot(root)
    again = runner(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skip: stage") == len(stages)
    assert snapshot(root) == before
