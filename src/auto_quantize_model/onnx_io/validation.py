"""Export validation: ONNX Runtime vs the PyTorch checkpoint model on real images.

:func:`plan_validation` picks the images (``--val-images`` or the checkpoint dataset's val split)
and letterboxes them with the evaluator's own reader and letterbox, so the export is checked on
exactly the inputs it will be scored on. The reference is the checkpoint's model as saved,
unfused (:func:`unfused_reference_model`), so a fuse step that moved quantized weights shows up.
End-to-end outputs are compared after pairing detections (tied scores reorder the top-k).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto_quantize_model.onnx_io.contract import INPUT_NAME, OUTPUT_NAME
from auto_quantize_model.onnx_io.model_prep import prepare_for_export
from auto_quantize_model.onnx_io.settings import (
    KIND_FP,
    KIND_QCDQ,
    KIND_QDQ,
    ExportInputError,
    ExportSettings,
)


@dataclass(frozen=True)
class Tolerance:
    """Allowed |ONNX Runtime - PyTorch|: boxes relative to the reference box scale, scores absolute.

    ``box_limit = box_rel * max(1, max |reference box coordinate|)`` (pixels): float32 rounding grows with
    the magnitude of the coordinates, so the limit scales with them; scores are probabilities in [0, 1].
    """

    box_rel: float
    score_abs: float
    # Compare only detections scoring at least this much (``None``: every row). Quantized activations make any two
    # float implementations disagree on low-score rows (see the QDQ entry of TOLERANCES); what is deployed is kept.
    # An image with fewer than MIN_COMPARED such detections compares its MIN_COMPARED best instead (an untrained
    # model scores nothing >= 0.25, and a check that compares nothing checks nothing).
    min_score: float | None = None

    def score_floor(self, scores: np.ndarray) -> float:
        """The score from which one image's detections (or anchors) are compared."""
        ranked = np.sort(scores.ravel())[::-1]
        return float(min(self.min_score, ranked[min(MIN_COMPARED, len(ranked)) - 1])) if len(ranked) else 0.0

    def box_limit(self, reference_boxes: np.ndarray) -> float:
        scale = float(np.abs(reference_boxes).max()) if reference_boxes.size else 0.0
        return self.box_rel * max(1.0, scale)

    def scaled(self, factor: float) -> Tolerance:
        return Tolerance(self.box_rel * factor, self.score_abs * factor, self.min_score)


# Measured worst differences (ONNX Runtime 1.31 CPU vs PyTorch 2.14 CPU, tiny-trained yolov10n at 64, see the
# README): float32 boxes 6.1e-5 px on coordinates up to 480 (1.3e-7 relative), scores 8e-8, FP and QCDQ alike;
# --half boxes 0.086 px (1.8e-4 relative), scores 6e-6. The float32 limits sit ~100x above the worst yolov10m
# difference of the integration notes (6.7e-4 px on a 668 px range, 1e-6 relative). They catch a wrong scale, axis,
# head branch or fuse step (a 25% scale error on one 4-bit layer fails, see tests/test_export.py); a single
# flipped weight code of a barely trained model moves outputs less than that and is not what they are for.
TOLERANCES = {
    (KIND_FP, False): Tolerance(box_rel=1e-4, score_abs=1e-4),
    (KIND_QCDQ, False): Tolerance(box_rel=1e-4, score_abs=1e-4),
    (KIND_FP, True): Tolerance(box_rel=5e-3, score_abs=5e-3),  # --half: fp16 weights and compute vs fp32 PyTorch
    # Quantized activations: ONNX Runtime and PyTorch sum a conv in different orders, so values within an ulp of a
    # rounding boundary take the neighbouring code in one of them, and BN folded into the exported weights does the
    # same; the flips add up through ~80 quantized layers. Measured on the demo's ptq-w8a8 (yolov10n, 30 epochs,
    # 160 px, 32 val images): the PyTorch model fused vs unfused differs by up to 12 px on raw boxes and 0.037 on
    # scores, ONNX Runtime vs PyTorch by 14 px / 0.046 -- on low-score rows. Compared are the detections scoring
    # >= 0.25 (the production threshold), at least each image's best 10: there they differ by at most 0.53 px and
    # 0.056 end to end (raw anchors: 2.8 px, 0.058). A DequantizeLinear scale 1.5x off fails (tests/test_w8a8.py).
    (KIND_QDQ, False): Tolerance(box_rel=1e-2, score_abs=1e-1, min_score=0.25),
}
MIN_COMPARED = 10  # detections compared per image at least, when a ``min_score`` tolerance leaves fewer
# Rows below ``min_score`` compared only to reach MIN_COMPARED are the model's least sure boxes: a rounding flip
# moves a flat box distribution more. Measured on the bench (yolov10n, 160 px, seed 2 qat-w8a8-ft): rows scoring
# 0.001 with boxes reaching 100-170 px outside the image differed by 5.8 px on a 4.5 px limit, while every row
# scoring >= 0.25 differed by <= 0.31 px. Those fallback rows get twice the box limit; rows >= min_score keep it.
FALLBACK_BOX_FACTOR = 2.0
# GPU kernels (cuDNN algorithms, TF32 where the provider enables it) round differently from the CPU reference.
NON_CPU_TOLERANCE_FACTOR = 10.0


