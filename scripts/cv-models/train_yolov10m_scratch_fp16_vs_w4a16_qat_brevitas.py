#!/usr/bin/env python3
"""Train YOLOv10 from scratch as an FP16/AMP baseline (``fp16``) or as Brevitas W4A16 QAT (``qat-w4a16``).

Artifacts go to ``<run-root>/seed-<seed>/fp16[-ft]/`` or ``<run-root>/seed-<seed>/qat-<scheme>[-ft]/``
(``-ft``: initialised from an FP checkpoint with ``--init-from``). A finished stage is never
overwritten; ``--resume`` continues an interrupted one from ``last.pt``.

Examples:
  train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py fp16 --run-root R --data R/dataset/dataset.yaml
  train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py fp16 --run-root R --data R/dataset/dataset.yaml \
      --hyp conf/cv-models/yolov10m/hyp.finetune.yaml --epochs 20 --init-from R/seed-0/fp16/weights/last.pt
  train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py qat-w4a16 --run-root R --data R/dataset/dataset.yaml \
      --quant-scheme w4a16-fl8 [--init-from R/seed-0/fp16/weights/best.pt]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.quant.scheme import SCHEME_NAMES
from auto_quantize_model.runs.config import parse_overrides
from auto_quantize_model.train import RunExistsError, TrainRequest, train_stage
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main

# No argparse defaults: TrainRequest holds them, so the CLI and the library cannot disagree; --help shows them.
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainRequest)}


def _default(name: str) -> str:
    return f"(default: {_DEFAULTS[name]})"


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-root", type=Path, required=True, help="experiment folder (see RunRoot)")
    parser.add_argument("--data", type=Path, required=True, help="Ultralytics dataset YAML (prepare_coco_dataset.py)")
    parser.add_argument("--model", help=f"model config, built with random init {_default('model')}")
    parser.add_argument("--epochs", type=int, help=f"training epochs {_default('epochs')}")
    parser.add_argument("--imgsz", type=int, help=f"square train/val image size {_default('imgsz')}")
    parser.add_argument("--batch", type=int, help=f"total batch size, split across DDP devices {_default('batch')}")
    parser.add_argument("--device", help=f"'cpu', '0', or '0,1,2,3' for Ultralytics DDP {_default('device')}")
    parser.add_argument("--hyp", type=Path, help=f"recipe YAML of Ultralytics arguments {_default('hyp')}")
    parser.add_argument("--seed", type=int, help=f"training seed; output in <run-root>/seed-<seed>/ {_default('seed')}")
    parser.add_argument("--workers", type=int, help=f"dataloader workers per process {_default('workers')}")
    parser.add_argument("--fraction", type=float, help=f"fraction of the train split to use {_default('fraction')}")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted stage from its last.pt")
    parser.add_argument(
        "--train-arg",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any Ultralytics training argument, e.g. --train-arg close_mosaic=10 (repeatable)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    fp16 = sub.add_parser("fp16", help="FP16/AMP baseline", formatter_class=HelpFormatter)
    _common_flags(fp16)
    fp16.add_argument(
        "--init-from", type=Path, help="fine-tune this FP checkpoint without quantizing it (the stage is fp16-ft)"
    )
    qat = sub.add_parser("qat-w4a16", help="Brevitas W4A16 quantization-aware training", formatter_class=HelpFormatter)
    _common_flags(qat)
    qat.add_argument(
        "--quant-scheme", help=f"a named scheme {SCHEME_NAMES} or a scheme JSON path {_default('quant_scheme')}"
    )
    qat.add_argument(
        "--init-from", type=Path, help="start QAT from this FP checkpoint (fine-tuning; the stage is qat-<scheme>-ft)"
    )
    return parser.parse_args(argv)


# Flags that map one-to-one onto TrainRequest fields; absent ones keep TrainRequest's defaults.
REQUEST_FLAGS = (
    "model",
    "epochs",
    "imgsz",
    "batch",
    "device",
    "hyp",
    "seed",
    "workers",
    "fraction",
    "quant_scheme",
    "init_from",
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quantized = args.command == "qat-w4a16"
    try:
        given = {key: getattr(args, key, None) for key in REQUEST_FLAGS}
        request = TrainRequest(
            run_root=args.run_root,
            data=args.data,
            quantized=quantized,
            resume=args.resume,
            overrides=parse_overrides(args.overrides, flag="--train-arg"),
            **{key: value for key, value in given.items() if value is not None},
        )
        result = train_stage(request)
    except (ValueError, RunExistsError, FileNotFoundError) as error:  # ConfigError and scheme errors are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result.stage}: {result.status}; checkpoints in {result.paths.weights_dir}")
    return 0


if __name__ == "__main__":
    cli_main(main)
