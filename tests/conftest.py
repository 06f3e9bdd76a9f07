"""Shared fixtures: a tiny synthetic COCO set, prepared for Ultralytics, and tiny real training runs.

The training runs are session-scoped: one FP16 and one W4A16 yolov10n run (2 epochs at
imgsz 64 on CPU) serve every test that needs a trained checkpoint, so CI trains each once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)

TINY_MODEL = "yolov10n.yaml"
TINY_IMGSZ = 64
TINY_EPOCHS = 2


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory) -> Path:
    """A 24-train / 8-val synthetic COCO2017-layout source folder."""
    from auto_quantize_model.data.synthetic import generate_synthetic_coco

    return generate_synthetic_coco(tmp_path_factory.mktemp("synthetic") / "coco", 24, 8, imgsz=96, seed=0).root


@pytest.fixture(scope="session")
def prepared_dataset(synthetic_source, tmp_path_factory):
    """The synthetic source turned into an Ultralytics dataset (PreparedDataset)."""
    from auto_quantize_model.data.coco_dataset import prepare_coco_dataset

    return prepare_coco_dataset(synthetic_source, tmp_path_factory.mktemp("prepared") / "dataset")


def tiny_train_request(run_root: Path, data: Path, **changes):
    """A TrainRequest for a 2-epoch yolov10n run at imgsz 64 on CPU."""
    from auto_quantize_model.train import TrainRequest

    settings = dict(
        run_root=run_root,
        data=data,
        model=TINY_MODEL,
        epochs=TINY_EPOCHS,
        imgsz=TINY_IMGSZ,
        batch=8,
        device="cpu",
        workers=0,
        overrides={"plots": False},
    )
    settings.update(changes)
    return TrainRequest(**settings)


@pytest.fixture(scope="session")
def fp16_run(prepared_dataset, tmp_path_factory):
    """A finished tiny FP16 stage (TrainResult) in its own run root."""
    from auto_quantize_model.train import train_stage

    run_root = tmp_path_factory.mktemp("run")
    return train_stage(tiny_train_request(run_root, prepared_dataset.dataset_yaml))


@pytest.fixture(scope="session")
def qat_run(prepared_dataset, fp16_run):
    """A finished tiny W4A16 QAT stage in the same run root as ``fp16_run``."""
    from auto_quantize_model.train import train_stage

    return train_stage(tiny_train_request(fp16_run.paths.dir.parents[1], prepared_dataset.dataset_yaml, quantized=True))
