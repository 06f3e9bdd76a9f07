"""ONNX size, load cost and ONNX Runtime CPU latency: float32, FP16, W4A16 QCDQ and W4A16 native INT4.

Builds a YOLOv10 model from its yaml (random init: size and latency do not depend on the weights),
quantizes a copy with the ``w4a16`` scheme, saves both as Ultralytics-style checkpoints under ``tmp/``
and exports four files with :func:`auto_quantize_model.export.export_onnx` (end-to-end layout): float32,
FP16 (``half=True``), QCDQ and INT4 (``weights_format="int4"``). Then, for every file:

* bytes, and the ratio to the float32 and to the FP16 file (:func:`auto_quantize_model.onnx_io.size.size_table`);
* ``session.run`` latency on one letterboxed image with default session options and "folded"
  (``session.disable_quant_qdq=1``: constant DequantizeLinear folded once at load), all eight sessions
  interleaved (float32, float32 folded, FP16, ...) so drifting machine load hits all alike; median, min, max;
* that folded and default outputs are identical;
* session load time and peak RSS, each in a fresh subprocess (median over ``--load-repeats``).

Usage::

    .venv/bin/python benchmarks/bench_onnx_size_latency.py                                   # yolov10n, CI-speed
    .venv/bin/python benchmarks/bench_onnx_size_latency.py --model yolov10m.yaml --imgsz 640 # the real figure

Prints a Markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.export import export_onnx
from auto_quantize_model.onnx_io.size import SizeRow, size_table, size_table_markdown
from auto_quantize_model.utils.ultralytics_env import project_root

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
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "epoch": -1,
        "best_fitness": None,
        "model": None,
        "ema": copy.deepcopy(model).half(),
        "updates": 0,
        "optimizer": None,
        "train_args": {"model": cfg, "imgsz": imgsz, "task": "detect"},
    }
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

    from auto_quantize_model.onnx_io.preprocess import letterbox

    return letterbox(cv2.imread(str(ASSETS / "bus.jpg")), imgsz, mode="val")[0][None]


# onnxruntime keeps DequantizeLinear out of constant folding so that its QDQ fusions can pair it with a
# QuantizeLinear; with float activations (A16) there is nothing to fuse, and the weights are dequantized on
# every run. This session option turns the QDQ transformers off, so the integer -> float weights fold once.
FOLD_DQ_CONFIG = {"session.disable_quant_qdq": "1"}
FILES = ("float32", "fp16", "qcdq", "int4")
SETTINGS = {"default": {}, "folded": FOLD_DQ_CONFIG}


def export_files(fp_pt: Path, q_pt: Path, imgsz: int, folder: Path) -> dict[str, Path]:
    """The four ONNX files of one model, in :data:`FILES` order."""
    return {
        "float32": export_onnx(fp_pt, folder / "float32.onnx", imgsz=imgsz).onnx_path,
        "fp16": export_onnx(fp_pt, folder / "fp16.onnx", imgsz=imgsz, half=True).onnx_path,
        "qcdq": export_onnx(q_pt, folder / f"{SCHEME}-qcdq.onnx", imgsz=imgsz).onnx_path,
        "int4": export_onnx(q_pt, folder / f"{SCHEME}-int4.onnx", imgsz=imgsz, weights_format="int4").onnx_path,
    }


def session_options(config: dict[str, str], threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return options


def open_sessions(paths: dict[str, Path], threads: int) -> dict[tuple[str, str], object]:
    """One CPU session per (file, setting)."""
    import onnxruntime as ort

    return {
        (name, setting): ort.InferenceSession(
            str(path), session_options(config, threads), providers=["CPUExecutionProvider"]
        )
        for name, path in paths.items()
        for setting, config in SETTINGS.items()
    }


def time_interleaved(sessions: dict, x: np.ndarray, repeats: int, warmup: int) -> dict:
    """Run every session ``warmup`` times, then ``repeats`` rounds of one timed run each, in turn."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(["output0"], {"images": x})
    times: dict = {k: [] for k in sessions}
    for _ in range(repeats):
        for key, session in sessions.items():
            start = time.perf_counter()
            session.run(["output0"], {"images": x})
            times[key].append((time.perf_counter() - start) * 1e3)
    return {k: Timing(statistics.median(v), min(v), max(v)) for k, v in times.items()}


def folded_differences(sessions: dict, x: np.ndarray) -> dict[str, float]:
    """Max |default - folded| of ``output0`` per file (the same arithmetic: expect exactly 0)."""
    return {
        name: float(
            np.abs(
                sessions[(name, "default")].run(["output0"], {"images": x})[0]
                - sessions[(name, "folded")].run(["output0"], {"images": x})[0]
            ).max()
        )
        for name in {n for n, _ in sessions}
    }


