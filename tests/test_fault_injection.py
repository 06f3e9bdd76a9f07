"""Fault injection: a run root survives kill -9, torn checkpoints, an unrecorded export and a full log disk.

Each fault is real (SIGKILL of a training subprocess at a chosen save, a truncated ``last.pt``, a
file-size limit on the stage wrapper) and each is followed by a plain rerun that completes or
refuses with a one-line reason.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_train_request

from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.runs.stage_runner import load_run_state

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "cv-models"
TRAIN_SCRIPT = SCRIPTS / "train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py"

# Trains a tiny FP16 stage in a subprocess and SIGKILLs it right after the checkpoint of epoch KILL_EPOCH
# (0-based) is on disk: the process gets no chance to record anything, exactly like kill -9 or preemption.
KILL_AFTER_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import tiny_train_request
    from auto_quantize_model.train import train_stage
    from auto_quantize_model.ultralytics_ext.trainers import ScratchDetectionTrainer

    kill_epoch = int(sys.argv[3])
    save_model = ScratchDetectionTrainer.save_model

    def save_then_die(self):
        saved = save_model(self)
        if self.epoch == kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    ScratchDetectionTrainer.save_model = save_then_die
    train_stage(tiny_train_request(Path(sys.argv[1]), Path(sys.argv[2])))
    """
)


def _train_and_kill(tmp_path: Path, data: Path, kill_epoch: int) -> Path:
    """Run the tiny training until the save of ``kill_epoch``, SIGKILLed there; return its run root."""
    script = tmp_path / "kill_after_save.py"
    script.write_text(KILL_AFTER_SAVE.format(tests=str(REPO / "tests")))
    run_root = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), str(run_root), str(data), str(kill_epoch)], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return run_root


def _metadata(paths) -> dict:
    return json.loads(paths.metadata_json.read_text())


def _stage_paths(run_root: Path, data: Path):
    """The stage folder as train.py resolves it (``TrainRequest.paths`` where the seed layout has landed)."""
    request = tiny_train_request(run_root, data)
    return getattr(request, "paths", None) or RunRoot(run_root).train_run(request.stage)


# --------------------------------------------------------------------------------------------
# Training: killed after the last checkpoint, torn last.pt
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_after_last_checkpoint_finishes_without_training(prepared_dataset, tmp_path):
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint
    from auto_quantize_model.train import train_stage

    data = prepared_dataset.dataset_yaml
    run_root = _train_and_kill(tmp_path, data, kill_epoch=1)  # 2 epochs: the final one's save
    paths = _stage_paths(run_root, data)
    assert _metadata(paths)["status"] == "running"  # kill -9: nothing could record it
    assert inspect_checkpoint(paths.last).final_epoch_saved and not inspect_checkpoint(paths.last).stripped

    result = train_stage(tiny_train_request(run_root, data, resume=True))

    metadata = _metadata(paths)
    attempt = metadata["attempts"][-1]
    assert result.status == "finished" and metadata["status"] == "finished" and result.epochs_completed == 2
    assert attempt["state"] == "last-epoch-saved" and attempt["previous_status"] == "interrupted"
    assert metadata["final_metrics"]["metrics/mAP50-95(B)"] >= 0.0 and metadata["best_fitness"] is not None
    assert inspect_checkpoint(paths.best).stripped and inspect_checkpoint(paths.last).stripped
    assert pd.read_csv(paths.results_csv)["epoch"].tolist() == [1, 2]  # no epoch was trained again


