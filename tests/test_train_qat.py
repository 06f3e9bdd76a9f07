"""The qat-w4a16 training stage inside Ultralytics: artifacts, checkpoints, resume, DDP relaunch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_EPOCHS, TINY_IMGSZ, tiny_train_request

from auto_quantize_model.quant.scheme import named_scheme
from auto_quantize_model.quant.yolov10 import is_quantized, quant_scheme_of, quantized_layers
from auto_quantize_model.train import train_stage
from auto_quantize_model.ultralytics_ext import callbacks as run_logging

pytestmark = pytest.mark.slow


def test_qat_run_writes_every_artifact_and_the_scheme(qat_run):
    paths = qat_run.paths
    assert qat_run.status == "finished" and paths.name == "qat-w4a16"
    for artifact in (
        paths.args_yaml,
        paths.results_csv,
        paths.best,
        paths.last,
        paths.loss_curves_csv,
        paths.loss_curves_png,
        paths.metadata_json,
        paths.config_yaml,
        paths.quant_scheme_json,
    ):
        assert artifact.is_file() and artifact.stat().st_size > 0, artifact
    assert any(paths.tensorboard_dir.glob("events.out.tfevents.*"))
    scheme = json.loads(paths.quant_scheme_json.read_text())
    assert scheme == named_scheme("w4a16").to_dict()
    metadata = json.loads(paths.metadata_json.read_text())
    assert metadata["status"] == "finished" and metadata["quant_scheme"] == scheme
    assert metadata["epochs_completed"] == TINY_EPOCHS


def test_qat_checkpoint_carries_quantized_model_and_scheme(qat_run):
    checkpoint = torch.load(qat_run.paths.best, weights_only=False)
    model = checkpoint["model"]
    assert is_quantized(model) and quant_scheme_of(model) == named_scheme("w4a16")
    assert len(list(quantized_layers(model))) == 107  # every yolov10n conv but DFL


# The child process imports only Ultralytics' public API after our package: YOLO(best.pt) must load.
_REOPEN = """
import sys, torch
import auto_quantize_model
from ultralytics import YOLO
model = YOLO(sys.argv[1]).model.float().eval()
torch.manual_seed(0)
with torch.no_grad():
    out = model(torch.rand(2, 3, {imgsz}, {imgsz}))
