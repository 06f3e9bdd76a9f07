"""Weight-only PTQ of one FP checkpoint with several schemes: val mAP50-95 against parameter-weighted bits.

Each scheme (a name or a scheme JSON, e.g. the sweep's ``mixed_precision_scheme.json``) quantizes a fresh copy of
the FP model with the project's quantizer and is measured with the sensitivity sweep's validator
(Ultralytics ``DetectionValidator`` as the trainer validates: ``nms=False``, square letterbox), on the same val
images. No ONNX export: the size column is the weight storage the scheme implies (quantized convs at their bits,
float convs, DFL included, at 16 bits; biases and BN not counted), not a file size.

Usage::

    .venv/bin/python benchmarks/bench_mixed_precision_ptq.py --weights FP_BEST.pt --data DATASET.yaml \\
        --schemes w4a16 w4a16-fl8 SWEEP_OUT/mixed_precision_scheme.json [--max-val-images N] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.quant.scheme import QuantScheme, resolve_scheme
from auto_quantize_model.quant.sensitivity import low_bit_param_share, parameter_weighted_bits, quantized_copy
from auto_quantize_model.quant.yolov10 import layer_bit_widths
from auto_quantize_model.sensitivity import load_fp_model
from auto_quantize_model.ultralytics_ext.validation import TrainerLikeValidator, select_val_images, write_val_subset
from auto_quantize_model.utils.io import write_json_atomic

FLOAT_BITS = 16  # what a float conv costs in the size column (the FP16 baseline's storage)


def weight_megabytes(model, scheme: QuantScheme | None) -> float:
    """Conv weight storage in MB: quantized convs at their bits, float convs at 16 bits."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    widths = layer_bit_widths(model, scheme) if scheme is not None else dict.fromkeys(convs)
    return sum(convs[name].weight.numel() * (bits or FLOAT_BITS) for name, bits in widths.items()) / 8 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--schemes", nargs="+", default=["w4a16", "w4a16-fl8"])
    parser.add_argument("--max-val-images", type=int)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("tmp/bench-mixed-precision-ptq"))
    args = parser.parse_args()

    schemes = {spec: resolve_scheme(spec) for spec in args.schemes}  # every file checked before any work
    model, ckpt = load_fp_model(args.weights)
    imgsz = int(args.imgsz or (ckpt.get("train_args") or {}).get("imgsz") or 640)
    subset = select_val_images(args.data, args.max_val_images)
    validator = TrainerLikeValidator(
        write_val_subset(subset, args.out / "val_subset"), imgsz, args.batch, args.device, args.out / ".val"
    )
    print(f"load before: {os.getloadavg()}; {len(subset.images)} val images at imgsz {imgsz}")
    rows = []
    for label, scheme in [("fp", None), *schemes.items()]:
        start = time.perf_counter()
        # The validator fuses what it is given in place: always hand it a copy.
        candidate = quantized_copy(model, scheme) if scheme is not None else copy.deepcopy(model)
        value = validator.map50_95(candidate)
        row = {
            "scheme": scheme.name if scheme else "fp (float32)",
            "spec": label,
            "mAP50_95": round(value, 6),
            "weighted_bits": round(parameter_weighted_bits(model, scheme), 4) if scheme else None,
            "low_bit_share": round(low_bit_param_share(model, scheme, scheme.weight_bit_width), 4) if scheme else None,
            "conv_weight_MB": round(weight_megabytes(model, scheme), 4),
            "seconds": round(time.perf_counter() - start, 2),
        }
        rows.append(row)
        print(row, flush=True)
    print(f"load after: {os.getloadavg()}")
    print("| scheme | val mAP50-95 | param-weighted bits | share at low bits | conv weights MB (float at 16 b) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['scheme']} | {row['mAP50_95']:.4f} | {row['weighted_bits'] or '-'} | "
            f"{row['low_bit_share'] or '-'} | {row['conv_weight_MB']:.3f} |"
        )
    write_json_atomic(args.out / "results.json", {"weights": str(args.weights), "rows": rows})


if __name__ == "__main__":
    main()