@pytest.mark.slow
def test_torn_last_pt_is_set_aside_and_training_resumes_from_best(prepared_dataset, tmp_path):
    from auto_quantize_model.train import train_stage

    data = prepared_dataset.dataset_yaml
    run_root = _train_and_kill(tmp_path, data, kill_epoch=0)  # killed after epoch 1 of 2 was saved
    paths = _stage_paths(run_root, data)
    size = paths.last.stat().st_size
    with open(paths.last, "r+b") as handle:  # what a kill mid-write left before checkpoints were atomic
        handle.truncate(size // 2)

    result = train_stage(tiny_train_request(run_root, data, resume=True))

    attempt = _metadata(paths)["attempts"][-1]
    assert result.status == "finished" and result.resumed and result.epochs_completed == 2
    assert attempt["state"] == "interrupted" and attempt["checkpoint"].endswith("best.pt")
    assert any("last.pt does not load" in note for note in attempt["notes"])
    set_aside = run_root / "set-aside" / "seed-0" / "fp16" / "weights"
    assert len(list(set_aside.glob("last.pt.corrupt-*"))) == 1  # kept, not deleted
    assert pd.read_csv(paths.results_csv)["epoch"].tolist() == [1, 2]


@pytest.mark.slow
def test_finishing_a_saved_run_reproduces_ultralytics_final_validation(fp16_run, prepared_dataset, tmp_path):
    """The finish path validates best.pt exactly as Ultralytics' own final_eval did."""
    from auto_quantize_model.train import train_stage

    data = prepared_dataset.dataset_yaml
    original = _metadata(fp16_run.paths)
    copy_root = tmp_path / "copy"
    shutil.copytree(fp16_run.paths.dir, _stage_paths(copy_root, data).dir)
    paths = _stage_paths(copy_root, data)
    paths.metadata_json.write_text(json.dumps({**original, "status": "running"}))  # died before its record

    train_stage(tiny_train_request(copy_root, data, resume=True))

    finished = _metadata(paths)
    assert finished["status"] == "finished" and finished["epochs_completed"] == original["epochs_completed"]
    for key, value in original["final_metrics"].items():
        assert finished["final_metrics"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_lost_best_pt_is_rebuilt_from_the_final_last_pt_without_training(fp16_run, prepared_dataset, tmp_path):
    """What the runner's in-place redo of a training that lost only best.pt runs: validate, write best.pt."""
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint
    from auto_quantize_model.train import train_stage

    data = prepared_dataset.dataset_yaml
    copy_root = tmp_path / "copy"
    shutil.copytree(fp16_run.paths.dir, _stage_paths(copy_root, data).dir)
    paths = _stage_paths(copy_root, data)
    paths.best.unlink()

    result = train_stage(tiny_train_request(copy_root, data, resume=True))

    attempt = _metadata(paths)["attempts"][-1]
    assert result.status == "finished" and attempt["state"] == "last-epoch-saved"
    assert inspect_checkpoint(paths.best).stripped and _metadata(paths)["final_metrics"]
    assert pd.read_csv(paths.results_csv)["epoch"].tolist() == [1, 2]  # no epoch was trained again


def test_torn_checkpoint_is_detected_and_named(tmp_path):
    from auto_quantize_model.runs.checkpoints import inspect_checkpoint

    empty, garbage = tmp_path / "empty.pt", tmp_path / "garbage.pt"
    empty.write_bytes(b"")
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert inspect_checkpoint(empty).error == "empty file (0 bytes)"
    assert not inspect_checkpoint(garbage).intact and inspect_checkpoint(garbage).error


# --------------------------------------------------------------------------------------------
# Export: killed after the ONNX was published, before run.json recorded it
# --------------------------------------------------------------------------------------------
def _export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "export_onnx.py"), *args], capture_output=True, text=True)


@pytest.mark.slow
def test_published_export_is_verified_on_rerun_not_stuck(fp16_run, tmp_path):
    weights = str(fp16_run.paths.best)
    out = tmp_path / "onnx" / "yolov10n-fp16.onnx"
    first = _export_cli("--weights", weights, "--out", str(out), "--imgsz", "64")
    assert first.returncode == 0, first.stderr[-2000:]
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["source"]["sha256"]  # the input checkpoint's sha256 is what a rerun checks against

    again = _export_cli("--weights", weights, "--out", str(out), "--imgsz", "64")  # the runner's plain rerun
    assert again.returncode == 0 and "already exported, verified" in again.stdout, again.stderr[-2000:]

    other = _export_cli("--weights", weights, "--out", str(out), "--imgsz", "96")
    assert other.returncode == 2 and "other settings (imgsz)" in other.stderr and "Traceback" not in other.stderr
    with open(out, "r+b") as handle:  # torn or edited after publishing
        handle.truncate(out.stat().st_size // 2)
    torn = _export_cli("--weights", weights, "--out", str(out), "--imgsz", "64")
    assert torn.returncode == 2 and "differs from the sha256" in torn.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("weights_format", "flags"), [("float16", ["--half"]), ("qcdq", []), ("int4", ["--weights-format", "int4"])]
)
def test_every_export_format_is_verified_on_rerun(request, weights_format, flags, tmp_path):
    """What the runner asks after a kill between the ONNX write and its record: each format must verify.

    The float16 file of Ultralytics' exporter fails onnx.checker ("topologically sorted"); it loads in
    ONNX Runtime, which is how the rerun checks it.
    """
    run = request.getfixturevalue("fp16_run" if weights_format == "float16" else "qat_run")
    out = tmp_path / f"yolov10n-v-{weights_format}.onnx"
    args = ["--weights", str(run.paths.best), "--out", str(out), "--imgsz", "64", *flags]
    first = _export_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    again = _export_cli(*args)
    assert again.returncode == 0 and "already exported, verified" in again.stdout, again.stderr[-2000:]