torch.save(out[0] if isinstance(out, (tuple, list)) else out, sys.argv[2])
"""


def test_qat_best_reopens_with_ultralytics_yolo_and_matches_a_model_rebuilt_from_the_scheme(qat_run, tmp_path):
    """YOLO(best.pt) in a fresh process equals a model rebuilt from the YAML, quant_scheme.json and the weights.

    The rebuilt model never goes through unpickling: it is a new DetectionModel, quantized with the
    scheme read back from quant_scheme.json, with the checkpoint's state_dict loaded into it.
    """
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.quant.scheme import QuantScheme
    from auto_quantize_model.quant.yolov10 import quantize_model

    out_file = tmp_path / "out.pt"
    script = _REOPEN.format(imgsz=TINY_IMGSZ)
    subprocess.run([sys.executable, "-c", script, str(qat_run.paths.best), str(out_file)], check=True)
    reopened = torch.load(out_file)
    saved = torch.load(qat_run.paths.best, weights_only=False)["model"]
    rebuilt = DetectionModel(saved.yaml, nc=saved.nc, verbose=False)
    quantize_model(rebuilt, QuantScheme.load(qat_run.paths.quant_scheme_json))
    rebuilt.load_state_dict({k: v.float() for k, v in saved.state_dict().items()})
    rebuilt.model[-1].end2end = saved.model[-1].end2end  # a head flag, not a weight: same output layout
    rebuilt.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        expected = rebuilt(torch.rand(2, 3, TINY_IMGSZ, TINY_IMGSZ))
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    assert torch.allclose(reopened, expected, atol=1e-5)


class _Interrupt(RuntimeError):
    pass


def _interrupt(trainer):
    raise _Interrupt("simulated crash after epoch 1")


def test_interrupted_qat_run_resumes_with_its_scheme(prepared_dataset, tmp_path, monkeypatch):
    request = tiny_train_request(
        tmp_path, prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w4a16-fl8", epochs=2
    )
    monkeypatch.setitem(run_logging.RUN_CALLBACKS, "on_model_save", _interrupt)
    with pytest.raises(_Interrupt):
        train_stage(request)
    monkeypatch.undo()
    paths = request.paths
    assert quant_scheme_of(torch.load(paths.last, weights_only=False)["ema"]) == named_scheme("w4a16-fl8")
    resumed = train_stage(
        tiny_train_request(
            tmp_path, prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w4a16-fl8", epochs=2, resume=True
        )
    )
    assert resumed.status == "finished" and resumed.resumed and resumed.epochs_completed == 2
    assert quant_scheme_of(torch.load(paths.best, weights_only=False)["model"]) == named_scheme("w4a16-fl8")


def test_nonfinite_loss_is_reported_with_epoch_and_batch(prepared_dataset, tmp_path):
    from auto_quantize_model.ultralytics_ext.trainers import ScratchDetectionTrainer

    trainer = ScratchDetectionTrainer(
        overrides={
            "model": "yolov10n.yaml",
            "data": str(prepared_dataset.dataset_yaml),
            "device": "cpu",
            "project": str(tmp_path),
            "name": "nan",
            "exist_ok": True,
        }
    )
    trainer.epoch, trainer.aqm_batch_index, trainer.loss = 4, 7, torch.tensor(float("nan"))
    run_logging.on_train_batch_end(trainer)
    events = [json.loads(line) for line in (tmp_path / "nan" / "nonfinite_losses.jsonl").read_text().splitlines()]
    assert events == [{"epoch": 5, "batch": 7, "loss": "nan"}]
    assert trainer.aqm_nonfinite_count == 1


# Runs Ultralytics' generated DDP file itself (as each DDP worker does), with train() replaced by a report of
# what the rebuilt trainer holds: its class, scheme, quantized model and run callbacks.
_DDP_WORKER = """
import json, runpy, sys
import auto_quantize_model
from auto_quantize_model.quant.yolov10 import quant_scheme_of, quantized_layers
from auto_quantize_model.ultralytics_ext.callbacks import RUN_CALLBACKS
from auto_quantize_model.ultralytics_ext.trainers import QATDetectionTrainer

def report(trainer):
    print(json.dumps({
        "trainer": type(trainer).__name__,
        "scheme": trainer.quant_scheme.name,
        "model_scheme": quant_scheme_of(trainer.model).name,
        "quantized": len(list(quantized_layers(trainer.model))),
        "callbacks": {event: trainer.callbacks[event].count(fn) for event, fn in RUN_CALLBACKS.items()},
    }))

QATDetectionTrainer.train = report
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def test_scheme_and_callbacks_survive_ultralytics_ddp_relaunch(prepared_dataset, tmp_path):
    """Build the real DDP temp file, then run it in a fresh process, as each DDP worker does."""
    from ultralytics.utils.dist import generate_ddp_file

    from auto_quantize_model.train import resolve_train_args
    from auto_quantize_model.ultralytics_ext.trainers import (
        QUANT_SCHEME_ENV,
        QATDetectionTrainer,
        _scheme_in_environment,
    )

    request = tiny_train_request(tmp_path, prepared_dataset.dataset_yaml, quantized=True, quant_scheme="w4a16-flfp")
    trainer = QATDetectionTrainer(overrides=resolve_train_args(request), quant_scheme=named_scheme("w4a16-flfp"))
    trainer.model = trainer.get_model(cfg=trainer.args.model, verbose=False)  # what _setup_train holds at launch
    script = generate_ddp_file(trainer)
    # Building a trainer leaves the process environment alone; train() sets the scheme for the DDP
    # launch it may do, and the launched workers inherit it.
    assert QUANT_SCHEME_ENV not in os.environ
    with _scheme_in_environment(trainer.quant_scheme):
        done = subprocess.run([sys.executable, "-c", _DDP_WORKER, script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert QUANT_SCHEME_ENV not in os.environ
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["trainer"] == "QATDetectionTrainer" and report["scheme"] == report["model_scheme"] == "w4a16-flfp"
    assert 0 < report["quantized"] < 107  # first conv and head prediction convs left float
    assert set(report["callbacks"].values()) == {1}, report["callbacks"]  # every run callback, each once
