#!/usr/bin/env python
"""Per-layer (or per-block) weight-quantization sensitivity of a trained FP YOLO checkpoint, and a mixed scheme.

Example::

    sweep_layer_sensitivity.py --weights R/seed-0/fp16/weights/best.pt --data R/dataset/dataset.yaml \\
        --out R/sensitivity --granularity block --max-val-images 500

For each unit (a conv, or a block / head branch level) only that unit is quantized to --bits (weight-only PTQ)
and val mAP50-95 is measured with Ultralytics' validator as in training (NMS-free, square letterbox); the FP
model and "all units at --bits" are the references. Writes OUT/sensitivity.csv, OUT/sensitivity.png and
OUT/mixed_precision_scheme.json (+ mixed_precision_plan.json: why; pass the scheme as --quant-scheme, or as a
qat-/ptq-<path> variant). A rerun with
the same settings resumes; different settings are refused. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.quant.sensitivity import GRANULARITIES, SweepInputError
from auto_quantize_model.sensitivity import DEFAULT_MIN_DROP, SweepRequest, run_sweep
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str] | None = None) -> SweepRequest:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--weights", type=Path, required=True, help="FP checkpoint (the fp16 run's best.pt)")
    parser.add_argument("--data", type=Path, required=True, help="dataset YAML (its val split is measured)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (a rerun resumes it)")
    parser.add_argument("--bits", type=int, default=4, help="bit width of the unit under test")
    parser.add_argument("--scaling", choices=("absmax", "mse"), default="absmax", help="weight scale method")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="block", help="unit: one conv or a block")
    parser.add_argument("--max-val-images", type=int, help="measure on the first N val images (sorted names)")
    parser.add_argument("--imgsz", type=int, help="image size (default: the checkpoint's training imgsz)")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index such as '0'")
    parser.add_argument("--batch", type=int, default=16, help="validation batch size")
    parser.add_argument(
        "--w4-param-fraction",
        type=float,
        default=0.9,
        help="mixed scheme: at least this share of quantized weights at --bits",
    )
    parser.add_argument(
        "--min-drop",
        type=float,
        default=DEFAULT_MIN_DROP,
        help="mixed scheme: only units whose mAP50-95 drop exceeds this go to 8 bits",
    )
    args = parser.parse_args(argv)
    return SweepRequest(
        weights=args.weights,
        data=args.data,
        out=args.out,
        bits=args.bits,
        scaling=args.scaling,
        granularity=args.granularity,
        max_val_images=args.max_val_images,
        imgsz=args.imgsz,
        device=args.device,
        batch=args.batch,
        low_bit_param_fraction=args.w4_param_fraction,
        min_drop=args.min_drop,
    )


def main(argv: list[str] | None = None) -> int:
    request = parse_args(argv)
    try:
        result = run_sweep(request, log=lambda line: print(line, flush=True))
    except (SweepInputError, ValueError) as error:
        print(f"sweep_layer_sensitivity.py: error: {error}", file=sys.stderr)
        return 2
    rows = {row.unit: row for row in result.rows}
    print(f"FP mAP50-95 {rows['fp'].mAP50_95:.4f}; all units at {request.bits} bits {rows['all'].mAP50_95:.4f}")
    print(
        f"mixed scheme {result.plan.scheme.name}: {len(result.plan.high_bit_units)} units at 8 bits "
        f"({', '.join(result.plan.high_bit_units) or 'none'}), {result.plan.low_bit_param_fraction:.3f} of the "
        f"quantized weights at {request.bits} bits"
    )
    print(f"wrote {result.csv_path}, {result.png_path}, {result.scheme_path}")
    return 0


if __name__ == "__main__":
    cli_main(main)
