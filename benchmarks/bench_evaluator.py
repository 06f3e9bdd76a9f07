#!/usr/bin/env python
"""Images/s of the shared ONNX COCO evaluator against ``YOLO(onnx).val()``: a protocol that survives machine load.

For each case (model YAML, input size, output layout) a randomly initialised model is built from its YAML (no
download), its batch-norm statistics set from the benchmark's own images (so boxes and scores depend on the
input), exported to ONNX at batch 1, and both evaluators score the same ONNX file on the same generated JPEGs,
at the same ``conf`` and ``max_det``. Random weights make the accuracy meaningless; at the default conf 0 the
work per image is the most a model can cost: 300 end-to-end rows, or 30000 raw NMS candidates.

How each side's work is counted (one whole call each, nothing cached between calls but the OS page cache and
Ultralytics' label cache, which the untimed warm-up call writes):
  ours         ``evaluate_onnx_coco`` with the runner's session settings (weights folded, threads automatic):
               annotation load, session creation (no warm-up run: each run slot's first batch is left out of
               the latency figures instead), decode/letterbox, inference, output decoding, COCOeval (backend as
               configured), per-class AP, the conf_prod operating point, sha256 of model and annotations (read
               from the stamp-keyed cache beside each file after the first call), detections.json + metrics.json.
  ultralytics  ``YOLO(onnx, task="detect").val(batch=1, workers=0, plots=False, save_json=False)``: AutoBackend
               load, dataset build, warm-up, decode/letterbox, inference, postprocess, its own mAP (not COCOeval).
  bare         ``session.run`` alone over the same letterboxed inputs held in memory: ORT's default session run
               sequentially (what Ultralytics uses), and the evaluator's session settings run the evaluator's way
               (``parallel_runs`` calls in flight). The evaluator's inference loop is compared with the latter.

Protocol: one untimed warm-up of each side, then ``--repeats`` rounds; each round runs all four measurements,
in an order that alternates between rounds, and records the 1-minute load average before it. Ratios are paired
per round (ultralytics seconds / ours seconds), reported as median and [min, max]. The run fails (exit 3) when
the spread of a ratio is larger than its distance from 1.0, i.e. when load noise could flip the answer; and
(exit 4) when the two sides disagree on detections per image, or the configured COCO backend's stats differ
from pycocotools' by more than 1e-4 (both checked once, untimed).

    .venv/bin/python benchmarks/bench_evaluator.py --cases yolov10n:320 yolov10m:640:16 --formats e2e raw --repeats 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

import auto_quantize_model  # noqa: F401  (offline Ultralytics settings first)
from auto_quantize_model.evaluate import evaluate_onnx_coco
from auto_quantize_model.evaluation.coco import DEFAULT_COCO_BACKEND, load_coco_annotations, select_images
from auto_quantize_model.evaluation.loop import load_one
from auto_quantize_model.evaluation.ort_session import SessionSettings, open_session
from auto_quantize_model.runs import metrics_keys as K

if TYPE_CHECKING:
    import torch

NC = 80  # the class count of the yolov10*.yaml files
TARGET_RATIO = 1.5
LOOP_TARGET = 0.9  # the evaluator's inference loop >= 90% of bare session.run images/s
# What the runner passes (every profile sets eval_fold_weights: true): a no-op on float weights; on a QCDQ file the
# constant DequantizeLinear nodes are folded once at load. Threads and parallel runs stay automatic.
EVALUATOR_SETTINGS = SessionSettings(fold_weights=True)


@dataclass(frozen=True)
class Case:
    """One benchmark case: ``model:imgsz[:images]`` on the command line."""

    model: str
    imgsz: int
    images: int
    fmt: str
    weights: str = "float32"

    @property
    def name(self) -> str:
        return f"{self.model}-{self.imgsz}-{self.fmt}" + ("" if self.weights == "float32" else f"-{self.weights}")


def parse_case(text: str, default_images: int, fmt: str, weights: str) -> Case:
    """``yolov10n:320`` or ``yolov10m:640:32`` (the third field overrides --images for that model)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
        raise SystemExit(f"--cases entry {text!r}: expected MODEL:IMGSZ[:IMAGES], e.g. yolov10n:320 or yolov10m:640:32")
    return Case(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else default_images, fmt, weights)


