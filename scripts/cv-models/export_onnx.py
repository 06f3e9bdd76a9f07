#!/usr/bin/env python
"""Export a trained YOLOv10 checkpoint (FP or Brevitas W4A16 QAT) to ONNX, with a metadata JSON beside it.

A float checkpoint goes through the Ultralytics exporter (``--half``: FP16 weights, float32 I/O); a QAT
checkpoint becomes Brevitas QCDQ (int8 weights -> Clip -> DequantizeLinear), or with ``--weights-format int4``
native INT4 weights (opset 21, converted from the QCDQ graph and checked to give the same outputs).
Both keep one contract: input ``images`` (N, 3, H, W)
float32 RGB [0, 1] letterboxed, output ``output0`` end-to-end (N, 300, 6) or raw (N, 4 + nc, anchors).
See models/cv-models/yolov10m/README.md.

Examples::

    export_onnx.py --weights R/seed-0/fp16/weights/best.pt --out R/seed-0/onnx/yolov10m-fp16-float32.onnx --validate
    export_onnx.py --weights R/seed-0/qat-w4a16/weights/best.pt --out R/seed-0/onnx/yolov10m-qat-w4a16-qcdq.onnx \\
        --format raw --dynamic-batch --validate --val-images datasets/coco/val2017
    export_onnx.py --weights R/seed-0/qat-w4a16/weights/best.pt --out R/seed-0/onnx/yolov10m-qat-w4a16-int4.onnx \\
        --weights-format int4
    export_onnx.py --weights R/seed-0/fp16/weights/best.pt --out R/seed-0/onnx/yolov10m-fp16-float16.onnx --half

Exit codes: 0 written, 1 validation failed (nothing written), 2 bad input (the message names the fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.export import export_onnx
from auto_quantize_model.onnx_io.contract import OUTPUT_FORMATS
from auto_quantize_model.onnx_io.settings import (
    DEFAULT_VAL_MAX_IMAGES,
    WEIGHTS_FORMATS,
    WEIGHTS_QCDQ,
    ExportExistsError,
    ExportInputError,
    ExportResult,
    ExportValidationError,
    describe_kind,
)
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--weights", required=True, type=Path, help="Ultralytics .pt checkpoint (FP or QAT)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output .onnx path (metadata goes to the same stem .json)"
    )
    parser.add_argument("--imgsz", type=int, default=640, help="square input size, a multiple of the stride")
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="e2e",
        dest="output_format",
        help="e2e: (N, 300, 6) NMS-free rows (default); raw: (N, 4+nc, anchors), needs NMS",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: Ultralytics' choice for this torch)"
    )
    parser.add_argument(
        "--dynamic-batch", action="store_true", help="dynamic batch axis (height/width too, as Ultralytics does)"
    )
    parser.add_argument("--half", action="store_true", help="FP16 weights with float32 I/O (float checkpoints only)")
    parser.add_argument(
        "--weights-format",
        choices=WEIGHTS_FORMATS,
        default=WEIGHTS_QCDQ,
        help="QAT checkpoints: qcdq (Brevitas int8 + Clip + DequantizeLinear, default) or int4 "
        "(native packed INT4 weights, opset 21)",
    )
    parser.add_argument("--validate", action="store_true", help="compare ONNX Runtime with PyTorch on real images")
    parser.add_argument(
        "--val-images",
        type=Path,
        default=None,
        help="image folder for --validate (default: the checkpoint dataset's val images)",
    )
    parser.add_argument("--val-max-images", type=int, default=DEFAULT_VAL_MAX_IMAGES, help="images used by --validate")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser.parse_args(argv)


def _summary(result: ExportResult) -> str:
    lines = [
        f"kind: {describe_kind(result.kind, {'name': result.scheme_name})}",
        f"wrote {result.onnx_path} ({result.size_bytes / 1e6:.2f} MB, weights stored as {result.weights_format}) "
        f"and {result.metadata_path}",
    ]
    if result.validation is not None:
        for check in result.validation["checks"]:
            lines.append(
                f"validation {check['providers_used'][0]} batch {check['batch']}: max |diff| boxes "
                f"{check['max_abs_diff_boxes']:.3g} (limit {check['box_limit']:.3g}), scores "
                f"{check['max_abs_diff_scores']:.3g} (limit {check['score_limit']:.3g}) -> "
                f"{'ok' if check['passed'] else 'FAILED'}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # The exporter logs which kind of checkpoint it got before the (slow) export starts.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("auto_quantize_model.export").setLevel(logging.INFO)
    try:
        result = export_onnx(
            args.weights,
            args.out,
            imgsz=args.imgsz,
            output_format=args.output_format,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
            half=args.half,
            validate=args.validate,
            val_images=args.val_images,
            val_max_images=args.val_max_images,
            overwrite=args.overwrite,
            weights_format=args.weights_format,
        )
    except (ExportInputError, ExportExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ExportValidationError as error:
        print(f"validation failed: {error}", file=sys.stderr)
        return 1
    if result.already_exported:
        print(f"already exported, verified: {result.onnx_path} (same checkpoint sha256 and settings; ONNX loads)")
        return 0
    print(_summary(result))
    return 0


if __name__ == "__main__":
    cli_main(main)
