#!/usr/bin/env python
"""Per-layer (or per-block) quantization sensitivity of a trained FP YOLO checkpoint, and a mixed scheme.

Examples::

    sweep_layer_sensitivity.py --weights R/seed-0/fp16/weights/best.pt --data R/dataset/dataset.yaml \\
        --out R/sensitivity --granularity block --max-val-images 500
    sweep_layer_sensitivity.py --weights R/seed-0/fp16/weights/best.pt --data R/dataset/dataset.yaml \\
        --out R/sensitivity-a4 --sweep activations --act-bits 4 --calib-images 64 --max-val-images 500

For each unit (a conv, or a block / head branch level) only that unit is quantized and val mAP50-95 is measured
with Ultralytics' validator as in training (NMS-free, square letterbox).
--sweep weights (default): the unit's weights at --bits (weight-only PTQ); references: the FP model and "all units
at --bits". Writes OUT/sensitivity.csv, OUT/sensitivity.png and OUT/mixed_precision_scheme.json (+
mixed_precision_plan.json: why).
--sweep activations: the unit's conv inputs at --act-bits and its weights at 8 bits (activation quantizers sit
only on weight-quantized convs), the rest float, calibrated per unit on --calib-images train images (never val);
references: FP, every conv's 8-bit weights alone ("base") and every conv at W8 A--act-bits ("all"). Writes
OUT/sensitivity.csv, OUT/sensitivity.png, OUT/mixed_activation_scheme.json (+ mixed_activation_plan.json),
calibration_images.txt and activation_placement.json (a tensor shared with other convs is quantized for them too).
Pass a mixed scheme as --quant-scheme, or as a qat-/ptq-<path> variant. A rerun with the same settings resumes;
different settings are refused. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.quant.sensitivity import GRANULARITIES, SWEEPS, WEIGHTS_SWEEP, SweepInputError
from auto_quantize_model.sensitivity import (
    DEFAULT_ACT_BITS,
    DEFAULT_BITS,
    DEFAULT_CALIB_IMAGES,
    DEFAULT_MIN_DROP,
    SweepRequest,
    run_sweep,
)
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str] | None = None) -> SweepRequest:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--weights", type=Path, required=True, help="FP checkpoint (the fp16 run's best.pt)")
    parser.add_argument("--data", type=Path, required=True, help="dataset YAML (its val split is measured)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (a rerun resumes it)")
    parser.add_argument("--sweep", choices=SWEEPS, default=WEIGHTS_SWEEP, help="what the unit under test quantizes")
    parser.add_argument("--bits", type=int, help=f"weights sweep: the unit's weight bit width (default {DEFAULT_BITS})")
    parser.add_argument(
        "--act-bits", type=int, help=f"activations sweep: input bit width of the unit, 2-8 (default {DEFAULT_ACT_BITS})"
    )
    parser.add_argument(
        "--calib-images",
        type=int,
        help=f"activations sweep: train images calibrating each unit (default {DEFAULT_CALIB_IMAGES})",
    )
    parser.add_argument("--scaling", choices=("absmax", "mse"), default="absmax", help="weight scale method")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="block", help="unit: one conv or a block")
    parser.add_argument("--max-val-images", type=int, help="measure on the first N val images (sorted names)")
    parser.add_argument("--imgsz", type=int, help="image size (default: the checkpoint's training imgsz)")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index such as '0'")
    parser.add_argument("--batch", type=int, default=16, help="validation batch size")
    parser.add_argument(
        "--w4-param-fraction",
        "--low-bit-fraction",
        dest="low_bit_fraction",
        type=float,
        default=0.9,
        help="mixed scheme: at least this share at the low bit width: of the quantized weights at --bits "
        "(weights sweep), of the conv input elements at --act-bits (activations sweep)",
    )
    parser.add_argument(
        "--min-drop",
        type=float,
        default=DEFAULT_MIN_DROP,
        help="mixed scheme: only units whose mAP50-95 drop exceeds this are kept high (8 bits; float inputs "
        "when --act-bits is 8)",
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
        low_bit_param_fraction=args.low_bit_fraction,
        min_drop=args.min_drop,
        sweep=args.sweep,
        act_bits=args.act_bits,
        calib_images=args.calib_images,
    )


def main(argv: list[str] | None = None) -> int:
    request = parse_args(argv)
    try:
        result = run_sweep(request, log=lambda line: print(line, flush=True))
    except (SweepInputError, ValueError) as error:
        print(f"sweep_layer_sensitivity.py: error: {error}", file=sys.stderr)
        return 2
    rows, bits = {row.unit: row for row in result.rows}, request.swept_bits
    what = "conv inputs" if request.activations else "weights"
    print(f"FP mAP50-95 {rows['fp'].mAP50_95:.4f}; all units' {what} at {bits} bits {rows['all'].mAP50_95:.4f}")
    print(
        f"mixed scheme {result.plan.scheme.name}: {len(result.plan.high_bit_units)} units kept high "
        f"({', '.join(result.plan.high_bit_units) or 'none'}), {result.plan.low_bit_param_fraction:.3f} of the "
        f"{'conv input elements' if request.activations else 'quantized weights'} at {bits} bits"
    )
    print(f"wrote {result.csv_path}, {result.png_path}, {result.scheme_path}")
    return 0


if __name__ == "__main__":
    cli_main(main)
