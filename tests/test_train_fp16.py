"""The fp16 training stage: artifacts, YOLOv10 validation, refusal, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import TINY_EPOCHS, TINY_IMGSZ, tiny_train_request

from auto_quantize_model.runs.config import ConfigError
from auto_quantize_model.runs.run_root import RunRoot
from auto_quantize_model.train import RunExistsError, resolve_train_args, train_stage
from auto_quantize_model.ultralytics_ext import callbacks as run_logging

pytestmark = pytest.mark.slow
TRAIN_SCRIPT = "scripts/cv-models/train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py"


def test_fp16_run_writes_every_artifact(fp16_run):
    paths = fp16_run.paths
    assert fp16_run.status == "finished" and paths.name == "fp16"
    for artifact in (
        paths.args_yaml,
        paths.results_csv,
        paths.best,
        paths.last,
        paths.loss_curves_csv,
        paths.loss_curves_png,
        paths.metadata_json,
        paths.config_yaml,
    ):
        assert artifact.is_file() and artifact.stat().st_size > 0, artifact
    assert paths.loss_curves_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = json.loads(paths.metadata_json.read_text())
    assert metadata["status"] == "finished" and metadata["epochs_completed"] == TINY_EPOCHS
    assert metadata["seed"] == 0 and metadata["quantized"] is False
    assert metadata["packages"]["ultralytics"] == "8.4.190"
    assert metadata["config"]["optimizer"] == "SGD" and metadata["config"]["nms"] is False
    assert "cpu_count" in metadata["device"] and metadata["attempts"][0]["command"]


def test_tensorboard_events_hold_epoch_scalars(fp16_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(fp16_run.paths.tensorboard_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/box_loss", "val/cls_loss", "metrics/mAP50-95(B)", "lr/pg0", "train_iter/box_loss"):
        assert tag in tags, tag


def test_tensorboard_has_no_extra_epoch_and_logs_the_final_validation_under_its_own_tags(fp16_run):
    """Ultralytics' final validation of best.pt used to add a point at step epochs + 1 (loss and lr repeated)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(fp16_run.paths.tensorboard_dir))
    events.Reload()
    epochs = list(range(1, TINY_EPOCHS + 1))
    for tag in ("metrics/mAP50-95(B)", "train/box_loss", "lr/pg0"):
        assert [event.step for event in events.Scalars(tag)] == epochs, tag
    final = events.Scalars("final_val/metrics/mAP50-95(B)")
    assert [event.step for event in final] == [TINY_EPOCHS]
    assert "final_val/train/box_loss" not in events.Tags()["scalars"]  # training losses are not repeated


def test_loss_curves_match_results_csv(fp16_run):
    curves = pd.read_csv(fp16_run.paths.loss_curves_csv)
    results = pd.read_csv(fp16_run.paths.results_csv)
    assert list(curves["epoch"]) == list(range(1, TINY_EPOCHS + 1))
    for column in (
        "train/box_loss",
        "train/cls_loss",
        "train/dfl_loss",
        "val/box_loss",
        "val/cls_loss",
        "val/dfl_loss",
    ):
        assert curves[column].tolist() == pytest.approx(results[column].tolist())


def test_yolov10_validation_is_nms_free_without_an_adapter(fp16_run, prepared_dataset):
    """Ultralytics' own validator with nms=False runs the one-to-one head and gets [B, 300, 6] tensors.

    Nothing here sets ``end2end``: a forward hook records what the head returns while the real
    validator runs on the checkpoint, so a dict output or an NMS path would fail the test.
    """
    from ultralytics import YOLO

    yolo = YOLO(str(fp16_run.paths.best))
    head = yolo.model.model[-1]
    seen = []
    head.register_forward_hook(lambda module, args, output: seen.append((bool(module.end2end), output)))
    yolo.val(
        data=str(prepared_dataset.dataset_yaml),
        imgsz=TINY_IMGSZ,
        batch=8,
        nms=False,
        plots=False,
        device="cpu",
        verbose=False,
    )
    assert seen, "the validator never ran the head"
    end2end, output = seen[0]
    detections = output[0] if isinstance(output, (tuple, list)) else output
    assert end2end and isinstance(detections, torch.Tensor)
    assert detections.ndim == 3 and detections.shape[-1] == 6 and detections.shape[1] <= 300


