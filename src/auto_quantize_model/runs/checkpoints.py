"""Crash-safe training checkpoints: atomic writes and an intact/torn check.

Ultralytics writes ``last.pt``/``best.pt`` in place (``Path.write_bytes`` in ``save_model``) and
``strip_optimizer`` rewrites them with ``torch.save`` in place, so a kill or a full disk mid-write
leaves a truncated file under the final name. The two hooks here make every such write
"temp file in the same folder, fsync, rename":

* :func:`staged_checkpoint_writes` points the trainer's ``wdir``/``last``/``best`` at a staging
  folder inside ``weights/`` for the duration of ``save_model`` and then publishes each file it
  wrote with :func:`publish_file` (``best.pt`` and ``epochN.pt`` first, ``last.pt`` last: ``last.pt``
  is the commit point of an epoch).
* :func:`atomic_strip_optimizer` swaps the ``strip_optimizer`` that ``BaseTrainer.final_eval``
  calls for one that writes through a temp file.

:func:`inspect_checkpoint` tells an intact checkpoint (with its epoch and whether it can resume)
from a torn one; :func:`set_aside` moves a torn one out of the way (kept, never deleted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.run_root import BEST_PT, LAST_PT
from auto_quantize_model.utils.errors import first_line

STAGING_DIR_NAME = ".saving"  # inside weights/: same filesystem, so the final rename is atomic


def publish_file(tmp: Path, final: Path) -> Path:
    """fsync ``tmp``, rename it onto ``final`` and fsync the folder, so the rename itself survives a crash."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_order(name: str) -> tuple[int, str]:
    return (name == LAST_PT, name)  # last.pt last: a published last.pt means the whole epoch is saved


@contextlib.contextmanager
def staged_checkpoint_writes(trainer: Any) -> Iterator[None]:
    """Redirect ``trainer.save_model``'s writes to ``weights/.saving/`` and publish them atomically afterwards.

    If the block raises (e.g. ENOSPC), nothing is published and the previous checkpoints stay intact.
    """
    final_dir, last, best = Path(trainer.wdir), trainer.last, trainer.best
    staging = final_dir / STAGING_DIR_NAME
    shutil.rmtree(staging, ignore_errors=True)  # a half-written save of a killed process
    staging.mkdir(parents=True)
    trainer.wdir, trainer.last, trainer.best = staging, staging / last.name, staging / best.name
    try:
        yield
        for staged in sorted(staging.iterdir(), key=lambda path: _publish_order(path.name)):
            publish_file(staged, final_dir / staged.name)
    finally:
        trainer.wdir, trainer.last, trainer.best = final_dir, last, best
        shutil.rmtree(staging, ignore_errors=True)


def _atomic_variant(strip_optimizer):
    """``strip_optimizer(f, s, updates)`` that writes ``s or f`` through a temp file beside it."""

    def atomic_strip(f: str | Path = BEST_PT, s: str = "", updates: dict[str, Any] | None = None) -> dict[str, Any]:
        target = Path(s or f)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            result = strip_optimizer(f, s=str(tmp), updates=updates)
            if tmp.is_file():  # nothing is written for a file that is not a checkpoint
                publish_file(tmp, target)
            return result
        finally:
            tmp.unlink(missing_ok=True)

    return atomic_strip


@contextlib.contextmanager
def atomic_strip_optimizer() -> Iterator[None]:
    """While the block runs, ``BaseTrainer.final_eval`` strips ``last.pt``/``best.pt`` atomically.

    ``final_eval`` looks ``strip_optimizer`` up in ``ultralytics.engine.trainer``'s namespace, so that
    one name is swapped and restored; Ultralytics' function itself does the work.
    """
    import ultralytics.engine.trainer as trainer_module

    original = trainer_module.strip_optimizer
    trainer_module.strip_optimizer = _atomic_variant(original)
    try:
        yield
    finally:
        trainer_module.strip_optimizer = original


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file holds, as far as resuming and finishing a stage care."""

    path: Path
    intact: bool
    error: str | None = None  # why it is not intact
    epoch: int | None = None  # last completed epoch (0-based); -1 once strip_optimizer ran
    epochs: int | None = None  # the run's target epochs (train_args)
    has_optimizer: bool = False
    quant_scheme: str | None = None  # the scheme name of a QAT/PTQ checkpoint, None for a float one

    @property
    def stripped(self) -> bool:
        """``final_eval`` already ran on it: training finished."""
        return self.intact and (self.epoch == -1 or not self.has_optimizer)

    @property
    def final_epoch_saved(self) -> bool:
        """The checkpoint of the run's last epoch (or a stripped one): nothing left to train."""
        if not self.intact:
            return False
        return self.stripped or (self.epoch is not None and self.epochs is not None and self.epoch + 1 >= self.epochs)

    @property
    def can_resume(self) -> bool:
        """Ultralytics can continue training from it (``0 < epoch + 1 < epochs``, optimizer state present)."""
        return self.intact and self.has_optimizer and not self.final_epoch_saved and (self.epoch or 0) >= 0


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Load ``path`` fully (a torn zip or pickle fails here) and read epoch, target epochs and optimizer state."""
    from ultralytics.utils.patches import torch_load

    from auto_quantize_model.quant.yolov10 import quant_scheme_of  # QAT layers must be importable to unpickle

    path = Path(path)
    if not path.is_file():
        return CheckpointInfo(path, intact=False, error="missing")
    if path.stat().st_size == 0:
        return CheckpointInfo(path, intact=False, error="empty file (0 bytes)")
    try:
        ckpt = torch_load(path, map_location="cpu")
    except Exception as error:  # noqa: BLE001  (torch/zip/pickle raise many types for a torn file)
        return CheckpointInfo(path, intact=False, error=f"{type(error).__name__}: {first_line(error)}")
    if not isinstance(ckpt, dict) or not (ckpt.get("ema") or ckpt.get("model")):
        return CheckpointInfo(path, intact=False, error="not an Ultralytics checkpoint (no 'ema' or 'model')")
    epochs = (ckpt.get("train_args") or {}).get("epochs")
    scheme = quant_scheme_of(ckpt.get("ema") or ckpt.get("model"))
    return CheckpointInfo(
        path,
        intact=True,
        epoch=int(ckpt.get("epoch", -1)),
        epochs=int(epochs) if epochs is not None else None,
        has_optimizer=ckpt.get("optimizer") is not None,
        quant_scheme=scheme.name if scheme is not None else None,
    )


def set_aside(path: Path, target: Path) -> Path:
    """Move a torn checkpoint to ``target`` (the run root's set-aside folder; kept for inspection, never deleted)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target
