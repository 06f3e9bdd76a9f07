"""The real runner on a real local Ray instance: two seeds, one killed training, the same numbers as local.

Slow: three tiny real runs (yolov10n, 1 epoch, 64 px, fp16 only, one thread per stage): seed 0 with the local
executor (the reference), seeds 0 and 1 on Ray where seed 0's training is killed mid-run (seed 1's chain must
finish, the runner must name the failed stage and exit non-zero), and a rerun on Ray that completes the run root.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from auto_quantize_model.runs import summary_schema as S
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "scripts" / "cv-models" / "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh"
TINY = (
    *("--profile", "demo", "--epochs", "1", "--imgsz", "64", "--batch", "8", "--seeds", "0,1", "--variants", "fp16"),
    *("--set", "synthetic_train=16", "--set", "synthetic_val=8", "--set", "synthetic_imgsz=64"),
    *("--set", "stage_threads=1"),
)
METRIC_COLUMNS = (S.VARIANT, S.SEED, S.WEIGHTS_FORMAT, S.MAP50_95, S.MAP50, S.VAL_MAP50_95_BEST, S.ONNX_BYTES)


def start_runner(root: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_ROOT", "RAY_ADDRESS")}
    return subprocess.Popen(
        ["bash", str(RUNNER), *TINY, "--run-root", str(root), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=1500)
    print(out[-5000:])  # shown by pytest only when the test fails
    return proc.returncode, out


def metric_rows(run_root: RunRoot) -> list[tuple[str, ...]]:
    with run_root.summary_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    return sorted(tuple(row[key] for key in METRIC_COLUMNS) for row in rows)


def training_pid(root: Path, seed: int) -> int | None:
    """The pid of the train CLI of ``seed`` under ``root`` (the process the stage wrapper started)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"train_yolov10m" in a for a in argv) and str(root).encode() in argv and b"--seed" in argv:
            if argv[argv.index(b"--seed") + 1] == str(seed).encode():
                return int(proc.name)
    return None


def test_ray_runner_survives_a_killed_training_and_gives_the_local_numbers(tmp_path: Path) -> None:
    # Names of one length: the ONNX metadata holds the checkpoint path, so onnx_bytes follows its length.
    local_root, ray_root = RunRoot(tmp_path / "run-local"), RunRoot(tmp_path / "run-ray--")

    # The reference: seed 0 alone with the local executor (the Ray run's killed and resumed training).
    code, out = finish(start_runner(local_root.root, "--seeds", "0"))
    assert code == 0, out[-3000:]

    proc = start_runner(ray_root.root, "--executor", "ray")
    deadline = time.monotonic() + 900
    while (pid := training_pid(ray_root.root, 0)) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pid is not None, "seed 0's training never started"
    time.sleep(2)  # let it get into the epoch
    os.kill(pid, signal.SIGKILL)
    code, out = finish(proc)
    assert code == 1 and "s0-train-fp16: exit code 137" in out, out[-3000:]
    records = load_run_state(ray_root)["stages"]
    assert records["s1-eval-fp16-float16"]["status"] == "done"  # the other seed's chain ran to its end
    assert "summary" not in records and "s0-export-fp16-float32" not in records  # its dependents did not run

    code, out = finish(start_runner(ray_root.root, "--executor", "ray"))
    assert code == 0, out[-3000:]
    assert all(record["status"] == "done" for record in load_run_state(ray_root)["stages"].values())
    assert [row for row in metric_rows(ray_root) if row[1] == "0"] == metric_rows(local_root)
    for weights_format in ("float32", "float16"):  # the same model: every detection of every evaluated file
        ours, theirs = (root.seed(0).eval_detections("fp16", weights_format) for root in (ray_root, local_root))
        assert ours.read_bytes() == theirs.read_bytes(), weights_format
