"""Ultralytics' ``DetectionValidator`` with the trainer's val settings, on the first N val images of a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.quant.sensitivity import SweepInputError
from auto_quantize_model.utils.io import write_text_atomic

IMAGE_SUFFIXES = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"}


def val_image_files(data: Path) -> tuple[dict[str, Any], list[str]]:
    """The dataset spec (Ultralytics' ``check_det_dataset``) and its val images, sorted as Ultralytics sorts them."""
    import glob
    import os

    from ultralytics.data.utils import check_det_dataset

    spec = check_det_dataset(str(data))
    files: list[str] = []
    for entry in spec["val"] if isinstance(spec["val"], list) else [spec["val"]]:
        path = Path(entry)
        if path.is_dir():
            files += glob.glob(str(Path(glob.escape(str(path))) / "**" / "*.*"), recursive=True)
        elif path.is_file():
            lines = path.read_text(encoding="utf-8-sig").strip().splitlines()
            files += [
                line.replace("./", str(path.parent) + os.sep, 1) if line.startswith("./") else line for line in lines
            ]
        else:
            raise SweepInputError(f"{data}: val entry {entry} does not exist")
    images = sorted(f for f in files if f.rpartition(".")[-1].lower() in IMAGE_SUFFIXES)
    if not images:
        raise SweepInputError(f"{data}: no val images found under {spec['val']}")
    return spec, images


@dataclass(frozen=True)
class ValSubset:
    """The val images a sweep measures on: the first N (sorted as Ultralytics sorts them) of the dataset's val split."""

    spec: dict[str, Any]  # the dataset YAML as Ultralytics' check_det_dataset resolves it
    images: tuple[str, ...]
    sha256: str  # over the images' names and label files: what the measurement depends on


def select_val_images(data: Path, max_images: int | None) -> ValSubset:
    """The first ``max_images`` val images of ``data`` (all when None) and their sha256; writes nothing."""
    import hashlib

    from ultralytics.data.utils import img2label_paths

    spec, images = val_image_files(data)
    chosen = tuple(images[:max_images] if max_images else images)
    digest = hashlib.sha256()
    for image, label in zip(chosen, img2label_paths(list(chosen))):
        digest.update(Path(image).name.encode() + b"\0")
        digest.update(Path(label).read_bytes() if Path(label).is_file() else b"<no label>")
    return ValSubset(spec, chosen, digest.hexdigest())


def write_val_subset(subset: ValSubset, folder: Path) -> Path:
    """A dataset YAML whose val split is a list file of ``subset``'s images; the train entry is the original's."""
    import yaml

    listing = write_text_atomic(folder / "val_images.txt", "".join(f"{image}\n" for image in subset.images))
    spec = subset.spec
    train = spec["train"] if isinstance(spec["train"], (str, list)) else str(spec["train"])
    content = {
        "path": str(folder.resolve()),
        "train": train,
        "val": str(listing.resolve()),
        "nc": spec["nc"],
        "names": dict(spec["names"]),
    }
    return write_text_atomic(folder / "dataset.yaml", yaml.safe_dump(content, sort_keys=False))


class TrainerLikeValidator:
    """Ultralytics' ``DetectionValidator`` with the trainer's val settings; the dataloader is built once."""

    def __init__(self, data_yaml: Path, imgsz: int, batch: int, device: str, save_dir: Path) -> None:
        self.args = {
            "data": str(data_yaml),
            "imgsz": imgsz,
            "batch": batch,
            "device": device,
            "mode": "val",
            "task": "detect",
            "nms": False,
            "rect": False,
            "plots": False,
            "save_json": False,
            "verbose": False,
        }
        self.save_dir = save_dir
        self.dataloader = None

    def map50_95(self, model: Any) -> float:
        """val mAP50-95 of ``model`` (the validator fuses it in place: pass a copy you do not need back)."""
        from ultralytics.models.yolo.detect import DetectionValidator

        with _quiet_ultralytics():
            validator = DetectionValidator(dataloader=self.dataloader, save_dir=self.save_dir, args=dict(self.args))
            validator(model=model)
        self.dataloader = validator.dataloader
        return float(validator.metrics.box.map)


class _quiet_ultralytics:
    """Raise Ultralytics' logger to WARNING for one validation (its per-run tables would bury the progress lines)."""

    def __enter__(self) -> None:
        import logging

        from ultralytics.utils import LOGGER

        self._logger, self._level = LOGGER, LOGGER.level
        LOGGER.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