# The QDQ tolerance already holds the code flips of rounding-order differences; 10x of it (score 1.0) would
# accept any score, so off the CPU only its box tolerance widens (unmeasured on a GPU so far).
NON_CPU_TOLERANCES = {(KIND_QDQ, False): Tolerance(box_rel=2e-2, score_abs=1e-1, min_score=0.25)}


def tolerance_for(kind: str, half: bool, provider: str) -> Tolerance:
    """The documented tolerance of one export kind on one onnxruntime provider."""
    base = TOLERANCES[(kind, half)]
    if provider == "CPUExecutionProvider":
        return base
    return NON_CPU_TOLERANCES.get((kind, half)) or base.scaled(NON_CPU_TOLERANCE_FACTOR)


def resolve_val_images(
    val_images: str | os.PathLike | None, ckpt: dict[str, Any], weights: Path, max_images: int
) -> tuple[list[Path], str]:
    """Up to ``max_images`` image files (sorted by name): ``val_images``, else the checkpoint dataset's val folder."""
    from ultralytics.data.utils import IMG_FORMATS

    if val_images is not None:
        folder, source = Path(val_images), "--val-images"
        if not folder.is_dir():
            raise ExportInputError(f"{folder}: --val-images must be a folder of images")
    else:
        folder, source = _dataset_val_folder(ckpt, weights), "dataset val split of the checkpoint"
    images = sorted(p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMG_FORMATS)[:max_images]
    if not images:
        raise ExportInputError(f"{folder}: no images to validate with; pass --val-images DIR with .jpg/.png files")
    return images, f"{source}: {folder}"


def _dataset_val_folder(ckpt: dict[str, Any], weights: Path) -> Path:
    """The ``val`` image folder of the dataset YAML recorded in the checkpoint's ``train_args``."""
    import yaml

    data = (ckpt.get("train_args") or {}).get("data")
    fix = "pass --val-images DIR"
    if not data or not Path(data).is_file():
        raise ExportInputError(f"{weights}: its training dataset YAML {data!r} is not available; {fix}")
    spec = yaml.safe_load(Path(data).read_text(encoding="utf-8")) or {}
    root = Path(spec.get("path") or Path(data).parent)
    root = root if root.is_absolute() else Path(data).parent / root
    val = spec.get("val")
    folder = root / val if isinstance(val, str) else None
    if folder is None or not folder.is_dir():
        raise ExportInputError(f"{data}: 'val' ({val!r}) is not an image folder; {fix}")
    return folder


def _load_inputs(images: list[Path], imgsz: tuple[int, int]) -> np.ndarray:
    """Letterboxed NCHW float32 batch, exactly as the evaluator prepares images."""
    from auto_quantize_model.onnx_io.preprocess import LETTERBOX_MODE, letterbox, read_image

    tensors = []
    for path in images:
        image = read_image(path)
        if image is None:
            raise ExportInputError(f"{path}: not a readable image; remove it from the validation folder")
        tensors.append(letterbox(image, imgsz, mode=LETTERBOX_MODE)[0])
    return np.stack(tensors)


def _providers_to_check() -> list[list[str]]:
    """CPU always; CUDA (with CPU fallback) when this onnxruntime build has it."""
    import onnxruntime as ort

    runs = [["CPUExecutionProvider"]]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runs.append(["CUDAExecutionProvider", "CPUExecutionProvider"])
    return runs


@dataclass(frozen=True)
class ValidationPlan:
    """Images, their letterboxed inputs and the batches (``(start, size)``) to compare."""

    images: tuple[Path, ...]
    source: str
    inputs: np.ndarray
    batches: tuple[tuple[int, int], ...]


