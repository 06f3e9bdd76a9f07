"""The real runner, end to end, in the demo profile with tiny settings (slow: trains two models).

One run root goes through: a partial run (``--stop-after``), a resume to the end, a rerun after an
artifact was deleted (that stage is rebuilt; its dependents only if the rebuilt file differs), a rerun
that must change nothing, then the faults of issue 26 on real stages: a redo cut short by ``--stop-after``
(the summary says Incomplete; the next plain run redoes exactly what depends on it) and val images deleted
after preparation (linked again; nothing built on them redone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auto_quantize_model.runs.config import resolve_run_config
from auto_quantize_model.runs.plan import plan_stages
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "scripts" / "cv-models" / "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh"
SUMMARY_CLI = REPO / "scripts" / "cv-models" / "write_yolov10m_scratch_train_summary.py"
# Tiny: 16 + 8 synthetic images at 64 px, one epoch per model.
OVERRIDES = {"epochs": 1, "imgsz": 64, "batch": 8, "synthetic_train": 16, "synthetic_val": 8, "synthetic_imgsz": 64}
TINY = (
    "--profile",
    "demo",
    "--epochs",
    "1",
    "--imgsz",
    "64",
    "--batch",
    "8",
    "--set",
    "synthetic_train=16",
    "--set",
    "synthetic_val=8",
    "--set",
    "synthetic_imgsz=64",
)

pytestmark = pytest.mark.slow


def runner(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RUN_ROOT"}
    done = subprocess.run(
        ["bash", str(RUNNER), *TINY, "--run-root", str(root), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    print(done.stdout[-4000:], done.stderr[-4000:])  # shown by pytest only when the test fails
    return done


def expected_artifacts(run_root: RunRoot) -> list[Path]:
    config = resolve_run_config("demo", OVERRIDES)
    paths = [
        run_root.run_config,
        run_root.run_json,
        run_root.summary_md,
        run_root.summary_csv,
        run_root.summary_json,
        run_root.map_comparison_png,
        run_root.dataset_yaml,
        run_root.val_annotations,
        run_root.dataset_provenance,
    ]
    stages = plan_stages(run_root, config)
    paths += [run_root.stage_log(stage.name) for stage in stages]
    paths += [output for stage in stages for output in stage.outputs]
    for variant in ("fp16", "qat-w4a16"):
        train = run_root.seed(0).train_run(variant)
        paths += [train.last, train.args_yaml, train.results_csv, train.loss_curves_png, train.tensorboard_dir]
    return paths


def redone(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("redo: stage")]


def snapshot(root: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def test_runner_demo_partial_resume_idempotent_rerun_and_faults(tmp_path: Path) -> None:
    root = tmp_path / "demo-run"
    run_root = RunRoot(root)

    partial = runner(root, "--stop-after", "s0-export-qat-w4a16-qcdq")
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert list(load_run_state(run_root)["stages"])[-1] == "s0-export-qat-w4a16-qcdq"

    resumed = runner(root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stages = load_run_state(run_root)["stages"]
    assert all(rec["status"] == "done" for rec in stages.values()), stages
    assert stages["s0-train-fp16"]["attempts"] == 1
    missing = [str(path) for path in expected_artifacts(run_root) if not path.exists()]
    assert missing == []
    summary = run_root.summary_md.read_text()
    assert "**Status:** Complete" in summary, summary[:3000]
    assert "FP32 (AMP off: cpu)" in summary  # a CPU run says what ran
    # Latency comes from the seed's latency stage, with its spread and the load beside it.
    assert "from `seed-0/latency.json`: every file of seed 0 timed in one process" in summary
    assert "IQR ms" in summary and "1-minute load average" in summary

    # A deleted artifact is rebuilt; what depends on it is redone only if the rebuilt file differs.
    int4 = run_root.seed(0).onnx_model("yolov10n", "qat-w4a16", "int4")
    old_sha = stages["s0-export-qat-w4a16-int4"]["outputs_sha256"][str(int4)]
    int4.unlink()
    healed = runner(root)
    assert healed.returncode == 0, healed.stderr[-3000:]
    new_sha = load_run_state(run_root)["stages"]["s0-export-qat-w4a16-int4"]["outputs_sha256"][str(int4)]
    dependents = ["s0-eval-qat-w4a16-int4", "s0-latency", "summary"] if new_sha != old_sha else []
    assert redone(healed) == ["s0-export-qat-w4a16-int4", *dependents]

    # A rerun of a finished run root touches nothing.
    before = snapshot(root)
    again = runner(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skip: stage") == len(stages)
    assert snapshot(root) == before
    check_faults_of_issue_26(root)


def check_faults_of_issue_26(root: Path) -> None:
    """The same finished run root through the faults of issue 26, each rerun ending consistent."""
    run_root = RunRoot(root)
    # A redo cut short after the upstream stage: the next plain run redoes exactly its dependents.
    cut = runner(root, "--redo", "s0-train-fp16", "--stop-after", "s0-train-fp16")
    assert cut.returncode == 0, cut.stderr[-3000:]
    summary = subprocess.run([sys.executable, str(SUMMARY_CLI), "--run-root", str(root)], capture_output=True)
    assert summary.returncode == 0 and json.loads(run_root.summary_json.read_text())["complete"] is False
    assert "stage s0-export-fp16-float32 is stale: its input s0-train-fp16 changed" in run_root.summary_md.read_text()
    rest = runner(root)
    assert rest.returncode == 0, rest.stderr[-3000:]
    fp16_dependents = [
        "s0-export-fp16-float32",
        "s0-eval-fp16-float32",
        "s0-export-fp16-float16",
        "s0-eval-fp16-float16",
        "s0-latency",
        "summary",
    ]
    assert redone(rest) == fp16_dependents

    # Val images deleted after preparation: noticed, linked again, and nothing built on them is redone.
    val_links = sorted(run_root.val_images_dir.iterdir())
    for link in val_links[: len(val_links) // 2]:
        link.unlink()
    relinked = runner(root)
    assert relinked.returncode == 0, relinked.stderr[-3000:]
    assert redone(relinked) == ["prepare-data"]
    assert f"val images: {len(val_links) // 2} of {len(val_links)} missing or unreadable" in relinked.stdout
    assert sorted(run_root.val_images_dir.iterdir()) == val_links
