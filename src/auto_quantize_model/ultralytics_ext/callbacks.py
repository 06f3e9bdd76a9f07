"""Ultralytics trainer callbacks shared by the FP16 and QAT runs.

They add what the plan asks of every training run without touching Ultralytics' loop:
TensorBoard event files, loss curves (CSV + PNG) refreshed every epoch, a guard that
reports any non-finite loss with its epoch and batch, and the epoch each checkpoint holds. Callbacks are module-level
functions so Ultralytics' DDP launcher can pickle them by reference.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ultralytics.utils import LOGGER, RANK

from auto_quantize_model.runs.executors import STAGE_THREADS_ENV
from auto_quantize_model.runs.run_root import TrainRunPaths
from auto_quantize_model.ultralytics_ext.loss_curves import write_loss_curves
from auto_quantize_model.utils.io import write_json_atomic

# Per-iteration scalars are written every this many batches (epoch scalars always).
ITERATION_LOG_INTERVAL = 10
# Set on the trainer while Ultralytics' final validation of best.pt runs (ScratchDetectionTrainer.final_eval).
FINAL_EVAL_FLAG = "aqm_final_eval"
FINAL_VAL_PREFIX = "final_val"  # TensorBoard tags of that validation: final_val/metrics/mAP50-95(B), ...


def _paths(trainer) -> TrainRunPaths:
    return TrainRunPaths(Path(trainer.save_dir))


def _is_main_process() -> bool:
    return RANK in {-1, 0}


def _scalar(value) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def on_pretrain_routine_start(trainer) -> None:
    """Give torch the stage's explicit thread count, when the runner set one (profile key ``stage_threads``).

    Ultralytics' ``select_device`` sets torch's threads to ``min(8, cpus - 1)`` on CPU whatever the executor gave
    the stage; this runs after it, so a stage's numbers do not depend on the executor or the machine's size.
    """
    threads = os.environ.get(STAGE_THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def on_pretrain_routine_end(trainer) -> None:
    """Open the TensorBoard writer in ``<save_dir>/tensorboard``."""
    if not _is_main_process():
        return
    from torch.utils.tensorboard import SummaryWriter

    trainer.aqm_tb_writer = SummaryWriter(str(_paths(trainer).tensorboard_dir))
    trainer.aqm_batch_index = 0


def on_train_epoch_start(trainer) -> None:
    """Reset the batch counter used to name a non-finite loss's batch."""
    trainer.aqm_batch_index = 0


def on_train_batch_end(trainer) -> None:
    """Log per-iteration losses and report a non-finite loss with its epoch and batch."""
    batch_index = getattr(trainer, "aqm_batch_index", 0)
    trainer.aqm_batch_index = batch_index + 1
    if trainer.loss is None:  # an OOM retry cleared it
        return
    loss = _scalar(trainer.loss)
    if not math.isfinite(loss):
        _report_nonfinite_loss(trainer, batch_index, loss)
    writer = getattr(trainer, "aqm_tb_writer", None)
    if writer is None or batch_index % ITERATION_LOG_INTERVAL:
        return
    step = trainer.epoch * max(len(trainer.train_loader), 1) + batch_index
    for name, value in (trainer.loss_items or {}).items():
        writer.add_scalar(f"train_iter/{name}", _scalar(value), step)


def _report_nonfinite_loss(trainer, batch_index: int, loss: float) -> None:
    """Warn loudly and append the event to ``nonfinite_losses.jsonl``.

    Ultralytics' own NaN recovery (reload of last.pt at epoch end, fail after 3 attempts)
    stays in charge of what happens next; this makes sure it is never silent.
    """
    event = {"epoch": trainer.epoch + 1, "batch": batch_index, "loss": repr(loss)}
    LOGGER.warning(f"Non-finite training loss {loss!r} at epoch {event['epoch']}, batch {batch_index}")
    trainer.aqm_nonfinite_count = getattr(trainer, "aqm_nonfinite_count", 0) + 1
    if _is_main_process():
        with open(_paths(trainer).nonfinite_log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")


def on_fit_epoch_end(trainer) -> None:
    """Write epoch scalars to TensorBoard and refresh the loss curves from ``results.csv``.

    Ultralytics also calls this after its final validation of best.pt, with ``epoch`` raised by one; those metrics
    go under ``final_val/`` at the last epoch's step, so no curve gets a fake extra epoch (loss and lr repeated).
    """
    if not _is_main_process():
        return
    writer = getattr(trainer, "aqm_tb_writer", None)
    if writer is not None and getattr(trainer, FINAL_EVAL_FLAG, False):
        for name, value in trainer.metrics.items():
            writer.add_scalar(f"{FINAL_VAL_PREFIX}/{name}", _scalar(value), trainer.epoch)
        writer.flush()
    elif writer is not None:
        scalars = {**trainer.label_loss_items(trainer.tloss, prefix="train"), **trainer.metrics, **trainer.lr}
        for name, value in scalars.items():
            writer.add_scalar(name, _scalar(value), trainer.epoch + 1)
        writer.flush()
    paths = _paths(trainer)
    if paths.results_csv.is_file():
        write_loss_curves(paths.results_csv, paths.loss_curves_csv, paths.loss_curves_png, title=paths.name)


def on_model_save(trainer) -> None:
    """Record the epoch (1-based) last.pt and best.pt now hold in ``checkpoint_epochs.json``.

    ``strip_optimizer`` sets a finished checkpoint's own ``epoch`` to -1 and overwrites best.pt's results with
    last.pt's, so the scored checkpoint's epoch is only known here. ``save_model`` has just written best.pt
    exactly when ``best_fitness == fitness``; the file survives a resume.
    """
    if not _is_main_process():
        return
    paths = _paths(trainer)
    epochs = paths.read_checkpoint_epochs()
    epochs["last"] = trainer.epoch + 1
    if trainer.best_fitness == trainer.fitness:
        epochs["best"] = trainer.epoch + 1
    write_json_atomic(paths.checkpoint_epochs_json, epochs)


def on_train_end(trainer) -> None:
    """Close the TensorBoard writer."""
    writer = getattr(trainer, "aqm_tb_writer", None)
    if writer is not None:
        writer.close()
        trainer.aqm_tb_writer = None


RUN_CALLBACKS = {
    "on_pretrain_routine_start": on_pretrain_routine_start,
    "on_pretrain_routine_end": on_pretrain_routine_end,
    "on_train_epoch_start": on_train_epoch_start,
    "on_train_batch_end": on_train_batch_end,
    "on_fit_epoch_end": on_fit_epoch_end,
    "on_model_save": on_model_save,
    "on_train_end": on_train_end,
}


def attach_run_callbacks(trainer) -> None:
    """Register the callbacks above on ``trainer`` once (DDP workers inherit them pickled)."""
    for event, callback in RUN_CALLBACKS.items():
        if callback not in trainer.callbacks.get(event, []):
            trainer.add_callback(event, callback)