def plan_validation(
    val_images: str | os.PathLike | None, ckpt: dict[str, Any], weights: Path, max_images: int, settings: ExportSettings
) -> ValidationPlan:
    """Batch 1 over every image; with a dynamic batch also batches of up to 4 images."""
    images, source = resolve_val_images(val_images, ckpt, weights, max_images)
    sizes = [1, min(4, len(images))] if settings.dynamic_batch and len(images) > 1 else [1]
    batches = tuple((start, size) for size in dict.fromkeys(sizes) for start in range(0, len(images) - size + 1, size))
    return ValidationPlan(tuple(images), source, _load_inputs(images, settings.imgsz), batches)


def unfused_reference_model(model: Any, settings: ExportSettings) -> Any:
    """A copy of the checkpoint's model with the exporter's head settings but no ``fuse``: what was trained.

    Comparing ONNX Runtime with the fused model could not see a fuse that moves quantized weights (BN folded into
    4-bit weights re-rounds some codes); the unfused checkpoint model can.
    """
    import copy

    return prepare_for_export(
        copy.deepcopy(model), settings.imgsz, settings.end2end, settings.dynamic_batch, fuse=False
    )


def reference_outputs(model: Any, plan: ValidationPlan) -> list[np.ndarray]:
    """PyTorch float32 CPU outputs of the prepared model, one array per planned batch."""
    import torch

    with torch.no_grad():
        return [model(torch.from_numpy(plan.inputs[s : s + n])).numpy().copy() for s, n in plan.batches]


def validate_export(
    onnx_path: Path, reference: list[np.ndarray], plan: ValidationPlan, settings: ExportSettings, kind: str
) -> dict[str, Any]:
    """Compare ONNX Runtime (CPU, and CUDA when present) with the PyTorch reference; return the report."""
    import onnxruntime as ort

    runs = []
    for providers in _providers_to_check():
        session = ort.InferenceSession(str(onnx_path), providers=providers)
        used = session.get_providers()
        tolerance = tolerance_for(kind, settings.half, used[0])
        for (start, size), expected in zip(plan.batches, reference):
            actual = session.run([OUTPUT_NAME], {INPUT_NAME: plan.inputs[start : start + size]})[0]
            result = compare_outputs(expected, actual.astype(np.float32), settings.output_format, tolerance)
            runs.append(
                {
                    "providers_requested": providers,
                    "providers_used": used,
                    "batch": size,
                    "images": [p.name for p in plan.images[start : start + size]],
                    **result,
                }
            )
    return _summarize_runs(runs, kind, settings, plan.source)


def _summarize_runs(
    runs: list[dict[str, Any]], kind: str, settings: ExportSettings, image_source: str
) -> dict[str, Any]:
    """Collapse per-batch results to the worst difference per provider and batch size."""
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        key = (run["providers_used"][0], run["batch"])
        group = groups.setdefault(key, {**run, "images": [], "passed": True, "batches": 0})
        group["images"] += run["images"]
        group["batches"] += 1
        group["passed"] = group["passed"] and run["passed"]
        for field in ("max_abs_diff_boxes", "max_abs_diff_scores", "unpaired_rows", "unpaired_not_at_cutoff"):
            if field in run:
                group[field] = max(group.get(field, 0), run[field])
        group["box_limit"] = min(group["box_limit"], run["box_limit"])
    checks = list(groups.values())
    return {
        "passed": all(check["passed"] for check in checks),
        "reference": "PyTorch float32 on CPU: the checkpoint's model as saved (unfused), export-mode head",
        "output_format": settings.output_format,
        "kind": kind,
        "half": settings.half,
        "image_source": image_source,
        "tolerance": asdict(TOLERANCES[(kind, settings.half)]),
        "non_cpu_tolerance_factor": NON_CPU_TOLERANCE_FACTOR,
        "checks": checks,
    }


def failure_message(name: str, report: dict[str, Any]) -> str:
    failed = [c for c in report["checks"] if not c["passed"]]
    details = "; ".join(
        f"{c['providers_used'][0]} batch {c['batch']}: "
        f"boxes {c['max_abs_diff_boxes']:.3g} (limit {c['box_limit']:.3g}), "
        f"scores {c['max_abs_diff_scores']:.3g} (limit {c['score_limit']:.3g})"
        + (
            f", {c['unpaired_not_at_cutoff']} unpaired detections above the top-k cutoff"
            if c.get("unpaired_not_at_cutoff")
            else ""
        )
        for c in failed
    )
    return f"{name}: ONNX Runtime differs from PyTorch beyond the documented tolerance ({details}); nothing was written"


