#!/usr/bin/env python3
"""Train YOLOv10 from scratch as an FP16/AMP baseline (``fp16``) or as Brevitas W4A16 QAT (``qat-w4a16``).

Artifacts go to ``<run-root>/fp16/`` or ``<run-root>/qat-<scheme>/``. A finished stage is never
overwritten; ``--resume`` continues an interrupted one from ``last.pt``.

Examples:
  train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py fp16 --run-root R --data R/dataset/dataset.yaml
  train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py qat-w4a16 --run-root R --data R/dataset/dataset.yaml \
      --quant-scheme w4a16-fl8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.config import ConfigError, parse_overrides
from auto_quantize_model.quant.scheme import SCHEME_NAMES
from auto_quantize_model.train import DEFAULT_HYP, RunExistsError, TrainRequest, train_stage


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-root", type=Path, required=True, help="experiment folder (see RunRoot)")
    parser.add_argument("--data", type=Path, required=True, help="Ultralytics dataset YAML (prepare_coco_dataset.py)")
    parser.add_argument("--model", default="yolov10m.yaml", help="model config; random init (default yolov10m.yaml)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32, help="total batch size (split across DDP devices)")
    parser.add_argument("--device", default="0", help="'cpu', '0', or '0,1,2,3' for Ultralytics DDP")
    parser.add_argument("--hyp", type=Path, default=DEFAULT_HYP, help="recipe YAML of Ultralytics arguments")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8, help="dataloader workers per process")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of the train split to use")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted stage from its last.pt")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override any Ultralytics training argument, e.g. --set close_mosaic=10 (repeatable)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _common_flags(sub.add_parser("fp16", help="FP16/AMP baseline"))
    qat = sub.add_parser("qat-w4a16", help="Brevitas W4A16 quantization-aware training")
    _common_flags(qat)
    qat.add_argument("--quant-scheme", default="w4a16", choices=SCHEME_NAMES, help="named quantization scheme")
    qat.add_argument("--init-from", type=Path, help="start QAT from this FP checkpoint instead of random weights")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quantized = args.command == "qat-w4a16"
    try:
        request = TrainRequest(
            run_root=args.run_root, data=args.data, quantized=quantized,
            quant_scheme=getattr(args, "quant_scheme", "w4a16"), model=args.model, epochs=args.epochs,
            imgsz=args.imgsz, batch=args.batch, device=args.device, hyp=args.hyp, seed=args.seed,
            workers=args.workers, fraction=args.fraction, resume=args.resume,
            init_from=getattr(args, "init_from", None), overrides=parse_overrides(args.overrides),
        )
        result = train_stage(request)
    except (ConfigError, RunExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result.stage}: {result.status}; best.pt at {result.paths.best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
