"""Loading an Ultralytics detection checkpoint and preparing its model for ONNX export the way Ultralytics' exporter
does (eval, fuse, head flags), shared by the export stage, its validation, PTQ and the sensitivity sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auto_quantize_model.onnx_io.contract import INPUT_NAME, OUTPUT_NAME, anchor_count
from auto_quantize_model.onnx_io.settings import (
    MAX_DET,
    ExportInputError,
)
from auto_quantize_model.utils.errors import first_line


def load_detection_checkpoint(weights: Path) -> tuple[Any, dict[str, Any]]:
    """Load an Ultralytics detection checkpoint as a float32 eval model; a clear error for anything else.

    Importing the Brevitas module first lets pickle find the quantized layers of QAT checkpoints.
    """
    from ultralytics.nn.autobackend import check_class_names, default_class_names
    from ultralytics.nn.modules import Detect
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    import auto_quantize_model.quant.yolov10  # noqa: F401  (QAT layers must be importable)

    try:
        model, ckpt = load_checkpoint(str(weights))
    except Exception as error:  # torch/pickle/Ultralytics raise many types for a bad file; one message for all
        raise ExportInputError(
            f"{weights}: not a loadable Ultralytics checkpoint ({type(error).__name__}: {first_line(error)}); "
            "pass the weights/best.pt (or last.pt) that Ultralytics training wrote"
        ) from error
    if not isinstance(model, DetectionModel) or not isinstance(model.model[-1], Detect):
        raise ExportInputError(
            f"{weights}: holds a {type(model).__name__}, not an Ultralytics detection model; "
            "export a checkpoint of a YOLO detection run"
        )
    # As the Ultralytics exporter does: numbered names when a checkpoint has none, always {int: str}.
    model.names = check_class_names(getattr(model, "names", None) or default_class_names(nc=model.model[-1].nc))
    return model, ckpt


def _is_quantized(model: Any) -> bool:
    from auto_quantize_model.quant.yolov10 import is_quantized

    return is_quantized(model)


def _scheme_dict(model: Any) -> dict[str, Any] | None:
    from auto_quantize_model.quant.yolov10 import quant_scheme_of

    scheme = quant_scheme_of(model)
    return scheme.to_dict() if scheme is not None else None


def prepare_for_export(model: Any, imgsz: tuple[int, int], end2end: bool, dynamic: bool, fuse: bool = True) -> Any:
    """The model preparation ``ultralytics.engine.exporter.Exporter.__call__`` does for ONNX (8.4.190).

    Class names checked, head branch chosen (``end2end``), gradients off, eval, float32, ``fuse()``
    (a quantized model's own ``fuse`` folds BN into the scale and sign of its integer codes, never re-rounding a
    weight, and keeps RepVGGDW branches apart; ``fuse=False`` skips it for the validation reference), then the
    ``Detect`` flags (``export``, ``format``, ``dynamic``, ``max_det`` clamped to the anchors,
    ``xyxy``/``agnostic_nms`` off as for ``nms=False``, cached anchors reset) and ``C2f.forward_split``.
    Returns the prepared model (``fuse`` may return a new object).
    """
    from ultralytics.nn.autobackend import check_class_names
    from ultralytics.nn.modules import C2f, Detect

    model.names = check_class_names(model.names)
    model.end2end = end2end  # before fuse: fusing drops the branch that is not selected
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.eval()
    model.float()
    if fuse:
        model = model.fuse(verbose=False, imgsz=list(imgsz))
    anchors = anchor_count(imgsz, model.stride.tolist())
    for module in model.modules():
        if isinstance(module, Detect):
            module.dynamic, module.export, module.format = dynamic, True, "onnx"
            module.max_det = min(MAX_DET, anchors)
            module.agnostic_nms, module.xyxy, module.shape = False, False, None
        elif isinstance(module, C2f):
            module.forward = module.forward_split
    return model


def dynamic_axes(dynamic: bool) -> dict[str, dict[int, str]] | None:
    """The Ultralytics exporter's dynamic axes for a detection model (batch, and also height/width)."""
    if not dynamic:
        return None
    return {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 2: "anchors"}}
