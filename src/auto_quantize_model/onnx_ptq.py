"""Stage: the int8 baselines ``ortq-w8a8`` and ``nncf-w8a8``, made from the FP baseline's float32 ONNX.

:func:`quantize_onnx_baseline` calibrates ``onnxruntime.quantization.quantize_static`` or NNCF's PTQ
(:mod:`auto_quantize_model.onnx_io.baselines`) on the same train images as the project's own ``ptq-w8a8``
(letterboxed, never val), writes the QDQ ONNX and ``<stem>.json`` beside it (source file and sha256, tool and
settings, calibration images, OpenVINO's int8 share of the conv MACs, versions). The evaluator scores the file like
any other export.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.onnx_io.baselines import TOOLS, BaselineQuantizationError, quantize_fp_onnx
from auto_quantize_model.runs.provenance import command_line, git_state, package_versions, utc_now
from auto_quantize_model.runs.run_root import export_metadata_path
from auto_quantize_model.utils.io import sha256_file, write_json_atomic


@dataclass(frozen=True)
class BaselineRequest:
    """One baseline quantization of an FP ONNX."""

    tool: str  # ortq | nncf
    fp_onnx: Path
    out: Path
    data: Path  # dataset YAML: the calibration images come from its train split
    calib_images: int
    imgsz: int
    overwrite: bool = False


def _check(request: BaselineRequest) -> None:
    if request.tool not in TOOLS:
        raise BaselineQuantizationError(f"--tool {request.tool!r} is not one of {TOOLS}")
    if not request.fp_onnx.is_file():
        raise BaselineQuantizationError(
            f"{request.fp_onnx}: FP ONNX not found; pass --fp-onnx with the fp16 variant's float32 export"
        )
    if not request.data.is_file():
        raise BaselineQuantizationError(f"{request.data}: dataset YAML not found; pass --data R/dataset/dataset.yaml")
    if request.calib_images < 1:
        raise BaselineQuantizationError(f"--calib-images must be >= 1, got {request.calib_images}")
    if request.out.suffix != ".onnx":
        raise BaselineQuantizationError(f"{request.out}: the output must end in .onnx (metadata goes beside it)")
    if request.out.exists() and not request.overwrite:
        raise BaselineQuantizationError(f"{request.out}: already exists; pass --overwrite or choose another --out")


def quantize_onnx_baseline(request: BaselineRequest) -> dict[str, Any]:
    """Quantize, then write the metadata JSON (the ONNX is written atomically first); returns the metadata."""
    from auto_quantize_model.onnx_io.qdq import openvino_int8_report
    from auto_quantize_model.ultralytics_ext.calibration import calibration_images

    _check(request)
    try:
        batches = calibration_images(request.data, request.imgsz, 1, request.calib_images, "cpu")
    except ValueError as error:
        raise BaselineQuantizationError(str(error)) from error
    images = [batch[0].numpy() for batch in batches]
    result = quantize_fp_onnx(request.tool, request.fp_onnx, request.out, images)
    metadata = {
        "created_at": utc_now(),
        "kind": f"{request.tool}-w8a8",
        "onnx": {"path": str(request.out.resolve()), "sha256": sha256_file(request.out)},
        "source": {"fp_onnx": str(request.fp_onnx.resolve()), "sha256": sha256_file(request.fp_onnx)},
        "quantization": asdict(result),
        "calibration": {"images": len(images), "split": "train", "imgsz": request.imgsz, "data": str(request.data)},
        "openvino": openvino_int8_report(request.out).to_dict(),
        "versions": package_versions(),
        "git": git_state(),
        "command": command_line(),
    }
    write_json_atomic(export_metadata_path(request.out), metadata)
    return metadata
