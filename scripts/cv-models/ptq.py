#!/usr/bin/env python
"""Weight-only post-training quantization of a trained FP YOLO checkpoint (optionally with BN re-estimation).

Examples::

    ptq.py --weights R/seed-0/fp16/weights/best.pt --quant-scheme w8a16 \\
        --out R/seed-0/ptq-w8a16/weights/best.pt --data R/dataset/dataset.yaml
    ptq.py --weights R/seed-0/fp16/weights/best.pt --quant-scheme w4a16-mse \\
        --out R/seed-0/ptq-w4a16-mse/weights/best.pt \\
        --data R/dataset/dataset.yaml --bn-recalib-batches 32 --val

The output is an Ultralytics checkpoint (``YOLO(out)`` loads it; export_onnx.py exports it as QCDQ) with
``<out stem>.json`` beside it (scheme, layer counts, BN re-estimation, ``val_mAP50_95`` with ``--val``).
Exit codes: 0 written, 2 bad input (one line naming the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.ptq import PTQInputError, PTQRequest, quantize_checkpoint
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str] | None = None) -> PTQRequest:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--weights", type=Path, required=True, help="FP checkpoint (the fp16 run's best.pt)")
    parser.add_argument("--quant-scheme", required=True, help="scheme name (w8a16, w4a16-mse, ...) or JSON path")
    parser.add_argument("--out", type=Path, required=True, help="output checkpoint (.pt)")
    parser.add_argument("--data", type=Path, help="dataset YAML (needed for --bn-recalib-batches and --val)")
    parser.add_argument("--bn-recalib-batches", type=int, default=0, help="re-estimate BN on N train batches (0: off)")
    parser.add_argument("--imgsz", type=int, help="image size (default: the checkpoint's training imgsz)")
    parser.add_argument("--batch", type=int, default=16, help="batch size of BN re-estimation and --val")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index such as '0'")
    parser.add_argument("--workers", type=int, default=0, help="dataloader workers")
    parser.add_argument("--val", action="store_true", help="measure Ultralytics-validator val mAP50-95 of the output")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    return PTQRequest(
        weights=args.weights,
        out=args.out,
        quant_scheme=args.quant_scheme,
        data=args.data,
        bn_recalib_batches=args.bn_recalib_batches,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        workers=args.workers,
        measure_val=args.val,
        overwrite=args.overwrite,
    )


def main(argv: list[str] | None = None) -> int:
    request = parse_args(argv)
    try:
        result = quantize_checkpoint(request)
    except (PTQInputError, ValueError) as error:
        print(f"ptq.py: error: {error}", file=sys.stderr)
        return 2
    val = f", val mAP50-95 {result.val_mAP50_95:.4f}" if result.val_mAP50_95 is not None else ""
    print(f"{result.checkpoint}: {result.scheme} {result.layer_counts}{val}; metadata {result.metadata_path}")
    return 0


if __name__ == "__main__":
    cli_main(main)