def test_finished_run_is_never_overwritten(fp16_run, prepared_dataset):
    request = tiny_train_request(fp16_run.paths.dir.parents[1], prepared_dataset.dataset_yaml)
    before = fp16_run.paths.best.stat().st_mtime_ns
    with pytest.raises(RunExistsError, match="already finished"):
        train_stage(request)
    again = train_stage(tiny_train_request(fp16_run.paths.dir.parents[1], prepared_dataset.dataset_yaml, resume=True))
    assert again.status == "already-finished"
    assert fp16_run.paths.best.stat().st_mtime_ns == before


class _Interrupt(RuntimeError):
    pass


def _interrupt_after_first_save(trainer):
    raise _Interrupt("simulated crash after epoch 1")


def test_interrupted_run_refuses_then_resumes(prepared_dataset, tmp_path, monkeypatch):
    request = tiny_train_request(tmp_path / "run", prepared_dataset.dataset_yaml, epochs=3)
    monkeypatch.setitem(run_logging.RUN_CALLBACKS, "on_model_save", _interrupt_after_first_save)
    with pytest.raises(_Interrupt):
        train_stage(request)
    monkeypatch.undo()
    paths = request.paths
    assert paths.last.is_file() and json.loads(paths.metadata_json.read_text())["status"] == "failed"
    with pytest.raises(RunExistsError, match="--resume"):
        train_stage(request)
    resumed = train_stage(tiny_train_request(tmp_path / "run", prepared_dataset.dataset_yaml, epochs=3, resume=True))
    assert resumed.status == "finished" and resumed.resumed and resumed.epochs_completed == 3
    assert pd.read_csv(paths.results_csv)["epoch"].tolist() == [1, 2, 3]
    attempts = json.loads(paths.metadata_json.read_text())["attempts"]
    assert [attempt["resumed"] for attempt in attempts] == [False, True]


def test_recipe_with_unknown_key_names_the_file(prepared_dataset, tmp_path):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("lr0: 0.01\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"hyp\.yaml.*learning_rate"):
        resolve_train_args(tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, hyp=hyp))
    hyp.write_text("model: yolov10n.yaml\n")
    with pytest.raises(ConfigError, match="set by the command line"):
        resolve_train_args(tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, hyp=hyp))


def test_resolved_args_follow_recipe_then_flags(prepared_dataset, tmp_path):
    args = resolve_train_args(tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, overrides={"lr0": 0.02}))
    assert args["optimizer"] == "SGD" and args["momentum"] == 0.937 and args["lr0"] == 0.02
    assert args["epochs"] == TINY_EPOCHS and args["pretrained"] is False and args["name"] == "fp16"


def test_cli_reports_bad_input_without_traceback(tmp_path):
    missing = subprocess.run(
        [sys.executable, TRAIN_SCRIPT, "fp16", "--run-root", str(tmp_path), "--data", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "missing.yaml" in missing.stderr and "Traceback" not in missing.stderr
    data = tmp_path / "dataset.yaml"
    data.write_text("path: .\n")
    done = subprocess.run(
        [
            sys.executable,
            TRAIN_SCRIPT,
            "fp16",
            "--run-root",
            str(tmp_path / "run"),
            "--data",
            str(data),
            "--device",
            "cpu",
            "--train-arg",
            "not_an_arg=1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "not_an_arg" in done.stderr and "Traceback" not in done.stderr


def test_attempt_without_checkpoint_is_set_aside_on_resume(prepared_dataset, tmp_path):
    stage_dir = RunRoot(tmp_path).seed(0).train_run("fp16").dir
    stage_dir.mkdir(parents=True)
    (stage_dir / "results.csv").write_text("epoch,time\n1,1.0\n")  # what a crash before last.pt leaves
    with pytest.raises(RunExistsError, match="without a checkpoint"):
        train_stage(tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, epochs=1))
    result = train_stage(tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, epochs=1, resume=True))
    assert result.status == "finished"
    assert pd.read_csv(result.paths.results_csv)["epoch"].tolist() == [1]
    (kept,) = (tmp_path / "set-aside" / "seed-0").glob("fp16.incomplete-*")
    assert (kept / "results.csv").read_text() == "epoch,time\n1,1.0\n"