def compare_outputs(
    expected: np.ndarray, actual: np.ndarray, output_format: str, tolerance: Tolerance
) -> dict[str, Any]:
    """Compare one batch of ``output0``; raw elementwise, end-to-end after pairing detections."""
    if expected.shape != actual.shape:
        return {
            "passed": False,
            "error": f"shape {list(actual.shape)} != PyTorch {list(expected.shape)}",
            "max_abs_diff_boxes": math.inf,
            "max_abs_diff_scores": math.inf,
            "box_limit": 0.0,
            "score_limit": tolerance.score_abs,
        }
    if output_format == "raw":
        return _compare_raw(expected, actual, tolerance)
    compare = _compare_end_to_end if tolerance.min_score is None else _compare_confident
    results = [compare(e, a, tolerance) for e, a in zip(expected, actual)]
    merged = {
        key: max(r[key] for r in results) for key in results[0] if key not in ("passed", "box_limit", "score_limit")
    }
    merged.update(
        passed=all(r["passed"] for r in results),
        box_limit=min(r["box_limit"] for r in results),
        score_limit=tolerance.score_abs,
    )
    return merged


def _compare_confident(expected: np.ndarray, actual: np.ndarray, tolerance: Tolerance) -> dict[str, Any]:
    """One image's end-to-end rows: every detection scoring ``>= min_score`` in one output pairs with a detection of
    the other scoring ``>= min_score - score_abs`` (a score drifting across the threshold within tolerance)."""
    box_limit = tolerance.box_limit(expected[:, :4])
    low = tolerance.score_floor(expected[:, 4])
    slack = low - tolerance.score_abs
    unpaired, box_diff, score_diff, paired = 0, 0.0, 0.0, 0
    for sure, other in ((expected, actual), (actual, expected)):
        confident, candidates = sure[sure[:, 4] >= low], other[other[:, 4] >= slack]
        pairs = _pair_in_bands(confident, candidates, box_limit, tolerance)
        unpaired += len(confident) - len(pairs)
        paired = max(paired, len(pairs))
        for i, j in pairs:
            box_diff = max(box_diff, float(np.abs(confident[i, :4] - candidates[j, :4]).max()))
            score_diff = max(score_diff, float(abs(confident[i, 4] - candidates[j, 4])))
    return {
        "passed": unpaired == 0 and bool(np.isfinite(actual).all()),
        "max_abs_diff_boxes": box_diff,
        "max_abs_diff_scores": score_diff,
        "box_limit": box_limit,
        "score_limit": tolerance.score_abs,
        "min_score": low,
        "paired_rows": paired,
        "unpaired_rows": unpaired,
        "unpaired_not_at_cutoff": unpaired,
    }


def _pair_in_bands(
    confident: np.ndarray, candidates: np.ndarray, box_limit: float, tolerance: Tolerance
) -> list[tuple[int, int]]:
    """:func:`pair_detections` of the rows scoring ``>= min_score`` at ``box_limit``, then of the rows below it
    (compared only to reach MIN_COMPARED) at FALLBACK_BOX_FACTOR times it, with the candidates left over."""
    floor = tolerance.min_score if tolerance.min_score is not None else -np.inf
    sure = confident[:, 4] >= floor
    pairs: list[tuple[int, int]] = []
    free = np.arange(len(candidates))
    for band, limit in ((sure, box_limit), (~sure, box_limit * FALLBACK_BOX_FACTOR)):
        rows = np.flatnonzero(band)
        found = [
            (int(rows[i]), int(free[j]))
            for i, j in pair_detections(confident[rows], candidates[free], limit, tolerance.score_abs)
        ]
        pairs += found
        free = np.setdiff1d(free, [j for _, j in found])
    return pairs


