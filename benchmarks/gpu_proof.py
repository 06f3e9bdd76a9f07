#!/usr/bin/env python
"""One command that proves the GPU path: environment, AMP with quantized layers, step times, one epoch + exports.

Parts, each stopped at its time budget (what it left out is reported as skipped, with the reason):

  env    GPU name, compute capability, torch / CUDA / cuDNN versions, whether torch's arch list covers the device,
         where torch, Ultralytics and Brevitas were imported from.
  amp    every registry scheme: one train step under fp16 and under bf16 autocast (no dtype error, finite loss and
         gradients, conv outputs in the autocast dtype), one layer against float32 CPU references, fp16 validation.
  steps  training-step time of FP and each quantized scheme (one per scale method / activation bits) through the
         project's trainers, fp16 and bf16 AMP, CUDA events, interleaved, with peak memory.
  epoch  one epoch of FP and W4A16 QAT on generated data through the runner's own stages (dry-run profile), the
         float32 / QCDQ / INT4 exports, each ONNX file on ONNX Runtime CPU against its model on the device.

Writes gpu_proof.json and gpu_proof.md to --out (default tmp/gpu-proof/<mode>-<time>/). Exit code 0 when no
part failed (skips are not failures), 1 otherwise, 2 for bad flags.

On the GPU test machine (Python 3.12, its own torch and CPU onnxruntime, no network), two steps from the
repository root, with tmp/gpu-wheels made here by scripts/gpu_wheels.sh and carried along:

  python3 -m pip install --no-index --no-deps --target tmp/aqm-site tmp/gpu-wheels/*.whl
  PYTHONPATH=src:tmp/aqm-site python3 benchmarks/gpu_proof.py --device 0 --out tmp/gpu-proof/h100

The default budgets (env 15 s, amp 45 s, steps 150 s, epoch 250 s) keep it under 8 minutes on one H100;
--budget-scale 0.8 leaves more margin, --parts steps reruns one part. CPU mode for the tests:

  python benchmarks/gpu_proof.py --device cpu --tiny       # yolov10n at 64 px, every part, ~80-100 s of CPU
"""

from __future__ import annotations

import argparse
import sys
import time

from gpu_proof_parts.budget import Part, run_part, skipped_part
from gpu_proof_parts.settings import PARTS, ProofInputError, ProofSettings, build_settings

from auto_quantize_model.runs.provenance import command_line, utc_now
from auto_quantize_model.utils.version import git_state


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="0", help="CUDA index (0 or cuda:0) or cpu (default 0)")
    parser.add_argument("--tiny", action="store_true", help="yolov10n at 64 px on a handful of images (CPU tests)")
    parser.add_argument("--out", help="report folder, new or empty (default tmp/gpu-proof/<mode>-<time>)")
    parser.add_argument("--parts", help=f"comma list of parts to run (default all: {','.join(PARTS)})")
    parser.add_argument("--schemes", nargs="+", help="timed schemes: auto (one per scale method), all, or names")
    parser.add_argument("--steps", type=int, help="timed steps per model and AMP dtype (default 50; --tiny 2)")
    for part in PARTS:
        parser.add_argument(f"--budget-{part}", type=float, metavar="S", help=f"seconds for part {part}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (slower machines)")
    parser.add_argument(
        "--extra-stages",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the required stages: FP16 export, ONNX evaluation, summary (default on; off with --tiny)",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> ProofSettings:
    return build_settings(
        out=args.out,
        device=args.device,
        tiny=args.tiny,
        parts=args.parts,
        schemes=args.schemes,
        budget_scale=args.budget_scale,
        budgets={part: getattr(args, f"budget_{part}") for part in PARTS},
        steps=args.steps,
        extra_stages=args.extra_stages,
    )


def run_parts(settings: ProofSettings) -> dict[str, Part]:
    """Every part in order; on a GPU, nothing after an environment that cannot run on the device."""
    from gpu_proof_parts import amp_check, environment, epoch_run, step_timing

    bodies = {"env": environment.run, "amp": amp_check.run, "steps": step_timing.run, "epoch": epoch_run.run}
    parts: dict[str, Part] = {}
    for name in PARTS:
        budget = settings.budgets[name]
        unusable = parts.get("env") is not None and parts["env"].status == "failed"
        if name not in settings.parts:
            parts[name] = skipped_part(name, budget, "not selected (--parts)")
        elif unusable:
            parts[name] = skipped_part(name, budget, "the environment check failed: see part env")
        elif budget <= 0:
            parts[name] = skipped_part(name, budget, "budget 0 s")
        else:
            print(f"[{name}] running (budget {budget:.0f} s)", flush=True)
            parts[name] = run_part(Part(name, budget), lambda part, body=bodies[name]: body(settings, part))
        print(f"[{name}] {parts[name].status} after {parts[name].seconds:.1f} s", flush=True)
    return parts


def main(argv: list[str] | None = None) -> int:
    began = time.monotonic()
    args = parse_args(argv)
    try:
        settings = settings_from(args)
    except ProofInputError as error:
        print(f"gpu_proof: error: {error}", file=sys.stderr)
        return 2
    settings.out.mkdir(parents=True, exist_ok=True)
    header = {"schema_version": 1, "started_at": utc_now(), "command": command_line(), "git": git_state()}
    print(f"gpu_proof: {settings.mode}, {settings.model} at {settings.imgsz} px, report in {settings.out}", flush=True)
    parts = run_parts(settings)
    from gpu_proof_parts.report import targets_section, write_report

    json_path, md_path = write_report(settings, parts, header, time.monotonic() - began)
    print(targets_section(md_path.read_text(encoding="utf-8")))
    failed = [name for name, part in parts.items() if part.status == "failed"]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "no part failed"
    print(f"gpu_proof: {verdict}; report {md_path} ({json_path.name})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
