"""Decoding ``output0`` into COCO detections: the end-to-end ``[N, K, 6]`` layout and the raw ``[N, 4 + nc, anchors]``
layout with class-aware NMS over the best-scoring candidates (Ultralytics' ``DetectionValidator.postprocess``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.onnx_io.preprocess import (
    LetterboxInfo,
    boxes_to_original,
)

MAX_NMS_CANDIDATES = 30000  # Ultralytics' max_nms: candidates kept (by score) before NMS


NMS_PREFIX_FACTOR = 10  # best_after_nms first tries the best 10 * max_dets candidates


def resolve_output_format(shape: Sequence[int], nc: int, override: str | None, source: str) -> str:
    """Decide ``e2e`` or ``raw`` from the output shape; a class count that does not fit ``nc`` is an error."""
    if len(shape) != 3:
        raise EvaluationInputError(
            f"{source}: output shape {list(shape)} is neither [N, K, 6] (end-to-end) nor [N, 4+nc, anchors] (raw)"
        )
    e2e_like, raw_like = shape[2] == 6, shape[1] == 4 + nc
    if override == "e2e" and not e2e_like:
        raise EvaluationInputError(f"{source}: --output-format e2e needs [N, K, 6] rows, got {list(shape)}")
    if override == "raw" and not raw_like:
        raise EvaluationInputError(
            _class_count_message(source, shape, nc)
            if shape[1] > 4
            else f"{source}: --output-format raw needs [N, 4+{nc}, anchors], got {list(shape)}"
        )
    if override:
        return override
    if e2e_like and raw_like:
        raise EvaluationInputError(
            f"{source}: output shape {list(shape)} fits both layouts; pass --output-format e2e or raw"
        )
    if e2e_like or raw_like:
        return "e2e" if e2e_like else "raw"
    if 4 < shape[1] < shape[2]:  # channels-first with more anchors than rows: a raw head for another class list
        raise EvaluationInputError(_class_count_message(source, shape, nc))
    raise EvaluationInputError(
        f"{source}: output shape {list(shape)} is neither [N, K, 6] (end-to-end) nor [N, 4+{nc}, anchors] (raw)"
    )


def _class_count_message(source: str, shape: Sequence[int], nc: int) -> str:
    """Error text for a raw head whose class count differs from the annotation file."""
    return (
        f"{source}: raw output has {shape[1]} rows = 4 + {shape[1] - 4} classes, but the annotation file has "
        f"{nc} categories; evaluate with the annotation file the model was trained on"
    )


def decode_end_to_end(
    pred: np.ndarray, conf: float, max_dets: int, nc: int, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``[K, 6]`` rows: finite rows with ``score > conf``, best first, at most ``max_dets``.

    Returns boxes (input pixels, xyxy), scores and class indices; a class index outside ``[0, nc)`` is an error.
    """
    rows = pred[np.isfinite(pred).all(1) & (pred[:, 4] > conf)].astype(np.float32, copy=False)
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_dets]  # YOLOv10 rows are already sorted: a no-op there
    classes = rows[:, 5]
    bad = (classes < 0) | (classes >= nc) | (classes != np.round(classes))
    if bad.any():
        raise EvaluationInputError(
            f"{source}: end-to-end output has class index {classes[bad][0]:g} but the annotation file has {nc} "
            "categories; evaluate with the annotation file the model was trained on"
        )
    return rows[:, :4], rows[:, 4], classes.astype(np.int64)


def raw_candidates(pred: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-label candidates of a finite ``[4+nc, anchors]`` head: every (box, class) with score ``> conf``.

    At most ``MAX_NMS_CANDIDATES``, the best by score (Ultralytics' ``max_nms``), in (anchor, class) order as
    Ultralytics' ``torch.where`` lists them. Returns anchor indices, class indices and scores. NumPy's
    ``argpartition`` finds the best 30000 of up to ~700k scores in a few ms, where a full sort takes 10x longer.
    """
    scores = np.ascontiguousarray(pred[4:].T)  # [anchors, nc]
    flat = np.flatnonzero(scores > conf)
    if flat.size > MAX_NMS_CANDIDATES:
        values = scores.ravel()[flat]
        best = np.argpartition(-values, MAX_NMS_CANDIDATES - 1)[:MAX_NMS_CANDIDATES]
        flat = flat[np.sort(best)]
    anchors, classes = np.divmod(flat, scores.shape[1])
    return anchors, classes, scores.ravel()[flat]


def decode_raw(pred: np.ndarray, conf: float, iou: float, max_dets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``[4+nc, anchors]`` like Ultralytics' validator (multi-label, class-aware NMS, best ``max_dets``)."""
    pred = pred.astype(np.float32, copy=False)  # float16 models: decode and NMS in float32, like Ultralytics
    pred = pred[:, np.isfinite(pred).all(0)]  # a NaN box would silently never match; the caller counts dropped rows
    anchors, classes, scores = raw_candidates(pred, conf)
    if anchors.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    cx, cy, w, h = pred[:4, anchors].astype(np.float32, copy=False)
    boxes = np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
    keep = best_after_nms(boxes, scores, classes, iou, max_dets)
    return boxes[keep], scores[keep], classes[keep].astype(np.int64)


def best_after_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_dets: int) -> np.ndarray:
    """Indices of the best ``max_dets`` boxes that class-aware greedy NMS keeps, best first.

    The same boxes as ``batched_nms`` over all candidates, for less work: greedy NMS decides each box from the
    boxes that score higher, so NMS over a prefix of the candidates (every candidate scoring at least some
    threshold) keeps exactly the full run's boxes within that prefix, and once a prefix keeps ``max_dets`` boxes
    they are the full run's best ``max_dets``. The prefix starts at ``NMS_PREFIX_FACTOR * max_dets`` candidates
    and doubles until it keeps enough or holds them all. On 30000 candidates this is ~10x less NMS work.
    """
    import torch
    import torchvision

    def nms(subset: np.ndarray) -> np.ndarray:
        kept = torchvision.ops.batched_nms(
            torch.from_numpy(boxes[subset]), torch.from_numpy(scores[subset]), torch.from_numpy(classes[subset]), iou
        )
        return subset[kept.numpy()]

    size = NMS_PREFIX_FACTOR * max_dets
    while size < scores.size:
        threshold = np.partition(scores, scores.size - size)[scores.size - size]  # the size-th best score
        kept = nms(np.flatnonzero(scores >= threshold))  # ties at the threshold all join: the prefix stays exact
        if kept.size >= max_dets:
            return kept[:max_dets]
        size *= 2
    return nms(np.arange(scores.size))[:max_dets]


def to_coco_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    info: LetterboxInfo,
    image_id: int,
    cat_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """Map input-pixel xyxy boxes to original-image COCO ``[x, y, w, h]`` results with real category ids."""
    xyxy = boxes_to_original(boxes, info)
    xywh = np.concatenate((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]), axis=1).tolist()
    return [
        {"image_id": image_id, "category_id": cat_ids[c], "bbox": b, "score": float(s)}
        for b, s, c in zip(xywh, scores.tolist(), classes.tolist())
    ]