def _compare_raw(expected: np.ndarray, actual: np.ndarray, tolerance: Tolerance) -> dict[str, Any]:
    """``[N, 4 + nc, anchors]``: the anchor order is fixed, so compare element by element (with ``min_score``: the
    anchors scoring at least that in either output)."""
    keep = np.ones(expected[:, 4].shape, dtype=bool)
    if tolerance.min_score is not None:
        best_e, best_a = expected[:, 4:].max(1), actual[:, 4:].max(1)  # [N, anchors]
        floors = np.array([[tolerance.score_floor(image)] for image in best_e])
        keep = (best_e >= floors) | (best_a >= floors)
    difference = np.abs(expected - actual) * keep[:, None, :]
    box_diff, score_diff = float(difference[:, :4].max()), float(difference[:, 4:].max())
    box_limit = tolerance.box_limit(expected[:, :4])
    passed = box_diff <= box_limit and score_diff <= tolerance.score_abs and bool(np.isfinite(actual).all())
    return {
        "passed": passed,
        "max_abs_diff_boxes": box_diff,
        "max_abs_diff_scores": score_diff,
        "box_limit": box_limit,
        "score_limit": tolerance.score_abs,
    }


def pair_detections(
    expected: np.ndarray, actual: np.ndarray, box_limit: float, score_limit: float
) -> list[tuple[int, int]]:
    """Pair end-to-end rows of one image that are the same detection: same class, boxes within ``box_limit``
    and scores within ``score_limit``; closest pairs first (greedy, deterministic), each row at most once.

    Row order cannot be compared directly: top-k orders tied scores arbitrarily. Pairing by IoU alone is
    not enough either: an under-trained head gives neighbouring anchors near-equal scores and boxes one
    stride apart, so a row whose partner left the list would pair with a neighbour and report a
    one-stride "difference". A row outside the limits stays unpaired and is judged by the cutoff rule.
    """
    box_diff = np.abs(expected[:, None, :4] - actual[None, :, :4]).max(-1)
    score_diff = np.abs(expected[:, None, 4] - actual[None, :, 4])
    ok = (expected[:, None, 5] == actual[None, :, 5]) & (box_diff <= box_limit) & (score_diff <= score_limit)
    cost = np.where(ok, box_diff / max(box_limit, 1e-12) + score_diff / max(score_limit, 1e-12), np.inf)
    pairs, used_e, used_a = [], set(), set()
    order = np.argsort(cost, axis=None, kind="stable")
    for i, j in zip(*np.unravel_index(order[np.isfinite(cost.ravel()[order])], cost.shape)):
        if i not in used_e and j not in used_a:
            pairs.append((int(i), int(j)))
            used_e.add(i)
            used_a.add(j)
    return pairs


def _compare_end_to_end(expected: np.ndarray, actual: np.ndarray, tolerance: Tolerance) -> dict[str, Any]:
    """One image's ``[K, 6]`` rows: pair equal detections, then require every unpaired row to sit at the cutoff.

    A row may stay unpaired only at the top-k cutoff (score within ``score_abs`` of the lowest kept
    score): there a last-bit score difference legitimately swaps which near-tied candidate makes the
    list. Any other row without a partner is a detection that moved, changed class or vanished.
    """
    box_limit = tolerance.box_limit(expected[:, :4])
    pairs = pair_detections(expected, actual, box_limit, tolerance.score_abs)
    e_idx = np.array([i for i, _ in pairs], dtype=int)
    a_idx = np.array([j for _, j in pairs], dtype=int)
    box_diff = float(np.abs(expected[e_idx, :4] - actual[a_idx, :4]).max()) if pairs else 0.0
    score_diff = float(np.abs(expected[e_idx, 4] - actual[a_idx, 4]).max()) if pairs else 0.0
    not_at_cutoff = _unpaired_above_cutoff(expected, e_idx, tolerance) + _unpaired_above_cutoff(
        actual, a_idx, tolerance
    )
    passed = not_at_cutoff == 0 and bool(np.isfinite(actual).all())
    return {
        "passed": passed,
        "max_abs_diff_boxes": box_diff,
        "max_abs_diff_scores": score_diff,
        "box_limit": box_limit,
        "score_limit": tolerance.score_abs,
        "paired_rows": len(pairs),
        "unpaired_rows": len(expected) + len(actual) - 2 * len(pairs),
        "unpaired_not_at_cutoff": not_at_cutoff,
    }


def _unpaired_above_cutoff(rows: np.ndarray, paired: np.ndarray, tolerance: Tolerance) -> int:
    """Unpaired rows whose score is clearly above the lowest kept score (not explained by top-k churn)."""
    unpaired = np.setdiff1d(np.arange(len(rows)), paired)
    cutoff = float(rows[:, 4].min()) if len(rows) else 0.0
    return int((rows[unpaired, 4] > cutoff + tolerance.score_abs).sum())
