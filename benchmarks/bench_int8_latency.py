"""CPU latency of W8A8 files in OpenVINO against FP32, and against the int8 tools users pick (ortq, nncf).

Builds a YOLOv10 from its yaml (random init; latency does not depend on the weights), re-estimates its BN statistics
on letterboxed images so activations have a trained model's O(1) ranges (OpenVINO leaves convs reading ~1e-3 ranges
in float), and makes five files of the same model:

* ``fp32``: the Ultralytics exporter's float32 end-to-end ONNX (:func:`auto_quantize_model.export.export_onnx`);
* ``ours-w8a8``: this project's W8A8 (Brevitas activation calibration on the same images), ``--weights-format qdq``;
* ``ortq-w8a8``: ``onnxruntime.quantization.quantize_static`` of the FP32 file, same calibration images;
* ``nncf-w8a8``: NNCF PTQ of the FP32 file (Ultralytics' OpenVINO int8 recipe), same images.

Then ``session.run`` / ``infer`` latency, batch 1, one letterboxed image, for each (file, runtime) in
``--cases`` and each thread count in ``--threads``, all interleaved round by round so drifting load hits all alike;
median, min, max; the OpenVINO int8 share of conv MACs of every file; the machine's load average before and after.

Usage::

    .venv/bin/python benchmarks/bench_int8_latency.py --model yolov10n.yaml --imgsz 640 --threads 1 2
    .venv/bin/python benchmarks/bench_int8_latency.py --model yolov10m.yaml --imgsz 640 --threads 1 2

Prints a Markdown section for ``benchmarks/RESULTS.md`` and writes the raw numbers as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ultralytics.nn.tasks import DetectionModel

import auto_quantize_model  # noqa: F401  (pins Ultralytics offline before it is imported)
from auto_quantize_model.export import export_onnx
from auto_quantize_model.onnx_io.baselines import quantize_fp_onnx
from auto_quantize_model.onnx_io.qdq import openvino_int8_report
from auto_quantize_model.ptq import recalibrate_batchnorm
from auto_quantize_model.quant.calibration import calibrate_activations
from auto_quantize_model.quant.yolov10 import quantize_model

FILES = ("fp32", "ours-w8a8", "ortq-w8a8", "nncf-w8a8")
# "openvino-f32": OpenVINO with INFERENCE_PRECISION_HINT f32 (true FP32 compute; OpenVINO's default runs a float
# model in bf16 on CPUs with AVX512-BF16/AMX). Ratios are to that FP32 run when it is among the cases.
DEFAULT_CASES = (
    "fp32:onnxruntime",
    "fp32:openvino-f32",
    "fp32:openvino",
    "ours-w8a8:openvino",
    "ortq-w8a8:openvino",
    "nncf-w8a8:openvino",
)
FP32_BASELINES = ("fp32:openvino-f32", "fp32:openvino")


def calibration_images(imgsz: int, count: int) -> list[np.ndarray]:
    """Ultralytics' two bundled photos, letterboxed, in ``count`` flipped/cropped variants (deterministic)."""
    import cv2
    from ultralytics.utils import ASSETS

    from auto_quantize_model.onnx_io.preprocess import letterbox

    photos = [cv2.imread(str(ASSETS / name)) for name in ("bus.jpg", "zidane.jpg")]
    images = []
    for index in range(count):
        photo = photos[index % 2]
        height, width = photo.shape[:2]
        crop = photo[(index // 2) * height // (4 * count) :, (index // 4) * width // (4 * count) :]
        images.append(letterbox(crop[:, ::-1] if index % 3 == 1 else crop, imgsz, mode="val")[0])
    return images


def save_checkpoint(model: DetectionModel, path: Path, cfg: str, imgsz: int) -> Path:
    """Ultralytics' checkpoint layout (``ema`` holds the model)."""
    ckpt = {"epoch": -1, "model": None, "ema": copy.deepcopy(model).float(), "optimizer": None, "updates": 0}
    torch.save({**ckpt, "train_args": {"model": cfg, "imgsz": imgsz, "task": "detect"}}, path)
    return path


def build_files(cfg: str, imgsz: int, images: list[np.ndarray], folder: Path) -> dict[str, Path]:
    """The four ONNX files of one model (:data:`FILES`)."""
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=80, verbose=False)
    model.names = {i: f"class{i}" for i in range(80)}
    batches = [torch.from_numpy(image[None]) for image in images]
    recalibrate_batchnorm(model, batches, len(batches))
    fp_pt = save_checkpoint(model, folder / "fp.pt", cfg, imgsz)
    quantize_model(model, "w8a8")
    calibrate_activations(model, batches)
    w8a8_pt = save_checkpoint(model, folder / "w8a8.pt", cfg, imgsz)
    files = {
        "fp32": export_onnx(fp_pt, folder / "fp32.onnx", imgsz=imgsz).onnx_path,
        "ours-w8a8": export_onnx(w8a8_pt, folder / "ours-w8a8-qdq.onnx", imgsz=imgsz, weights_format="qdq").onnx_path,
    }
    for tool in ("ortq", "nncf"):
        files[f"{tool}-w8a8"] = Path(quantize_fp_onnx(tool, files["fp32"], folder / f"{tool}-w8a8.onnx", images).out)
    return files


def runner(path: Path, runtime: str, threads: int):
    """A callable running one image through ``path`` on ``runtime`` with ``threads`` threads."""
    if runtime.startswith("openvino"):
        from auto_quantize_model.evaluation.openvino_session import compile_model

        precision = runtime.partition("-")[2] or "default"
        request = compile_model(path, "CPU", threads, 1, precision).create_infer_request()
        return lambda x: request.infer({0: x})
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})


