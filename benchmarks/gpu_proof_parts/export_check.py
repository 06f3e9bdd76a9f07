"""The trained PyTorch model on the device against its exported ONNX file on ONNX Runtime CPU.

The export stage already compares ONNX Runtime with the checkpoint's model on a CPU. This check runs the same
comparison with the reference on the proof's device (float32, TF32 off, so cuDNN's algorithms and not TF32's
10-bit mantissa set the difference), on the export's own validation inputs (:func:`plan_validation`: the dataset's
val images, letterboxed as the evaluator does), with the export's documented tolerance, scaled by
``NON_CPU_TOLERANCE_FACTOR`` when the reference is not on a CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auto_quantize_model.onnx_io.contract import INPUT_NAME, OUTPUT_NAME
from auto_quantize_model.onnx_io.model_prep import load_detection_checkpoint
from auto_quantize_model.onnx_io.settings import ExportSettings
from auto_quantize_model.onnx_io.size import FLOAT16
from auto_quantize_model.onnx_io.validation import (
    NON_CPU_TOLERANCE_FACTOR,
    TOLERANCES,
    compare_outputs,
    plan_validation,
    unfused_reference_model,
)
from auto_quantize_model.runs.run_root import export_metadata_path
from auto_quantize_model.utils.io import read_json

MAX_IMAGES = 8


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """Full float32 convolutions and matmuls on CUDA while the reference runs."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def export_settings_of(onnx_path: Path) -> tuple[ExportSettings, str]:
    """The settings an ONNX file was exported with, and its kind, from the metadata JSON beside it."""
    meta = read_json(export_metadata_path(onnx_path))
    settings = ExportSettings(
        imgsz=tuple(meta["input"]["imgsz"]),
        output_format=meta["output"]["format"],
        opset=meta["onnx"]["opset"],
        dynamic_batch=meta["input"]["dynamic_batch"],
        half=meta["weights_format"] == FLOAT16,
    )
    return settings, meta["kind"]


def compare_on_device(onnx_path: Path, weights: Path, val_images: Path, device: str) -> dict[str, Any]:
    """Reference outputs on ``device`` vs ONNX Runtime CPU; the worst differences, their limits and the verdict."""
    import onnxruntime as ort

    settings, kind = export_settings_of(onnx_path)
    model, ckpt = load_detection_checkpoint(weights)
    plan = plan_validation(val_images, ckpt, weights, MAX_IMAGES, settings)
    reference = unfused_reference_model(model, settings).to(device)
    with torch.no_grad(), tf32_off():
        expected = [
            reference(torch.from_numpy(plan.inputs[s : s + n]).to(device)).float().cpu().numpy()
            for s, n in plan.batches
        ]
    tolerance = TOLERANCES[(kind, settings.half)]
    if torch.device(device).type != "cpu":
        tolerance = tolerance.scaled(NON_CPU_TOLERANCE_FACTOR)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    results = []
    for (start, size), reference_out in zip(plan.batches, expected):
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: plan.inputs[start : start + size]})[0]
        results.append(compare_outputs(reference_out, actual.astype(np.float32), settings.output_format, tolerance))
    return {
        "onnx": onnx_path.name,
        "reference": f"PyTorch float32 on {device} (TF32 off), checkpoint model unfused",
        "images": len(plan.images),
        "passed": all(r["passed"] for r in results),
        "max_abs_diff_boxes": max(r["max_abs_diff_boxes"] for r in results),
        "box_limit": min(r["box_limit"] for r in results),
        "max_abs_diff_scores": max(r["max_abs_diff_scores"] for r in results),
        "score_limit": tolerance.score_abs,
        "unpaired_not_at_cutoff": max(r.get("unpaired_not_at_cutoff", 0) for r in results),
    }
