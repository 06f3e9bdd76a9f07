#!/usr/bin/env python3
"""Wall time per training epoch (train + val) of the fp16 stage on the synthetic demo set.

Generates the demo data (default 128 train / 32 val at nominal 160 px), prepares it, and
trains each model for a few epochs with the real training stage, then prints the seconds
per epoch from Ultralytics' ``results.csv`` (its ``time`` column is cumulative). The first
epoch includes dataloader and label-cache warm-up, so the median of the later ones is the
figure to quote.

    .venv/bin/python benchmarks/bench_epoch_time.py --models yolov10n.yaml yolov10m.yaml --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import auto_quantize_model  # noqa: F401
from auto_quantize_model.data.coco_dataset import prepare_coco_dataset
from auto_quantize_model.data.synthetic import generate_synthetic_coco
from auto_quantize_model.train import TrainRequest, train_stage
from auto_quantize_model.ultralytics_ext.loss_curves import read_results_csv


def epoch_seconds(results_csv: Path) -> list[float]:
    """Per-epoch durations from the cumulative ``time`` column."""
    cumulative = read_results_csv(results_csv)["time"].tolist()
    return [later - earlier for earlier, later in zip([0.0] + cumulative[:-1], cumulative)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["yolov10n.yaml", "yolov10m.yaml"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--val", type=int, default=32)
    parser.add_argument("--quantized", action="store_true", help="time the W4A16 QAT stage instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as scratch:
        scratch = Path(scratch)
        source = generate_synthetic_coco(scratch / "coco", args.train, args.val, imgsz=args.imgsz, seed=0).root
        dataset = prepare_coco_dataset(source, scratch / "dataset")
        for model in args.models:
            request = TrainRequest(
                run_root=scratch / Path(model).stem,
                data=dataset.dataset_yaml,
                quantized=args.quantized,
                model=model,
                epochs=args.epochs,
                imgsz=args.imgsz,
                batch=args.batch,
                device="cpu",
                workers=0,
                overrides={"plots": False},
            )
            result = train_stage(request)
            seconds = epoch_seconds(result.paths.results_csv)
            steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
            print(
                f"{Path(model).stem} {'W4A16' if args.quantized else 'FP'} imgsz={args.imgsz} batch={args.batch} "
                f"train={args.train} val={args.val}: epochs {[round(s, 1) for s in seconds]} s, "
                f"steady-state {steady:.1f} s/epoch"
            )


if __name__ == "__main__":
    main()
