"""Calibration images for post-training quantization: train images as the evaluator sees them, never val."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def calibration_images(data: Path, imgsz: int, batch: int, count: int, device: str, seed: int = 0) -> list[Any]:
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
    dataset = build_yolo_dataset(cfg, spec["train"], batch, spec, mode="val", rect=False, stride=32)
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
    return [item["img"].to(target).float() / 255 for item in loader]
