"""The selection split: train images set aside to choose checkpoints on, never the val images that are scored.

Ultralytics' ``best.pt`` is the epoch of highest fitness on the data YAML's ``val:`` split. Scoring that
checkpoint on the same images favours the noisiest training curve, so a run that wants a best epoch
(``checkpoint_policy: best-on-selection``) carves a seeded subset out of the train images. The dataset
writer (:mod:`auto_quantize_model.data.coco_dataset`) writes it as ``images/selection/`` +
``labels/selection/`` and ``dataset-selection.yaml`` (``val: images/selection``), and records its image
ids in ``provenance.json``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SELECTION_SPLIT = "selection"
SELECTION_DATASET_YAML = "dataset-selection.yaml"


def carve_selection(train_ids: list[int], count: int | None, seed: int) -> tuple[list[int], list[int]]:
    """``(train ids left, selection ids)``: a seeded random ``count`` of ``train_ids``, both in id order.

    Raises ``ValueError`` when the selection would leave nothing to train on.
    """
    if count is None:
        return train_ids, []
    if count >= len(train_ids):
        raise ValueError(
            f"selection_images={count}: carved out of {len(train_ids)} usable train images it leaves none to "
            "train on; lower --selection-images"
        )
    selection = sorted(random.Random(f"selection-{seed}").sample(train_ids, count))
    chosen = set(selection)
    return [i for i in train_ids if i not in chosen], selection


def shared_files(selection_files: Iterable[Path], val_files: Iterable[Path]) -> list[Path]:
    """Selection images that are also val images (resolved paths); a selection must share none."""
    val = {Path(path).resolve() for path in val_files}
    return [path for path in selection_files if Path(path).resolve() in val]


def selection_record(image_ids: list[int], seed: int, counts: dict[str, Any]) -> dict[str, Any]:
    """The selection split's entry in ``provenance.json``: where it came from and exactly which images."""
    return {"carved_from": "train", "seed": seed, "images": len(image_ids), "image_ids": image_ids, "counts": counts}