@pytest.mark.slow
def test_float_checkpoint_is_refused_under_a_qat_name(fp16_run, tmp_path):
    out = tmp_path / "yolov10n-qat-w4a16-qcdq.onnx"
    refused = _export_cli("--weights", str(fp16_run.paths.best), "--out", str(out), "--imgsz", "64")
    assert refused.returncode == 2 and "checkpoint is float" in refused.stderr and "Traceback" not in refused.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# The stage wrapper: its log hits a full disk (a file-size limit stands in for it)
# --------------------------------------------------------------------------------------------
def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def test_log_write_failure_marks_stage_failed_in_one_line(tmp_path):
    run_root = RunRoot(tmp_path / "run")
    noisy = [sys.executable, "-c", "import sys; [print('x' * 1000) for _ in range(200)]"]
    argv = [sys.executable, str(SCRIPTS / "run_stage.py"), "--run-root", str(run_root.root), "--stage", "noisy", "--"]
    proc = subprocess.run(argv + noisy, capture_output=True, text=True, preexec_fn=_limit_file_size)

    record = load_run_state(run_root)["stages"]["noisy"]
    failed_lines = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(failed_lines) == 1, proc.stderr
    assert record["status"] == "failed" and "could not write its log" in record["error"]
    assert "File too large" in record["error"]
    assert proc.stdout.count("x" * 1000) == 200  # the terminal still got everything

    rerun = subprocess.run(argv + noisy, capture_output=True, text=True)  # disk has room again
    assert rerun.returncode == 0 and load_run_state(run_root)["stages"]["noisy"]["status"] == "done"


# --------------------------------------------------------------------------------------------
# CLI polish: one-line errors before anything is written
# --------------------------------------------------------------------------------------------
def _train_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    data = tmp_path / "data.yaml"
    data.write_text("path: .\n")
    common = ["--run-root", str(tmp_path / "run"), "--data", str(data), "--device", "cpu"]
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args, *common], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["fp16", "--epochs", "-1"], "--epochs -1: must be at least 1"),
        (["fp16", "--imgsz", "150"], "use 128 or 160"),
        (["fp16", "--model", "yolov10x9.yaml"], "--model yolov10x9.yaml: no such file"),
        (["fp16", "--fraction", "0"], "--fraction 0.0: must be in (0, 1]"),
    ],
)
def test_bad_training_flags_give_one_line(tmp_path, flags, message):
    proc = _train_cli(tmp_path, *flags)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_model_typo_names_what_the_user_typed_and_known_yamls(tmp_path):
    proc = _train_cli(tmp_path, "fp16", "--model", "yolov10x9.yaml")
    assert "yolov109" not in proc.stderr and "yolov10x.yaml" in proc.stderr and "yolov10m.yaml" in proc.stderr


def test_empty_init_from_is_refused_before_the_stage_folder_exists(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    proc = _train_cli(tmp_path, "qat-w4a16", "--init-from", str(empty), "--model", "yolov10n.yaml", "--imgsz", "64")
    assert proc.returncode == 2 and f"--init-from {empty}: not a loadable checkpoint" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not any((tmp_path / "run").rglob("qat-*"))


# --------------------------------------------------------------------------------------------
# prepare: a corrupt image is a counted warning and is left out
# --------------------------------------------------------------------------------------------
def test_corrupt_image_is_counted_and_excluded_by_prepare(tmp_path):
    from auto_quantize_model.data.coco_dataset import prepare_coco_dataset
    from auto_quantize_model.data.synthetic import generate_synthetic_coco

    source = generate_synthetic_coco(tmp_path / "coco", 4, 4, imgsz=64, seed=0).root
    victim = sorted((source / "val2017").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated JPEG

    prepared = prepare_coco_dataset(source, tmp_path / "dataset")

    provenance = json.loads(prepared.provenance.read_text())
    val_files = [image["file_name"] for image in json.loads(prepared.val_annotations.read_text())["images"]]
    assert provenance["splits"]["val"]["corrupt_images_skipped"] == 1
    assert provenance["splits"]["val"]["corrupt_images"] == [victim.name]
    assert victim.name not in val_files and len(val_files) == 3 and prepared.counts["val"].images == 3
    assert not (prepared.out_dir / "images" / "val" / victim.name).exists()
