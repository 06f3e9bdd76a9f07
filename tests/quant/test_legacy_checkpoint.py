"""QAT checkpoints pickled by earlier layouts of the package still open and give the same output.

Both fixtures are a tiny yolov10n-shaped model (width 0.0625, 5 classes) quantized with ``w4a16-fl8`` and saved
the way Ultralytics saves (fp16); each ``.io.pt`` twin holds an input and the output the writing code computed.

- ``legacy_qat_w4a16_fl8_tiny.pt``: written by commit 5b1e6b8, before the ``quant`` package existed (module path
  ``auto_quantize_model.cv_models.yolov10_brevitas``).
- ``premove_qat_w4a16_fl8_tiny.pt``: written by commit e39ec69, before the layout move of issue 20 (stage
  modules at the top, helpers in subpackages), with ``make_premove_checkpoint.py`` beside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import auto_quantize_model  # noqa: F401  (offline Ultralytics)

DATA = Path(__file__).resolve().parents[1] / "fixtures"
OLD_CHECKPOINTS = ["legacy_qat_w4a16_fl8_tiny.pt", "premove_qat_w4a16_fl8_tiny.pt"]


@pytest.mark.parametrize("name", OLD_CHECKPOINTS)
def test_old_checkpoint_opens_with_ultralytics_yolo_and_gives_the_same_output(name):
    from ultralytics import YOLO

    from auto_quantize_model.quant.yolov10 import QuantDetectionModel, quant_scheme_of, quantized_layers

    checkpoint = DATA / name
    model = YOLO(str(checkpoint)).model
    assert isinstance(model, QuantDetectionModel)
    assert quant_scheme_of(model).name == "w4a16-fl8"
    assert {layer.bit_width for _, layer in quantized_layers(model)} == {4, 8}
    saved = torch.load(checkpoint.with_suffix(".io.pt"), weights_only=False)
    with torch.no_grad():
        out = model.float().eval()(saved["input"])[0]
    torch.testing.assert_close(out, saved["output"], rtol=0, atol=1e-5)


def test_new_checkpoints_name_the_quant_package():
    from auto_quantize_model.quant.yolov10 import WeightQuantConv2d

    assert WeightQuantConv2d.__module__ == "auto_quantize_model.quant.yolov10"
