"""ONNX file size and ONNX Runtime CPU latency: FP export vs W4A16 Brevitas QCDQ export of the same model.

Builds a YOLOv10 model from its yaml (random init: size and latency do not depend on the weights),
quantizes a copy with the ``w4a16`` scheme, saves both as Ultralytics-style checkpoints under
``tmp/``, exports both with :func:`auto_quantize_model.export.export_onnx` (end-to-end layout, the
project default) and times ``session.run`` on one letterboxed image: FP, QCDQ, and QCDQ with
onnxruntime's ``session.disable_quant_qdq=1`` (weights dequantized once at load), interleaved
(FP, QCDQ, QCDQ folded, FP, ...) so drifting machine load hits all alike; medians are reported.

Usage::

    .venv/bin/python benchmarks/bench_onnx_size_latency.py                                   # yolov10n, CI-speed
    .venv/bin/python benchmarks/bench_onnx_size_latency.py --model yolov10m.yaml --imgsz 640 # the real figure

Prints a Markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
import numpy as np
import torch
from ultralytics.nn.tasks import DetectionModel

from auto_quantize_model.export import export_onnx
from auto_quantize_model.ultralytics_ext.env import project_root

SCHEME = "w4a16"


@dataclass(frozen=True)
class Timing:
    """Median and spread of one model's ``session.run`` times in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float


def save_checkpoint(model: DetectionModel, path: Path, cfg: str, imgsz: int) -> Path:
    """Save ``model`` the way Ultralytics' trainer does (``ema`` holds a half-precision copy)."""
    ckpt = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "epoch": -1, "best_fitness": None, "model": None,
        "ema": copy.deepcopy(model).half(), "updates": 0, "optimizer": None,
        "train_args": {"model": cfg, "imgsz": imgsz, "task": "detect"},
    }  # fmt: skip
    torch.save(ckpt, path)
    return path


def build_checkpoints(cfg: str, imgsz: int, folder: Path) -> tuple[Path, Path]:
    """FP and W4A16 checkpoints of one randomly initialised model (same weights before quantization)."""
    from auto_quantize_model.quant.yolov10 import quantize_model

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=80, verbose=False)
    model.names = {i: f"class{i}" for i in range(80)}
    fp = save_checkpoint(model, folder / "fp.pt", cfg, imgsz)
    quantized = copy.deepcopy(model)
    quantize_model(quantized, SCHEME)
    return fp, save_checkpoint(quantized, folder / f"{SCHEME}.pt", cfg, imgsz)


def sample_input(imgsz: int) -> np.ndarray:
    """Ultralytics' bundled ``bus.jpg`` letterboxed like the evaluator does, as a batch of one."""
    import cv2
    from ultralytics.utils import ASSETS

    from auto_quantize_model.preprocess import letterbox

    return letterbox(cv2.imread(str(ASSETS / "bus.jpg")), imgsz, mode="val")[0][None]


# onnxruntime keeps DequantizeLinear out of constant folding so that its QDQ fusions can pair it with a
# QuantizeLinear; with float activations (A16) there is nothing to fuse, and the weights are dequantized on
# every run. This session option turns the QDQ transformers off, so the int8 -> float weights fold once.
FOLD_DQ_CONFIG = {"session.disable_quant_qdq": "1"}
VARIANTS = {  # name -> (which file, session config entries)
    "fp": ("fp", {}),
    "qcdq": ("qcdq", {}),
    "qcdq_folded": ("qcdq", FOLD_DQ_CONFIG),
}


def open_sessions(paths: dict[str, Path], threads: int) -> dict[str, object]:
    """One CPU session per variant of :data:`VARIANTS`."""
    import onnxruntime as ort

    sessions = {}
    for name, (file_key, config) in VARIANTS.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        sessions[name] = ort.InferenceSession(str(paths[file_key]), options, providers=["CPUExecutionProvider"])
    return sessions


def time_interleaved(sessions: dict[str, object], x: np.ndarray, repeats: int, warmup: int) -> dict[str, Timing]:
    """Run every session ``warmup`` times, then ``repeats`` rounds of one timed run each, in turn."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(["output0"], {"images": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(["output0"], {"images": x})
            times[name].append((time.perf_counter() - start) * 1e3)
    return {k: Timing(statistics.median(v), min(v), max(v)) for k, v in times.items()}


def folded_output_difference(sessions: dict[str, object], x: np.ndarray) -> float:
    """Max |difference| of the QCDQ output with and without DQ folding (the same arithmetic: expect 0)."""
    plain, folded = (sessions[k].run(["output0"], {"images": x})[0] for k in ("qcdq", "qcdq_folded"))
    return float(np.abs(plain - folded).max())


def report(args: argparse.Namespace, sizes: dict[str, int], timings: dict[str, Timing], fold_diff: float, command: str) -> str:
    """The Markdown section for ``benchmarks/RESULTS.md``."""
    import onnxruntime as ort

    rows = {
        "fp": ("FP (Ultralytics exporter)", sizes["fp"]),
        "qcdq": ("W4A16 QCDQ (Brevitas), default session", sizes["qcdq"]),
        "qcdq_folded": ("W4A16 QCDQ, `session.disable_quant_qdq=1`", sizes["qcdq"]),
    }
    fp = timings["fp"].median_ms
    lines = [
        f"## ONNX size and ONNX Runtime CPU latency: FP vs W4A16 QCDQ ({Path(args.model).stem}, imgsz {args.imgsz})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"onnxruntime {ort.__version__} CPUExecutionProvider, intra-op threads {args.threads or 'default'}, batch 1, "
        f"end-to-end output, random-init weights, {args.repeats} interleaved runs after {args.warmup} warm-up runs each.",
        "",
        "| model | ONNX size (MB) | median ms | min ms | max ms | median vs FP |",
        "|---|---|---|---|---|---|",
        *(f"| {label} | {size / 1e6:.1f} | {timings[k].median_ms:.1f} | {timings[k].min_ms:.1f} | "
          f"{timings[k].max_ms:.1f} | {timings[k].median_ms / fp:.2f} |" for k, (label, size) in rows.items()),
        "",
        f"QCDQ/FP size ratio: {sizes['qcdq'] / sizes['fp']:.2f} (4-bit codes stored in int8 initializers).",
        "With default options onnxruntime keeps DequantizeLinear out of constant folding (for its QDQ fusions),",
        "so with float activations it dequantizes every weight on every run. `session.disable_quant_qdq=1`",
        f"lets the weights fold once at load; outputs identical (max |diff| {fold_diff:.3g}).",
    ]  # fmt: skip
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov10n.yaml", help="Ultralytics model yaml (default yolov10n.yaml)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints and ONNX files under tmp/")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import sys

    command = " ".join([".venv/bin/python", *sys.argv])
    scratch = Path(tempfile.mkdtemp(prefix="bench-onnx-size-latency-", dir=project_root() / "tmp"))
    try:
        fp_pt, q_pt = build_checkpoints(args.model, args.imgsz, scratch)
        paths = {
            "fp": export_onnx(fp_pt, scratch / "fp.onnx", imgsz=args.imgsz).onnx_path,
            "qcdq": export_onnx(q_pt, scratch / f"{SCHEME}-qcdq.onnx", imgsz=args.imgsz).onnx_path,
        }
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        x = sample_input(args.imgsz)
        sessions = open_sessions(paths, args.threads)
        fold_diff = folded_output_difference(sessions, x)
        timings = time_interleaved(sessions, x, args.repeats, args.warmup)
        print("\n" + report(args, sizes, timings, fold_diff, command))
    finally:
        if args.keep:
            print(f"\nfiles kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
