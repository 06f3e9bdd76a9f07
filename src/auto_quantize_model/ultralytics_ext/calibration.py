"""Calibration images for post-training quantization: train images as the evaluator sees them, never val."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CALIBRATION_SPLIT = "train"


@dataclass(frozen=True)
class CalibrationSet:
    """The images :func:`calibration_set` picked (files, in batch order) and their float batches."""

    files: tuple[str, ...]
    batches: list[Any]

    def sha256(self) -> str:
        """Over the files' names and bytes: what a calibration depends on."""
        import hashlib

        digest = hashlib.sha256()
        for file in self.files:
            digest.update(Path(file).name.encode() + b"\0" + Path(file).read_bytes())
        return digest.hexdigest()


def calibration_images(data: Path, imgsz: int, batch: int, count: int, device: str, seed: int = 0) -> list[Any]:
    """The float batches of :func:`calibration_set`."""
    return calibration_set(data, imgsz, batch, count, device, seed).batches


def calibration_set(data: Path, imgsz: int, batch: int, count: int, device: str, seed: int = 0) -> CalibrationSet:
    """``count`` train images (a seeded random subset), letterboxed square without augmentation, as float batches.

    The evaluator's preprocessing (``YOLO(onnx).val()``'s letterbox) on the *train* split: calibration never sees
    a val image.
    """
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.torch_utils import select_device

    spec = check_det_dataset(str(data))
    cfg = get_cfg(overrides={"data": str(data), "imgsz": imgsz, "batch": batch, "workers": 0})
    dataset = build_yolo_dataset(cfg, spec[CALIBRATION_SPLIT], batch, spec, mode="val", rect=False, stride=32)
    if count > len(dataset):
        raise ValueError(
            f"calib_images={count} but the train split of {data} has {len(dataset)} images; "
            f"lower it to <= {len(dataset)}"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, order), batch_size=batch, shuffle=False, collate_fn=dataset.collate_fn
    )
    target = select_device(device, verbose=False)
    batches = [item["img"].to(target).float() / 255 for item in loader]
    return CalibrationSet(tuple(dataset.im_files[index] for index in order), batches)