# Runs in a fresh interpreter so each session's memory is its own: RSS before the session (numpy +
# onnxruntime imported), then load time and the peak RSS after one run. VmHWM, not ru_maxrss: Linux carries the
# parent's ru_maxrss across fork + exec, so the child would report the benchmark process's own peak.
LOAD_PROBE = """
import json, sys, time
import numpy as np, onnxruntime as ort
path, threads, fold, imgsz = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
def status_kib(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))
before = status_kib("VmRSS")
options = ort.SessionOptions()
options.intra_op_num_threads = threads
if fold:
    options.add_session_config_entry("session.disable_quant_qdq", "1")
start = time.perf_counter()
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
load_s = time.perf_counter() - start
session.run(["output0"], {"images": np.zeros((1, 3, imgsz, imgsz), np.float32)})
print(json.dumps({"load_s": load_s, "rss_before_kib": before, "peak_rss_kib": status_kib("VmHWM")}))
"""


@dataclass(frozen=True)
class LoadCost:
    """Median session load time and peak RSS over fresh processes."""

    load_ms: float
    load_ms_min: float
    load_ms_max: float
    peak_rss_mb: float  # whole process after load + one run
    session_rss_mb: float  # peak minus the RSS before the session was created


def measure_load(path: Path, folded: bool, threads: int, imgsz: int, repeats: int) -> LoadCost:
    runs = []
    for _ in range(repeats):
        argv = [sys.executable, "-c", LOAD_PROBE, str(path), str(threads), "1" if folded else "0", str(imgsz)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    loads = [r["load_s"] * 1e3 for r in runs]
    peak = statistics.median(r["peak_rss_kib"] for r in runs) / 1024
    session = statistics.median(r["peak_rss_kib"] - r["rss_before_kib"] for r in runs) / 1024
    return LoadCost(statistics.median(loads), min(loads), max(loads), peak, session)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def report(
    args: argparse.Namespace,
    rows: list[SizeRow],
    timings: dict,
    loads: dict,
    fold_diff: dict,
    command: str,
    load_before: str,
    load_after: str,
) -> str:
    """The Markdown section for ``benchmarks/RESULTS.md``."""
    import onnxruntime as ort

    base = timings[("float32", "default")].median_ms
    by_name = {r.label: r for r in rows}
    lines = [
        f"## ONNX size, load cost and ONNX Runtime CPU latency: float32, FP16, W4A16 QCDQ, W4A16 INT4 "
        f"({Path(args.model).stem}, imgsz {args.imgsz})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs; `cat /proc/loadavg` before: "
        f"`{load_before}`, after: `{load_after}`. onnxruntime {ort.__version__} CPUExecutionProvider, intra-op threads "
        f"{args.threads or 'default'}, batch 1, end-to-end output, random-init weights (size and latency do not depend "
        f"on the values), {args.repeats} interleaved runs per session after {args.warmup} warm-up runs.",
        "",
        size_table_markdown(rows),
        "",
        "| file | setting | median ms | min ms | max ms | median vs float32 default | load ms (median, min-max) | "
        "peak RSS MB | session RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, setting), t in timings.items():
        cost = loads[(name, setting)]
        lines.append(
            f"| {name} | {setting} | {t.median_ms:.1f} | {t.min_ms:.1f} | {t.max_ms:.1f} | {t.median_ms / base:.2f} | "
            f"{cost.load_ms:.0f} ({cost.load_ms_min:.0f}-{cost.load_ms_max:.0f}) | {cost.peak_rss_mb:.0f} | "
            f"{cost.session_rss_mb:.0f} |"
        )
    lines += [
        "",
        f"INT4/float32 size: **{by_name['int4'].ratio_to_float32:.3f}x** (target <= 0.14x), INT4/FP16 "
        f"{by_name['int4'].ratio_to_fp16:.3f}x, QCDQ/float32 {by_name['qcdq'].ratio_to_float32:.3f}x. "
        "Folded vs default outputs, max |diff| per file: "
        + ", ".join(f"{k} {v:.3g}" for k, v in sorted(fold_diff.items()))
        + ".",
        "'folded' sets `session.disable_quant_qdq=1`; load time and RSS come from "
        f"{args.load_repeats} fresh processes per row (session RSS = peak minus the RSS before the session).",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov10n.yaml", help="Ultralytics model yaml (default yolov10n.yaml)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per session")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--load-repeats", type=int, default=3, help="fresh processes per file and setting for load/RSS")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints and ONNX files under tmp/")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    command = " ".join([".venv/bin/python", *sys.argv])
    load_before = loadavg()
    scratch = Path(tempfile.mkdtemp(prefix="bench-onnx-size-latency-", dir=project_root() / "tmp"))
    try:
        fp_pt, q_pt = build_checkpoints(args.model, args.imgsz, scratch)
        paths = export_files(fp_pt, q_pt, args.imgsz, scratch)
        rows = size_table(paths)
        x = sample_input(args.imgsz)
        sessions = open_sessions(paths, args.threads)
        fold_diff = folded_differences(sessions, x)
        timings = time_interleaved(sessions, x, args.repeats, args.warmup)
        del sessions
        loads = {
            (name, setting): measure_load(paths[name], setting == "folded", args.threads, args.imgsz, args.load_repeats)
            for name in FILES
            for setting in SETTINGS
        }
        print("\n" + report(args, rows, timings, loads, fold_diff, command, load_before, loadavg()))
    finally:
        if args.keep:
            print(f"\nfiles kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
