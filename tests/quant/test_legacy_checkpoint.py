"""A QAT checkpoint pickled before the ``quant`` package existed still opens.

``tests/fixtures/legacy_qat_w4a16_fl8_tiny.pt`` was written by the code of commit 5b1e6b8 (module path
``auto_quantize_model.cv_models.yolov10_brevitas``): a tiny yolov10n-shaped model (width 0.0625,
5 classes) quantized with ``w4a16-fl8`` and saved the way Ultralytics saves (``model.half()``).
Its ``.io.pt`` twin holds an input and the output that code computed.
"""

from __future__ import annotations

from pathlib import Path

import torch

import auto_quantize_model  # noqa: F401  (offline Ultralytics)

DATA = Path(__file__).resolve().parents[1] / "fixtures"
LEGACY = DATA / "legacy_qat_w4a16_fl8_tiny.pt"


def test_legacy_checkpoint_opens_with_ultralytics_yolo_and_gives_the_same_output():
    from ultralytics import YOLO

    from auto_quantize_model.quant.yolov10 import QuantDetectionModel, quant_scheme_of, quantized_layers

    model = YOLO(str(LEGACY)).model
    assert isinstance(model, QuantDetectionModel)
    assert quant_scheme_of(model).name == "w4a16-fl8"
    assert {layer.bit_width for _, layer in quantized_layers(model)} == {4, 8}
    saved = torch.load(LEGACY.with_suffix(".io.pt"), weights_only=False)
    with torch.no_grad():
        out = model.float().eval()(saved["input"])[0]
    torch.testing.assert_close(out, saved["output"], rtol=0, atol=1e-5)


def test_new_checkpoints_name_the_quant_package():
    from auto_quantize_model.quant.yolov10 import WeightQuantConv2d

    assert WeightQuantConv2d.__module__ == "auto_quantize_model.quant.yolov10"
