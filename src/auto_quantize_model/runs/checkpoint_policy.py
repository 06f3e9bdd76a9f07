"""Which checkpoint of a training is exported and scored: the run's ``checkpoint_policy`` (torch-free).

Ultralytics writes ``last.pt`` (the final epoch) and ``best.pt`` (the epoch of highest fitness on the data
YAML's ``val:`` split). Scoring ``best.pt`` on the same val images that chose it favours the noisiest
training curve, so the policies are:

* ``last`` (the default of every profile): export and score ``last.pt``; nothing is selected.
* ``best-on-selection``: ``best.pt``, chosen on a selection split carved out of the train images
  (profile key ``selection_images``; the trainings validate on it, the ONNX evaluator keeps scoring val).
* ``best-on-val``: ``best.pt`` chosen on the scored val images; only when asked for, and the summary
  says so beside every number.

Every variant follows the same policy: PTQ quantizes the ``fp16`` checkpoint the policy picks (``ptq-<scheme>-ft``:
the ``fp16-ft`` one) and writes its result under the same file name, fine-tunes start from the ``fp16`` one. The
producers (the stage plan) and the reader (the summary) both ask :func:`scored_checkpoint` and :func:`scored_epoch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auto_quantize_model.runs.run_root import SeedRoot, TrainRunPaths
from auto_quantize_model.runs.variants import FP_VARIANT, Variant

LAST = "last"
BEST_ON_SELECTION = "best-on-selection"
BEST_ON_VAL = "best-on-val"
POLICIES = (LAST, BEST_ON_SELECTION, BEST_ON_VAL)
# train_metadata.json keys written by the training stage and read here.
CHECKPOINTS_KEY = "checkpoints"  # {"last": {"epoch": E}, "best": {"epoch": E, "chosen_on": split}}
SELECTED_ON_SCORED_NOTE = "checkpoint selected on the scored images"


def checkpoint_name(policy: str) -> str:
    """``last`` or ``best``: the checkpoint (``weights/<name>.pt``) the policy exports and scores."""
    if policy not in POLICIES:
        raise ValueError(f"checkpoint_policy {policy!r}: expected one of {', '.join(POLICIES)}")
    return LAST if policy == LAST else "best"


def scored_checkpoint(paths: TrainRunPaths, policy: str) -> Path:
    """The file the policy exports from a training (or PTQ) folder."""
    return paths.last if checkpoint_name(policy) == LAST else paths.best


def fp_checkpoint(seed_root: SeedRoot, policy: str) -> Path:
    """The seed's ``fp16`` checkpoint that PTQ quantizes and fine-tunes start from."""
    return scored_checkpoint(seed_root.train_run(FP_VARIANT), policy)


def ptq_input_checkpoint(seed_root: SeedRoot, variant: Variant, policy: str) -> Path:
    """The float checkpoint a PTQ variant quantizes: its :attr:`~Variant.ptq_source`'s (``fp16`` or ``fp16-ft``)."""
    if variant.ptq_source is None:
        raise ValueError(f"variant {variant.name} is not post-training quantized")
    return scored_checkpoint(seed_root.train_run(variant.ptq_source), policy)


def scored_epoch(seed_root: SeedRoot, variant: Variant, policy: str) -> int | None:
    """The training epoch (1-based, of the variant's own training) the scored checkpoint was saved at.

    A PTQ variant has no training: its checkpoint is the one of the same policy of the float variant it quantizes
    (``fp16``, or ``fp16-ft`` for ``ptq-<scheme>-ft``), so it has that epoch. ``None`` when the training did not
    record it (still running, or an older run root).
    """
    trained = variant.ptq_source or variant.name
    record = checkpoint_record(seed_root.train_run(trained), policy)
    epoch = record.get("epoch") if record else None
    return int(epoch) if epoch is not None else None


def checkpoint_record(paths: TrainRunPaths, policy: str) -> dict[str, Any] | None:
    """The training's record of the policy's checkpoint (``{"epoch": ..., "chosen_on": ...}``), if any."""
    try:
        checkpoints = paths.read_metadata().get(CHECKPOINTS_KEY) or {}
    except ValueError:  # a torn file: the summary names it elsewhere
        return None
    return checkpoints.get(checkpoint_name(policy))
