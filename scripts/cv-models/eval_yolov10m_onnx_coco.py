#!/usr/bin/env python
"""Evaluate a YOLOv10 ONNX model (FP16 or QAT QCDQ) on a COCO annotation file.

Example::

    python scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx R/seed-0/onnx/yolov10m-fp16-float32.onnx \\
        --ann-file R/dataset/instances_val.json --images-dir R/dataset/images/val --out-dir R/seed-0/eval/fp16-float32

Writes ``OUT/metrics.json`` and ``OUT/detections.json`` (see :mod:`auto_quantize_model.evaluate`).
Exit status 2 on bad input (missing files, wrong model layout, class-count mismatch, a listed image that cannot
be read unless ``--allow-missing-images``) and when a requested provider does not start
(``--allow-provider-fallback`` runs on what starts instead, with a warning).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics settings before anything imports it)
from auto_quantize_model.evaluate import evaluate_onnx_coco
from auto_quantize_model.evaluation.coco import COCO_BACKENDS, DEFAULT_COCO_BACKEND
from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.ort_session import FALLBACK_FLAG, GRAPH_OPTIMIZATIONS, SessionSettings
from auto_quantize_model.evaluation.runtime import DEFAULT_RUNTIME, RUNTIMES
from auto_quantize_model.onnx_io.contract import OUTPUT_FORMATS
from auto_quantize_model.runs import metrics_keys as K
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; defaults match Ultralytics' validator (conf 0.001, iou 0.7, max_det 300)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--onnx", required=True, type=Path, help="ONNX model ([N,3,H,W] input 'images')")
    parser.add_argument("--ann-file", required=True, type=Path, help="COCO instances json")
    parser.add_argument("--images-dir", required=True, type=Path, help="folder holding the annotation's file_names")
    parser.add_argument("--out-dir", required=True, type=Path, help="where metrics.json and detections.json go")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640], help="H W (or one size) for dynamic inputs")
    parser.add_argument(
        "--providers",
        nargs="+",
        default=["CPUExecutionProvider"],
        help="onnxruntime providers, all of which must start (GPU: CUDAExecutionProvider CPUExecutionProvider)",
    )
    parser.add_argument(
        FALLBACK_FLAG,
        action="store_true",
        help="a requested provider that is missing or fails to start is replaced by CPU (warned, recorded) "
        "instead of being an error",
    )
    parser.add_argument("--max-images", type=int, default=None, help="first N image ids (sorted)")
    parser.add_argument("--batch", type=int, default=1, help="batch size when the model batch is dynamic")
    parser.add_argument("--conf", type=float, default=0.001, help="keep detections with score > conf")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU for the raw layout")
    parser.add_argument("--max-dets", type=int, default=300, help="detections kept per image")
    parser.add_argument("--conf-prod", type=float, default=0.25, help="operating point for precision/recall/F1")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default=None, help="override layout detection")
    parser.add_argument(
        "--coco-backend",
        choices=COCO_BACKENDS,
        default=DEFAULT_COCO_BACKEND,
        help="COCOeval implementation: faster-coco-eval (C++, same stats, default) or pycocotools (the reference)",
    )
    parser.add_argument(
        "--fold-weights",
        action="store_true",
        help="session.disable_quant_qdq=1: fold constant DequantizeLinear weights once at load (QCDQ/INT4 models)",
    )
    parser.add_argument("--intra-op-threads", type=int, default=0, help="threads per session.run (0 = auto)")
    parser.add_argument("--parallel-runs", type=int, default=0, help="batches run at once (0 = auto: CPUs on CPU)")
    parser.add_argument(
        "--graph-optimization", choices=GRAPH_OPTIMIZATIONS, default="all", help="ONNX Runtime graph optimization level"
    )
    parser.add_argument("--workers", type=int, default=2, help="image decode threads")
    parser.add_argument(
        "--runtime",
        choices=sorted(RUNTIMES),
        default=DEFAULT_RUNTIME,
        help="what runs the ONNX file: onnxruntime (default) or openvino (CPU plugin; integer kernels for QDQ files)",
    )
    parser.add_argument(
        "--allow-missing-images",
        action="store_true",
        help="score the readable images when some listed ones are missing or undecodable (counted in metrics.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; print the headline numbers; return 0, or 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args.imgsz) not in (1, 2):
        parser.error("--imgsz takes one size or H W")
    imgsz = args.imgsz[0] if len(args.imgsz) == 1 else (args.imgsz[0], args.imgsz[1])
    try:
        result = evaluate_onnx_coco(
            args.onnx,
            args.ann_file,
            args.images_dir,
            args.out_dir,
            imgsz=imgsz,
            providers=tuple(args.providers),
            max_images=args.max_images,
            batch=args.batch,
            conf=args.conf,
            iou=args.iou,
            max_dets=args.max_dets,
            conf_prod=args.conf_prod,
            output_format=args.output_format,
            workers=args.workers,
            coco_backend=args.coco_backend,
            session_settings=SessionSettings(
                args.intra_op_threads, args.parallel_runs, args.graph_optimization, args.fold_weights
            ),
            runtime=args.runtime,
            allow_provider_fallback=args.allow_provider_fallback,
            allow_missing_images=args.allow_missing_images,
        )
    except EvaluationInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    m = result.metrics
    print(
        f"mAP50-95 {m[K.MAP50_95]}  mAP50 {m[K.MAP50]}  images {m[K.NUM_IMAGES]} "
        f"(skipped {m[K.NUM_IMAGES_SKIPPED]})  {m[K.IMAGES_PER_S]:.1f} img/s  [{m[K.COCO_BACKEND]}] "
        f"-> {result.metrics_path}"
    )
    return 0


if __name__ == "__main__":
    cli_main(main)
