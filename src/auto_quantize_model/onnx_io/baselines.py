"""The int8 tools users pick, applied to the FP ONNX: ONNX Runtime's ``quantize_static`` and NNCF's PTQ.

Both take the float32 end-to-end ONNX the FP baseline exported and the same calibration images (letterboxed train
images, float32 NCHW in [0, 1]) and write a QDQ ONNX with the same input/output contract:

* ``ortq``: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel int8 weights, uint8 activations
  (ONNX Runtime's defaults for x86 CPUs), MinMax calibration, the convs and matmuls only: with its default op list
  it also quantizes the head's box decoding (Add/Mul of anchor constants), which OpenVINO 2026.4 then refuses to
  compile (``AddTransformation ... index '0' out of range``). ``quant_pre_process`` is not run: its shape
  inference fails on the end-to-end graph (TopK).
* ``nncf``: ``nncf.quantize`` on the ONNX model with ``QuantizationPreset.MIXED`` and the head left float, exactly
  the ignored scope Ultralytics' OpenVINO int8 export uses (every Sigmoid and every op of the Detect layer).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.onnx_io.contract import INPUT_NAME

TOOLS = ("ortq", "nncf")
ORTQ_OP_TYPES = ("Conv", "MatMul")


class BaselineQuantizationError(ValueError):
    """Bad input to a baseline quantizer; the message names the file or argument and the fix."""


@dataclass(frozen=True)
class BaselineResult:
    """What :func:`quantize_fp_onnx` wrote."""

    tool: str
    source: str
    out: str
    calibration_images: int
    settings: dict[str, Any]
    seconds: float


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of single-image batches."""

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self._items = iter([{INPUT_NAME: image[None]} for image in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def _ort_quantize(fp_onnx: Path, out: Path, images: Sequence[np.ndarray]) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = {
        "quant_format": "QDQ",
        "per_channel": True,
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "calibrate_method": "MinMax",
        "op_types_to_quantize": list(ORTQ_OP_TYPES),
        "quant_pre_process": "not run (its shape inference fails on the end-to-end TopK graph)",
    }
    quantize_static(
        str(fp_onnx),
        str(out),
        _Reader(images),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=list(ORTQ_OP_TYPES),
    )
    return settings


def head_scope(proto: Any) -> list[str]:
    """Ultralytics' NNCF ignored scope, on the ONNX graph: every Sigmoid and every node of the Detect layer.

    The Detect layer is the scope (``/model.<N>``) of the last Sigmoid, as Ultralytics finds it.
    """
    sigmoids = [node.name for node in proto.graph.node if node.op_type == "Sigmoid"]
    if not sigmoids:
        raise BaselineQuantizationError("the FP ONNX has no Sigmoid: not a YOLO detection export")
    head = "/" + sigmoids[-1].split("/")[1]
    return [node.name for node in proto.graph.node if node.op_type == "Sigmoid" or node.name.startswith(f"{head}/")]


def _nncf_quantize(fp_onnx: Path, out: Path, images: Sequence[np.ndarray]) -> dict[str, Any]:
    import nncf
    import onnx

    proto = onnx.load(str(fp_onnx))
    ignored = head_scope(proto)
    dataset = nncf.Dataset(list(images), lambda image: {INPUT_NAME: image[None]})
    quantized = nncf.quantize(
        proto,
        dataset,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(images),
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),  # NNCF's graph drops some Casts
    )
    onnx.save(quantized, str(out))
    return {
        "preset": "MIXED",
        "subset_size": len(images),
        "ignored_scope": f"{len(ignored)} nodes: every Sigmoid and the Detect layer (as Ultralytics' int8 export)",
    }


_QUANTIZERS = {"ortq": _ort_quantize, "nncf": _nncf_quantize}


def quantize_fp_onnx(
    tool: str, fp_onnx: str | os.PathLike, out: str | os.PathLike, images: Sequence[np.ndarray]
) -> BaselineResult:
    """Quantize the float32 ONNX ``fp_onnx`` with ``tool`` (:data:`TOOLS`) on ``images``; write ``out`` atomically."""
    from auto_quantize_model.utils.io import atomic_output

    fp_onnx, out = Path(fp_onnx), Path(out)
    if tool not in TOOLS:
        raise BaselineQuantizationError(f"tool {tool!r} is not one of {TOOLS}")
    if not fp_onnx.is_file():
        raise BaselineQuantizationError(f"{fp_onnx}: FP ONNX not found; export the fp16 variant's float32 file first")
    if not images:
        raise BaselineQuantizationError("no calibration images; pass --calib-images N >= 1")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as work:
        staged = Path(work) / out.name  # the tools write side files (calibration augment models) beside it
        settings = _QUANTIZERS[tool](fp_onnx, staged, images)
        with atomic_output(out) as tmp:
            os.replace(staged, tmp)
    seconds = round(time.perf_counter() - start, 3)
    return BaselineResult(tool, str(fp_onnx.resolve()), str(out.resolve()), len(images), settings, seconds)