def make_images(root: Path, count: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """JPEGs of mixed sizes with coloured rectangles, their COCO json, YOLO labels and a dataset yaml."""
    rng = np.random.default_rng(seed)
    images_dir, labels_dir = root / "images" / "val", root / "labels" / "val"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for image_id in range(1, count + 1):
        h, w = (480, 640) if image_id % 3 else (640, 427)
        image = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 6))):
            x1, y1 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            x2, y2 = x1 + int(rng.integers(20, min(200, w - x1))), y1 + int(rng.integers(20, min(200, h - y1)))
            cls = int(rng.integers(0, NC))
            cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
            box = [x1, y1, x2 - x1, y2 - y1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "iscrowd": 0,
                    "bbox": box,
                    "area": box[2] * box[3],
                }
            )
            lines.append(f"{cls} {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {box[2] / w:.8f} {box[3] / h:.8f}")
        cv2.imwrite(str(images_dir / f"{image_id}.jpg"), image)
        (labels_dir / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": w, "height": h})
    ann_file = root / "instances_val.json"
    categories = [{"id": i + 1, "name": f"class{i}"} for i in range(NC)]
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    data_yaml = root / "data.yaml"
    names = {i: f"class{i}" for i in range(NC)}
    data_yaml.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: {names}\n")
    return ann_file, images_dir, data_yaml


def export_model(root: Path, case: Case, images_dir: Path) -> Path:
    """Export a random-init model with batch-norm statistics measured on the benchmark's images.

    Straight from its YAML, a YOLOv10's activations shrink layer by layer until its outputs no longer depend on
    the input (every image gets the same boxes and two distinct scores), which makes NMS and COCOeval timings
    meaningless. Setting each BatchNorm's running statistics from a few real images restores input-dependent
    features, boxes and scores: the work per image of a trained model, not its accuracy. ``float32``: the
    Ultralytics exporter (``nms=False`` gives the end-to-end [1, 300, 6] head, default the raw one); ``qcdq``:
    the project's exporter on a W4A16 fake-quantized copy, the QAT variants' artifact.
    """
    from ultralytics import YOLO

    target = root / f"{case.model}-{case.fmt}-{case.imgsz}-{case.weights}-bncal.onnx"
    root.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        return target
    import torch

    torch.manual_seed(0)  # the same random weights on every machine and in both weight formats
    yolo = YOLO(f"{case.model}.yaml")
    calibrate_batchnorm(yolo.model, images_dir, case.imgsz)
    if case.weights == "qcdq":
        from bench_onnx_size_latency import SCHEME, save_checkpoint

        from auto_quantize_model.export import export_onnx
        from auto_quantize_model.quant.yolov10 import quantize_model

        yolo.model.names = {i: f"class{i}" for i in range(NC)}
        quantize_model(yolo.model, SCHEME)
        checkpoint = save_checkpoint(yolo.model, root / f"{target.stem}.pt", f"{case.model}.yaml", case.imgsz)
        export_onnx(checkpoint, target, imgsz=case.imgsz, output_format=case.fmt)
    else:  # the exporter writes <model>.onnx into the working directory; move it here
        extra = {"nms": False} if case.fmt == "e2e" else {}
        os.replace(yolo.export(format="onnx", imgsz=case.imgsz, simplify=False, batch=1, **extra), target)
    return target


def calibrate_batchnorm(model: torch.nn.Module, images_dir: Path, imgsz: int, count: int = 8) -> None:
    """BatchNorm statistics of the first ``count`` letterboxed images, by the PTQ stage's BN re-estimation."""
    import torch

    from auto_quantize_model.onnx_io.preprocess import letterbox
    from auto_quantize_model.ptq import recalibrate_batchnorm

    files = sorted(images_dir.glob("*.jpg"), key=lambda f: int(f.stem))[:count]
    batch = torch.from_numpy(np.stack([letterbox(cv2.imread(str(f)), (imgsz, imgsz), mode="val")[0] for f in files]))
    recalibrate_batchnorm(model, [batch], num_batches=1)


@dataclass
class Inputs:
    """Everything one case's measurements share."""

    case: Case
    model: Path
    ann_file: Path
    images_dir: Path
    data_yaml: Path
    out: Path
    conf: float
    coco_backend: str


def run_ours(inp: Inputs, backend: str | None = None, name: str = "ours") -> tuple[float, dict]:
    """Wall time of one whole ``evaluate_onnx_coco`` call, and its metrics."""
    start = time.perf_counter()
    result = evaluate_onnx_coco(
        inp.model,
        inp.ann_file,
        inp.images_dir,
        inp.out / name,
        imgsz=inp.case.imgsz,
        conf=inp.conf,
        max_dets=300,
        providers=("CPUExecutionProvider",),
        session_settings=EVALUATOR_SETTINGS,
        coco_backend=backend or inp.coco_backend,
    )
    return time.perf_counter() - start, result.metrics


def run_ultralytics(inp: Inputs, save_json: bool = False) -> tuple[float, object]:
    """Wall time of one whole ``YOLO(onnx).val()`` call (same conf and max_det, batch 1, no plots), and its metrics."""
    from ultralytics import YOLO

    start = time.perf_counter()
    metrics = YOLO(str(inp.model), task="detect").val(
        data=str(inp.data_yaml),
        imgsz=inp.case.imgsz,
        batch=1,
        conf=inp.conf,
        iou=0.7,
        max_det=300,
        device="cpu",
        workers=0,
        plots=False,
        save_json=save_json,
        verbose=False,
        project=str(inp.out),
        name="ultra",
        exist_ok=True,
    )
    return time.perf_counter() - start, metrics


def letterboxed_inputs(inp: Inputs) -> list[np.ndarray]:
    """The evaluator's own decoded, letterboxed [1, 3, H, W] inputs, held in memory for the bare loops."""
    records = select_images(load_coco_annotations(inp.ann_file), inp.images_dir, None)
    return [load_one(r, (inp.case.imgsz, inp.case.imgsz)).tensor[None] for r in records]


def bare_default(model: Path, xs: list[np.ndarray]) -> float:
    """Images/s of ORT's default CPU session, one ``run`` after another (Ultralytics' way)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: xs[0]})
    start = time.perf_counter()
    for x in xs:
        session.run(None, {name: x})
    return len(xs) / (time.perf_counter() - start)


def bare_evaluator_settings(model: Path, xs: list[np.ndarray]) -> tuple[float, dict]:
    """Images/s of the evaluator's session settings, ``parallel_runs`` runs in flight; and those settings."""
    session, resolved = open_session(model, ["CPUExecutionProvider"], EVALUATOR_SETTINGS)
    name = session.get_inputs()[0].name
    session.run(None, {name: xs[0]})
    with ThreadPoolExecutor(resolved.parallel_runs) as pool:
        start = time.perf_counter()
        list(pool.map(lambda x: session.run(None, {name: x}), xs))
        elapsed = time.perf_counter() - start
    return len(xs) / elapsed, resolved.describe()


def check_parity(inp: Inputs) -> dict:
    """Untimed: same detections per image on both sides; the configured backend's stats equal pycocotools'."""
    _, ours = run_ours(inp, name="parity-ours")
    _, ref = run_ours(inp, backend="pycocotools", name="parity-ref")
    worst = max((abs(ours[k] - ref[k]) for k in K.COCO_STAT_KEYS if ref[k] is not None), default=0.0)
    _, theirs = run_ultralytics(inp, save_json=True)
    their_rows = json.loads((Path(theirs.save_dir) / "predictions.json").read_text())
    our_rows = json.loads(Path(ours[K.DETECTIONS_JSON]).read_text())
    per_image_ours = Counter(d["image_id"] for d in our_rows)
    per_image_theirs = Counter(int(d["image_id"]) for d in their_rows)
    return {
        "max_abs_stat_diff_vs_pycocotools": worst,
        "detections_ours": len(our_rows),
        "detections_ultralytics": len(their_rows),
        "images_with_different_detection_counts": sum(
            per_image_ours[i] != per_image_theirs[i] for i in set(per_image_ours) | set(per_image_theirs)
        ),
        "detections_per_image_ours": round(len(our_rows) / max(len(per_image_ours), 1), 1),
    }


def spread_summary(values: list[float]) -> dict:
    """Median and [min, max] of one measurement over the rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def bench_case(inp: Inputs, repeats: int) -> dict:
    """Warm up, check parity, then interleave the four measurements ``repeats`` times."""
    parity = check_parity(inp)  # doubles as the warm-up of both sides (imports, label cache, page cache)
    xs = letterboxed_inputs(inp)
    rounds = []
    for r in range(repeats):
        load = os.getloadavg()[0]
        steps = ["ours", "ultralytics", "bare_default", "bare_ours"]
        timing: dict = {"load_avg_1min": load}
        for step in steps if r % 2 == 0 else steps[::-1]:
            if step == "ours":
                seconds, metrics = run_ours(inp)
                timing.update(
                    ours_s=seconds,
                    ours_loop_ips=metrics[K.IMAGES_PER_S],
                    ours_cocoeval_s=metrics[K.TIMING_S]["cocoeval"],
                    ours_session=metrics[K.SESSION],
                )
            elif step == "ultralytics":
                timing["ultralytics_s"] = run_ultralytics(inp)[0]
            elif step == "bare_default":
                timing["bare_default_ips"] = bare_default(inp.model, xs)
            else:
                timing["bare_ours_ips"], _ = bare_evaluator_settings(inp.model, xs)
        rounds.append(timing)
    return summarize(inp, parity, rounds)


def summarize(inp: Inputs, parity: dict, rounds: list[dict]) -> dict:
    """Paired ratios, spreads and verdicts of one case."""
    n = inp.case.images
    ratio = [t["ultralytics_s"] / t["ours_s"] for t in rounds]
    loop_vs_bare = [t["ours_loop_ips"] / t["bare_ours_ips"] for t in rounds]
    med = statistics.median(ratio)
    return {
        "case": inp.case.name,
        "images": n,
        "conf": inp.conf,
        "max_det": 300,
        "coco_backend": inp.coco_backend,
        "threads": {
            "cpus": os.cpu_count(),
            "ours_session": rounds[0]["ours_session"],
            "ultralytics_session": "onnxruntime defaults (intra-op = physical cores, spinning on), one run at a time",
            "torch_threads": _torch_threads(),
            "opencv_threads": cv2.getNumThreads(),
        },
        "load_avg_1min": spread_summary([t["load_avg_1min"] for t in rounds]),
        "ours_images_per_s": spread_summary([n / t["ours_s"] for t in rounds]),
        "ultralytics_images_per_s": spread_summary([n / t["ultralytics_s"] for t in rounds]),
        "ratio_ours_over_ultralytics": spread_summary(ratio),
        "ours_cocoeval_s": spread_summary([t["ours_cocoeval_s"] for t in rounds]),
        "ours_inference_loop_images_per_s": spread_summary([t["ours_loop_ips"] for t in rounds]),
        "bare_default_session_images_per_s": spread_summary([t["bare_default_ips"] for t in rounds]),
        "bare_evaluator_session_images_per_s": spread_summary([t["bare_ours_ips"] for t in rounds]),
        "loop_over_bare_evaluator_session": spread_summary(loop_vs_bare),
        "parity": parity,
        "verdict": {
            "ratio_resolved": len(ratio) >= 3 and (max(ratio) - min(ratio)) / 2 < abs(med - 1.0),
            "meets_1.5x": med >= TARGET_RATIO,
            "loop_within_10pct_of_bare": statistics.median(loop_vs_bare) >= LOOP_TARGET,
            "parity_ok": parity["images_with_different_detection_counts"] == 0
            and parity["max_abs_stat_diff_vs_pycocotools"] <= 1e-4,
        },
    }


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def one_line(result: dict) -> str:
    """The headline of one case."""
    r, o, u = result["ratio_ours_over_ultralytics"], result["ours_images_per_s"], result["ultralytics_images_per_s"]
    lb, la = result["loop_over_bare_evaluator_session"], result["load_avg_1min"]
    return (
        f"[{result['case']}] ours {o['median']:.1f} img/s vs YOLO(onnx).val() {u['median']:.1f} -> "
        f"{r['median']:.2f}x [{r['min']:.2f}, {r['max']:.2f}] over {len(r['values'])} rounds; loop/bare "
        f"{lb['median']:.2f} [{lb['min']:.2f}, {lb['max']:.2f}]; load {la['min']:.2f}-{la['max']:.2f}; "
        f"verdict {result['verdict']}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse options, run every case and format, print and save the results; nonzero exit on an unresolved run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["yolov10n:320"], help="MODEL:IMGSZ[:IMAGES]")
    parser.add_argument("--formats", nargs="+", choices=("e2e", "raw"), default=["e2e"])
    parser.add_argument(
        "--weights",
        nargs="+",
        choices=("float32", "qcdq"),
        default=["float32"],
        help="float32: the FP variant's ONNX; qcdq: a W4A16 QCDQ file, what the QAT and PTQ variants export",
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    # Random-init scores sit mostly below 0.001; conf 0 keeps all 300 end-to-end rows per image, the most decode
    # and COCOeval work an image can cost (raw: every anchor and class is an NMS candidate, up to 30000).
    parser.add_argument("--conf", type=float, default=0.0)
    parser.add_argument("--coco-backend", default=DEFAULT_COCO_BACKEND)
    parser.add_argument("--workdir", type=Path, default=Path("tmp") / "bench-evaluator")
    parser.add_argument("--json-out", type=Path, default=None, help="also write all results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]), flush=True)
    root = args.workdir.resolve()
    results = []
    cases = (parse_case(c, args.images, f, w) for c in args.cases for w in args.weights for f in args.formats)
    for case in cases:
        ann_file, images_dir, data_yaml = make_images(root / f"data-{case.images}", case.images)
        model = export_model(root, case, images_dir)
        inp = Inputs(case, model, ann_file, images_dir, data_yaml, root / case.name, args.conf, args.coco_backend)
        results.append(bench_case(inp, args.repeats))
        print(one_line(results[-1]), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps({"command": sys.argv, "results": results}, indent=2))
    print(json.dumps(results, indent=2))
    if not all(r["verdict"]["parity_ok"] for r in results):
        print("FAILED: the two sides disagree on detections per image or on COCO stats; ratios are not comparable")
        return 4
    unresolved = [r["case"] for r in results if not r["verdict"]["ratio_resolved"]]
    if unresolved:
        print(
            f"FAILED: for {unresolved} the ratio's spread exceeds its distance from 1.0 (or fewer than 3 rounds): the "
            "two evaluators are not told apart; more --repeats, or a quieter machine, or they are equally fast"
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
