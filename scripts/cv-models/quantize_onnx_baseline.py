#!/usr/bin/env python
"""The int8 tools users pick, on the FP baseline's float32 ONNX: ortq-w8a8 (quantize_static) and nncf-w8a8.

Example::

    quantize_onnx_baseline.py --tool nncf --fp-onnx R/seed-0/onnx/yolov10n-fp16-float32.onnx \\
        --out R/seed-0/onnx/yolov10n-nncf-w8a8-qdq.onnx --data R/dataset/dataset.yaml --calib-images 256 --imgsz 640

Calibration uses train images only (letterboxed as the evaluator feeds them). Writes the QDQ ONNX and
``<stem>.json`` beside it (tool settings, calibration, OpenVINO's int8 share of the conv MACs).
Exit codes: 0 written, 2 bad input (one line naming the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.onnx_io.baselines import TOOLS, BaselineQuantizationError
from auto_quantize_model.onnx_ptq import BaselineRequest, quantize_onnx_baseline
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str] | None = None) -> BaselineRequest:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--tool", choices=TOOLS, required=True, help="ortq (quantize_static) or nncf (NNCF PTQ)")
    parser.add_argument("--fp-onnx", type=Path, required=True, help="the fp16 variant's float32 ONNX")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx")
    parser.add_argument("--data", type=Path, required=True, help="dataset YAML (calibration from its train split)")
    parser.add_argument("--calib-images", type=int, required=True, help="train images to calibrate on")
    parser.add_argument("--imgsz", type=int, required=True, help="the FP ONNX's input size")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    return BaselineRequest(args.tool, args.fp_onnx, args.out, args.data, args.calib_images, args.imgsz, args.overwrite)


def main(argv: list[str] | None = None) -> int:
    request = parse_args(argv)
    try:
        metadata = quantize_onnx_baseline(request)
    except BaselineQuantizationError as error:
        print(f"quantize_onnx_baseline.py: error: {error}", file=sys.stderr)
        return 2
    share = metadata["openvino"]["int8_mac_share"]
    print(f"{request.out}: {metadata['kind']}, OpenVINO runs {share:.1%} of the conv MACs in int8")
    return 0


if __name__ == "__main__":
    cli_main(main)
