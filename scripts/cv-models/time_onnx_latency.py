#!/usr/bin/env python
"""Time every ONNX file of one training seed together: one process, interleaved rounds, warm, equal threads.

Example::

    python scripts/cv-models/time_onnx_latency.py --out R/seed-0/latency.json \\
        --onnx fp16-float32=R/seed-0/onnx/yolov10m-fp16-float32.onnx \\
        --onnx qat-w4a16-qcdq=R/seed-0/onnx/yolov10m-qat-w4a16-qcdq.onnx --rounds 30 --threads 1 --fold-weights

Writes ``latency.json`` (see :mod:`auto_quantize_model.latency`). Exit status 2 on bad input (a missing file, too
few rounds) and when a requested provider does not start (``--allow-provider-fallback`` runs on what starts).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics settings before anything imports it)
from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.ort_session import FALLBACK_FLAG
from auto_quantize_model.latency import DEFAULT_WARMUP_RUNS, LatencySettings, time_onnx_latency
from auto_quantize_model.runs import latency_keys as L
from auto_quantize_model.runs.config import MIN_LATENCY_ROUNDS
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def _labelled_path(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=PATH, e.g. fp16-float32=R/seed-0/onnx/m.onnx")
    return label, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--onnx", required=True, action="append", type=_labelled_path, help="LABEL=PATH, repeated")
    parser.add_argument("--out", required=True, type=Path, help="the latency.json to write")
    parser.add_argument(
        "--rounds", type=int, default=MIN_LATENCY_ROUNDS, help=f"timed runs per file (>= {MIN_LATENCY_ROUNDS})"
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of every session (0 = every CPU)")
    parser.add_argument("--warmup-runs", type=int, default=DEFAULT_WARMUP_RUNS, help="untimed runs per file first")
    parser.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"], help="all must start")
    parser.add_argument(FALLBACK_FLAG, action="store_true", help="replace a provider that does not start by CPU")
    parser.add_argument("--fold-weights", action="store_true", help="session.disable_quant_qdq=1, as the evals")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640], help="H W (or one size) for dynamic inputs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Time the files; print one line per file; return 0, or 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    labels = [label for label, _ in args.onnx]
    if len(set(labels)) != len(labels) or len(args.imgsz) not in (1, 2):
        parser.error(f"--onnx labels must differ (got {labels}) and --imgsz takes one size or H W")
    settings = LatencySettings(
        rounds=args.rounds,
        threads=args.threads,
        providers=tuple(args.providers),
        fold_weights=args.fold_weights,
        allow_provider_fallback=args.allow_provider_fallback,
        warmup_runs=args.warmup_runs,
        imgsz=args.imgsz[0] if len(args.imgsz) == 1 else (args.imgsz[0], args.imgsz[1]),
    )
    try:
        result = time_onnx_latency(dict(args.onnx), args.out, settings)
    except EvaluationInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report, load = result.report, result.report[L.LOAD_AVG_1MIN]
    for label, entry in report[L.FILES].items():
        print(
            f"{label}: {entry[L.MEDIAN_MS]:.2f} ms [{entry[L.MIN_MS]:.2f}, {entry[L.MAX_MS]:.2f}] "
            f"IQR [{entry[L.P25_MS]:.2f}, {entry[L.P75_MS]:.2f}] on {entry[L.PROVIDERS][0]}"
        )
    loads = f"{load[L.LOAD_MIN]:.2f}-{load[L.LOAD_MAX]:.2f}"
    print(f"{report[L.ROUNDS]} rounds, {report[L.THREADS]} threads, load {loads} -> {result.path}")
    return 0


if __name__ == "__main__":
    cli_main(main)