def time_interleaved(runs: dict[str, object], x: np.ndarray, rounds: int, warmup: int) -> dict[str, dict]:
    """Each run once per round, in a rotating order; median/min/max milliseconds."""
    for run in runs.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            start = time.perf_counter()
            runs[name](x)
            times[name].append((time.perf_counter() - start) * 1000)
    return {
        name: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "n": len(v)}
        for name, v in times.items()
    }


def report(args, files, shares, timings, load_before, load_after) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        f"### W8A8 latency: {Path(args.model).stem} @ {args.imgsz}, batch 1 ({cpu}, {os.cpu_count()} CPUs)",
        "",
        f"`{' '.join(['benchmarks/bench_int8_latency.py', *os.sys.argv[1:]])}`; load average before {load_before}, "
        f"after {load_after} (a shared machine: other jobs ran meanwhile); {args.rounds} interleaved rounds.",
        "",
        "| file | OpenVINO int8 share of conv MACs | "
        + " | ".join(f"{t} thread{'s' * (t > 1)}: runtime, median ms (min-max), vs FP32 OpenVINO" for t in args.threads)
        + " |",
        "|---|---|" + "---|" * len(args.threads),
    ]
    for case in args.cases:
        name, runtime = case.split(":")
        cells = []
        for threads in args.threads:
            t = timings[threads][case]
            base_case = next((c for c in FP32_BASELINES if c in timings[threads]), None)
            base = timings[threads][base_case]["median_ms"] if base_case else None
            ratio = f", {t['median_ms'] / base:.2f}x" if base else ""
            cells.append(f"{runtime} {t['median_ms']:.1f} ({t['min_ms']:.1f}-{t['max_ms']:.1f}){ratio}")
        lines.append(f"| {name} | {shares[name]:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov10n.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="file:runtime pairs")
    parser.add_argument("--calib-images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    images = calibration_images(args.imgsz, args.calib_images)
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        files = build_files(args.model, args.imgsz, images, Path(work))
        shares = {name: openvino_int8_report(path).int8_mac_share for name, path in files.items()}
        x = images[0][None]
        timings = {}
        for threads in args.threads:
            runs = {case: runner(files[case.split(":")[0]], case.split(":")[1], threads) for case in args.cases}
            timings[threads] = time_interleaved(runs, x, args.rounds, args.warmup)
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(report(args, files, shares, timings, load_before, load_after))
    if args.json:
        payload = {"args": vars(args) | {"json": str(args.json)}, "shares": shares, "timings": timings}
        args.json.write_text(json.dumps(payload | {"load": [load_before, load_after]}, indent=1, default=str))


if __name__ == "__main__":
    main()
