"""What an ONNX export is asked for and what it returns: kinds, weight formats, settings, results, errors.

Shared by the export stage and its helpers (validation, verification), so neither imports the stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.onnx_io.contract import PAD_VALUE

KIND_FP, KIND_QCDQ = "fp", "qat-qcdq"
# How a QAT export stores its weights: Brevitas QCDQ (the spec's artifact) or, converted from it, native INT4
# (auto_quantize_model.onnx_io.int4). ``kind`` stays "qat-qcdq" for both: it names the export path.
WEIGHTS_QCDQ, WEIGHTS_INT4 = "qcdq", "int4"
WEIGHTS_FORMATS = (WEIGHTS_QCDQ, WEIGHTS_INT4)


CUDA_INT4_NOTE = "CUDA EP: DequantizeLinear Int4 kernels registered per ORT's kernel registry, untested here (no GPU)"
MAX_DET = 300  # Ultralytics' default max_det; the exporter clamps it to the number of anchors
MAX_IR_VERSION = 10  # what the Ultralytics exporter caps to, for onnxruntime compatibility
METADATA_SCHEMA_VERSION = 1
DEFAULT_VAL_MAX_IMAGES = 8
PREPROCESSING = {
    "layout": "NCHW",
    "dtype": "float32",
    "color": "RGB",
    "scale": "pixel / 255, range [0, 1]",
    "letterbox": "resize keeping aspect ratio (cv2.INTER_LINEAR), pad centered to H x W with gray 114",
    "reference": "auto_quantize_model.onnx_io.preprocess.letterbox (Ultralytics LetterBox, pixel for pixel)",
    "pad_value": PAD_VALUE,
}
OUTPUT_LAYOUTS = {
    "e2e": "x1, y1, x2, y2, score, class in input pixels; NMS-free one-to-one head, rows sorted by score",
    "raw": "cx, cy, w, h in input pixels, then per-class sigmoid scores; one-to-many head, needs NMS",
}


class ExportInputError(ValueError):
    """Bad input to the exporter; the message names the file or argument and the fix."""


class ExportExistsError(FileExistsError):
    """The output ONNX already exists and ``overwrite`` was not given."""


class ExportValidationError(RuntimeError):
    """ONNX Runtime outputs differ from PyTorch beyond the documented tolerances; nothing was written."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote."""

    onnx_path: Path
    metadata_path: Path
    kind: str  # "fp" or "qat-qcdq"
    scheme_name: str | None
    size_bytes: int
    validation: dict[str, Any] | None
    weights_format: str = WEIGHTS_QCDQ  # what the file stores: float32, float16, qcdq or int4 (onnx_size)
    already_exported: bool = False  # out existed and was verified against this request (export_verify)


@dataclass(frozen=True)
class ExportSettings:
    """The resolved export request shared by both exporters and the validation."""

    imgsz: tuple[int, int]
    output_format: str
    opset: int
    dynamic_batch: bool
    half: bool
    weights_format: str = WEIGHTS_QCDQ

    @property
    def end2end(self) -> bool:
        return self.output_format == "e2e"


def describe_kind(kind: str, scheme: dict[str, Any] | None) -> str:
    """One line saying which kind of checkpoint this is and what it becomes."""
    if kind == KIND_FP:
        return "float (FP) checkpoint -> ONNX through the Ultralytics exporter"
    return f"QAT checkpoint (Brevitas, scheme {(scheme or {}).get('name', '?')}) -> Brevitas QCDQ ONNX"
