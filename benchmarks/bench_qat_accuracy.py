#!/usr/bin/env python3
"""mAP50-95 of each W4A16 scheme divided by the FP baseline's, at equal epochs, on the demo set.

Trains FP and each named scheme from the same random init recipe, seed and data, then
prints each run's best in-training val mAP50-95 (Ultralytics validator, NMS-free) and the
ratio to FP. Target: ratio >= 0.9.

    .venv/bin/python benchmarks/bench_qat_accuracy.py --epochs 20 --set nbs=16   # the demo profile's settings
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import auto_quantize_model  # noqa: F401
from auto_quantize_model.data.coco_dataset import prepare_coco_dataset
from auto_quantize_model.data.synthetic import generate_synthetic_coco
from auto_quantize_model.quant.scheme import SCHEME_NAMES
from auto_quantize_model.runs.config import parse_overrides
from auto_quantize_model.train import TrainRequest, train_stage
from auto_quantize_model.ultralytics_ext.loss_curves import read_results_csv

MAP_COLUMN = "metrics/mAP50-95(B)"


def best_map(results_csv: Path) -> tuple[float, int]:
    """Best val mAP50-95 and its epoch."""
    results = read_results_csv(results_csv)
    row = results[MAP_COLUMN].idxmax()
    return float(results.loc[row, MAP_COLUMN]), int(results.loc[row, "epoch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov10n.yaml")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--schemes", nargs="+", default=list(SCHEME_NAMES), choices=SCHEME_NAMES)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Ultralytics training argument for every run, e.g. nbs=16 (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="keep the run root here instead of a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-qat-acc-") as scratch:
        root = args.out or Path(scratch)
        source = generate_synthetic_coco(root / "coco", args.train, args.val, imgsz=args.imgsz, seed=0).root
        dataset = prepare_coco_dataset(source, root / "dataset")
        runs = [(False, "fp16")] + [(True, scheme) for scheme in args.schemes]
        scores = {}
        for quantized, name in runs:
            started = time.perf_counter()
            request = TrainRequest(
                run_root=root / "runs",
                data=dataset.dataset_yaml,
                quantized=quantized,
                quant_scheme=name,
                model=args.model,
                epochs=args.epochs,
                imgsz=args.imgsz,
                batch=args.batch,
                device="cpu",
                workers=0,
                overrides={"plots": False, **parse_overrides(args.overrides)},
            )
            result = train_stage(request)
            scores[name] = best_map(result.paths.results_csv)
            print(
                f"{name}: best val mAP50-95 {scores[name][0]:.4f} at epoch {scores[name][1]} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        fp_map = scores["fp16"][0]
        print(
            f"\n{args.model} {args.epochs} epochs imgsz {args.imgsz} on {args.train}/{args.val} synthetic images, "
            f"overrides {args.overrides or 'none'}"
        )
        for name, (value, _) in scores.items():
            ratio = value / fp_map if fp_map > 0 else float("nan")
            print(f"  {name:12s} mAP50-95 {value:.4f}  ratio to FP {ratio:.3f}")


if __name__ == "__main__":
    main()
