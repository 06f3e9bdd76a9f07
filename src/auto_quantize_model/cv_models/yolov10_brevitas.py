"""Old import path of the quantized layers, kept so that checkpoints pickled before the move load.

QAT checkpoints written before the ``quant`` package existed name
``auto_quantize_model.cv_models.yolov10_brevitas.WeightQuantConv2d`` (and its rebuild function and
model class) inside their pickles. New code imports :mod:`auto_quantize_model.quant`.
"""

from auto_quantize_model.quant.scheme import QuantScheme  # noqa: F401
from auto_quantize_model.quant.yolov10 import (  # noqa: F401
    QuantDetectionModel,
    WeightQuantConv2d,
    _BranchSum,
    _rebuild_weight_quant_conv,
)
