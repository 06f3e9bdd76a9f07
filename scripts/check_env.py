#!/usr/bin/env python
"""Preflight of a run: can this environment train and evaluate on the profile's device and providers?

Checks, cheapest first, stopping at the first failure: the device string, that exactly one ONNX
Runtime is installed, torch version / CUDA build / visible GPUs / compute capability and whether this
torch has kernels for it, the ONNX Runtime providers (a session must really start on the first one),
one AMP forward/backward step of a W4A16-quantized yolov10n on the device, and a one-image run of
the QCDQ / INT4 ONNX models given.

Examples::

    scripts/check_env.py                                    # CPU profile (demo, tests)
    scripts/check_env.py --device 0                         # GPU profile: CUDA then CPU providers
    scripts/check_env.py --device 0 --providers CUDAExecutionProvider CPUExecutionProvider \\
        --qcdq-onnx R/seed-0/onnx/yolov10m-qat-w4a16-qcdq.onnx --int4-onnx R/seed-0/onnx/yolov10m-qat-w4a16-int4.onnx
    pixi run -e rtx5090 check-env --device 0

Exit codes: 0 every check passed, 1 a check failed (the last line says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import auto_quantize_model  # noqa: F401  (offline Ultralytics before anything imports it)
from auto_quantize_model.runs.env_check import PreflightRequest, run_preflight
from auto_quantize_model.utils.cli import HelpFormatter, add_version_flag, cli_main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_version_flag(parser)
    parser.add_argument("--device", default="cpu", help="cpu, 0, 0,1 or cuda:N (as the training --device)")
    parser.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help="ONNX Runtime providers the profile evaluates with (default: CPU on cpu, CUDA then CPU on a GPU)",
    )
    parser.add_argument("--qcdq-onnx", type=Path, help="a QCDQ ONNX model to run one image through")
    parser.add_argument("--int4-onnx", type=Path, help="an INT4 ONNX model to run one image through")
    parser.add_argument("--model", default="yolov10n.yaml", help="model of the AMP train step (built from its YAML)")
    parser.add_argument("--quant-scheme", default="w4a16", help="quantization scheme of the AMP train step")
    parser.add_argument("--imgsz", type=int, default=160, help="image size of the AMP train step")
    parser.add_argument("--onnx-imgsz", type=int, default=640, help="image size for ONNX models with open H/W")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    request = PreflightRequest(
        device=args.device,
        providers=tuple(args.providers) if args.providers else None,
        qcdq_onnx=args.qcdq_onnx,
        int4_onnx=args.int4_onnx,
        model=args.model,
        scheme=args.quant_scheme,
        imgsz=args.imgsz,
        onnx_imgsz=args.onnx_imgsz,
    )
    report = run_preflight(request, emit=lambda line: print(line, flush=True))
    if report.failure:
        print(f"check_env: FAIL: {report.failure.name}: {report.failure.detail}", file=sys.stderr)
        return 1
    print(f"check_env: OK ({request.device})")
    return 0


if __name__ == "__main__":
    cli_main(main)
