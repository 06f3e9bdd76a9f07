"""In-training validation and the ONNX evaluator see the same letterboxed inputs.

The trainers validate on square batches (``rect=False``), so every val image reaches the model as
the same ``imgsz x imgsz`` tensor the fixed-size ONNX model gets from the evaluator. With that, the
two mAP tables of a summary differ only by AP integration and export error. Ultralytics' default
(``rect=True`` for val) would give e.g. 160x128 inputs for a 4:3 image; this test would then fail.
"""

from __future__ import annotations

import numpy as np
import torch

from auto_quantize_model.onnx_io.preprocess import LETTERBOX_MODE, letterbox, read_image

IMGSZ = 96


def test_trainer_val_batches_are_the_evaluators_letterboxed_inputs(prepared_dataset, tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    from auto_quantize_model.ultralytics_ext.trainers import ScratchDetectionTrainer

    trainer = ScratchDetectionTrainer(
        overrides={
            "model": "yolov10n.yaml",
            "data": str(prepared_dataset.dataset_yaml),
            "imgsz": IMGSZ,
            "device": "cpu",
            "project": str(tmp_path),
            "name": "t",
            "plots": False,
            "workers": 0,
            "batch": 4,
        }
    )
    trainer.model = DetectionModel("yolov10n.yaml", nc=len(trainer.data["names"]), verbose=False)
    dataset = trainer.build_dataset(trainer.data["val"], mode="val", batch=4)
    assert not dataset.rect
    shapes = set()
    for index in range(len(dataset)):
        item = dataset[index]
        image = read_image(item["im_file"])
        expected, _ = letterbox(image, IMGSZ, mode=LETTERBOX_MODE)
        got = item["img"].numpy().astype(np.float32) / np.float32(255.0)  # RGB uint8 CHW (Format flips BGR) -> [0, 1]
        assert got.shape == expected.shape == (3, IMGSZ, IMGSZ)
        np.testing.assert_array_equal(got, expected)
        shapes.add(tuple(image.shape[:2]))
    assert any(h != w for h, w in shapes), "the val set needs non-square images for this test to mean anything"
    assert isinstance(dataset[0]["img"], torch.Tensor)
