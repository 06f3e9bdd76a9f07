"""One ONNX COCO evaluator for every model of the project (FP16 baseline and QAT QCDQ alike).

Pipeline per image: decode with OpenCV (a missing or undecodable file is a counted skip and a warning in
``metrics.json``), letterbox to the model's fixed square input the way ``YOLO(onnx).val()`` does
(:mod:`auto_quantize_model.preprocess`, ``mode="val"``; in-training validation differs: it runs
rectangular batches), run onnxruntime, decode ``output0``, map boxes back to the original image, then score
with COCOeval (bbox) on exactly the evaluated images.

Speed: images are decoded in a thread pool while the model runs; on CPU, ``parallel_runs`` batches run at
once, each on its own intra-op threads (image-level parallelism scales better than one run's intra-op
threads on small convs); COCOeval runs in faster-coco-eval's C++ unless ``coco_backend="pycocotools"``
(the reference; both give the same 12 stats, tested). ``fold_weights`` sets onnxruntime's
``session.disable_quant_qdq`` so constant DequantizeLinear weights of a QCDQ model are folded once at load
instead of on every run (identical outputs, tested).

``output0`` layouts, told apart by shape (``output_format`` overrides):

``e2e``  ``[N, K, 6]`` rows ``x1, y1, x2, y2, score, class`` in input pixels (YOLOv10 ``nms=False``).
         Rows with ``score > conf`` are kept, best first, at most ``max_dets`` -- what Ultralytics'
         ``non_max_suppression(end2end=True)`` does.
``raw``  ``[N, 4 + nc, anchors]``: ``cx, cy, w, h`` in input pixels, then per-class sigmoid scores.
         Decoded like ``DetectionValidator.postprocess``: ``multi_label=True`` (every class score
         ``> conf`` of a box is a candidate), at most 30000 candidates by score, class-aware
         ``torchvision.ops.batched_nms`` at ``iou``, then the best ``max_dets`` (NMS runs over the
         best-scoring candidates only, as many as it takes to keep ``max_dets``: the same boxes).

Class index ``i`` is the ``i``-th category of the annotation file sorted by id.

``metrics.json`` (schema_version 2; every key is a constant in :mod:`auto_quantize_model.metrics_keys`):

* the 12 ``COCOeval.stats`` as ``mAP50_95 mAP50 mAP75 mAP_small mAP_medium mAP_large AR1 AR10 AR100
  AR_small AR_medium AR_large`` (``null`` where that range holds no ground truth; COCO maxDets 1/10/100),
  and ``coco_backend``, the library that computed them;
* ``num_images`` (evaluated), ``image_ids`` (exactly COCOeval's ``params.imgIds``, ascending),
  ``num_images_requested``, ``num_images_skipped`` and ``skipped`` ([{image_id, file, reason}]),
  ``num_detections``, ``num_nonfinite_predictions`` (NaN/inf rows dropped), ``warnings`` (one line per
  skipped image or dropped prediction group);
* ``per_class`` {name: {category_id, AP50_95, AP50, num_gt}} from ``eval['precision']`` (area all, 100 dets);
* ``at_conf_prod`` {conf, iou, precision, recall, f1, tp, fp, fn, num_gt, method}: see :func:`operating_point`;
* ``latency_ms`` {per_batch, per_image}: {mean, p50, p95, p99, count} of ``session.run`` alone under the
  ``session`` settings (after one untimed warm-up run; per image = batch time / real images in the batch;
  with ``parallel_runs > 1`` runs overlap, so this is latency under that load), ``images_per_s`` over the
  whole loop (decode, letterbox, inference, decoding), ``timing_s`` {setup, inference_loop, cocoeval};
* ``session`` {intra_op_threads, parallel_runs, graph_optimization, fold_weights, allow_spinning};
* provenance: ``onnx`` {path, sha256}, ``annotations`` {path, sha256}, ``images_dir``, ``providers_requested``,
  ``providers`` (``session.get_providers()``), ``output_format``, ``nms``, ``imgsz`` (+ ``imgsz_source``),
  ``batch`` (+ ``batch_source``), ``letterbox``, ``thresholds`` {conf, iou, max_dets, conf_prod}, ``cocoeval``,
  ``versions``, ``detections_json``.

``detections.json`` is the COCO results list (image_id, real category_id, bbox ``[x, y, w, h]`` in original
pixels, score) at full float precision: re-scoring it with COCOeval reproduces ``metrics.json`` exactly.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from auto_quantize_model import metrics_keys as K
from auto_quantize_model.env_check import require_single_onnxruntime
from auto_quantize_model.io_utils import sha256_file, write_json_atomic, write_text_atomic
from auto_quantize_model.onnx_contract import OUTPUT_FORMATS
from auto_quantize_model.preprocess import LetterboxInfo, as_hw, boxes_to_original, letterbox

LOGGER = logging.getLogger(__name__)

COCO_STAT_KEYS = K.COCO_STAT_KEYS
MAX_NMS_CANDIDATES = 30000  # Ultralytics' max_nms: candidates kept (by score) before NMS
NMS_PREFIX_FACTOR = 10  # best_after_nms first tries the best 10 * max_dets candidates
# The validator dataset's resize + square LetterBox: what YOLO(onnx).val() feeds a fixed-size model. In-training
# validation differs (rect batches), so its numbers are not this evaluator's.
LETTERBOX_MODE = "val"
METRICS_SCHEMA_VERSION = 2
# faster-coco-eval is the default: the same 12 stats as pycocotools (tested to 1e-4 on real detections) from a
# C++ evaluate/accumulate that is many times faster; pycocotools stays the reference, one flag away.
COCO_BACKENDS = ("faster-coco-eval", "pycocotools")
DEFAULT_COCO_BACKEND = "faster-coco-eval"
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
MAX_AUTO_PARALLEL_RUNS = 4  # each run holds its own activations; more buys little and costs memory


class EvaluationInputError(ValueError):
    """Bad input to the evaluator (files, model layout, class list); the message names the file and the fix."""


@dataclass(frozen=True)
class EvalResult:
    """Outcome of :func:`evaluate_onnx_coco`: the ``metrics.json`` content and where the artifacts are."""

    metrics: dict[str, Any]
    out_dir: Path
    metrics_path: Path
    detections_path: Path


@dataclass(frozen=True)
class SessionSettings:
    """onnxruntime options of the evaluator; 0 means "choose for this machine" (see :func:`resolve_session_settings`).

    ``intra_op_threads``: threads inside one ``session.run``. ``parallel_runs``: batches in flight at once (one
    session, concurrent ``run`` calls, which onnxruntime allows). ``graph_optimization``: one of
    ``GRAPH_OPTIMIZATIONS``. ``fold_weights``: ``session.disable_quant_qdq=1``, so DequantizeLinear on constant
    weights is folded once at load (QCDQ models run at float speed; outputs identical).
    """

    intra_op_threads: int = 0
    parallel_runs: int = 0
    graph_optimization: str = "all"
    fold_weights: bool = False

    def describe(self) -> dict[str, Any]:
        """The ``session`` entry of ``metrics.json``."""
        return {
            "intra_op_threads": self.intra_op_threads,
            "parallel_runs": self.parallel_runs,
            "graph_optimization": self.graph_optimization,
            "fold_weights": self.fold_weights,
            "allow_spinning": False,
        }


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image to evaluate."""

    image_id: int
    path: Path
    width: int | None
    height: int | None


@dataclass(frozen=True)
class ModelIO:
    """What the ONNX model expects and returns."""

    input_name: str
    output_name: str
    batch: int
    batch_fixed: bool
    input_hw: tuple[int, int]
    input_hw_fixed: bool
    input_dtype: type


@dataclass
class _Loaded:
    """A decoded, letterboxed image, or the reason it was skipped."""

    record: ImageRecord
    tensor: np.ndarray | None = None
    info: LetterboxInfo | None = None
    skip_reason: str | None = None


@dataclass
class _RunState:
    """Everything collected while running the model over the images."""

    detections: list[dict[str, Any]] = field(default_factory=list)
    evaluated_ids: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)
    image_ms: list[float] = field(default_factory=list)
    output_format: str | None = None
    nonfinite: int = 0  # prediction rows (e2e) or anchors (raw) holding NaN/inf, dropped and reported


# --- annotations ---------------------------------------------------------------------------------


def _quiet_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a pycocotools function, sending its progress prints to the debug log instead of stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    if buffer.getvalue().strip():
        LOGGER.debug("%s", buffer.getvalue().rstrip())
    return result


def load_coco_annotations(ann_file: Path) -> Any:
    """Load a COCO annotation file into a ``pycocotools.coco.COCO``, with clear errors for bad files."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise EvaluationInputError(f"{ann_file}: annotation file not found; pass --ann-file with a COCO instances json")
    try:
        coco = _quiet_call(COCO, str(ann_file))
    except Exception as error:  # pycocotools raises bare asserts/KeyErrors on malformed files
        raise EvaluationInputError(
            f"{ann_file}: not a readable COCO annotation file ({error!r}); repair or regenerate it"
        ) from error
    if not coco.dataset.get("categories"):
        raise EvaluationInputError(f"{ann_file}: no 'categories'; the class list is needed to map model class indices")
    return coco


def category_table(coco: Any) -> tuple[list[int], list[str]]:
    """Return category ids sorted ascending and their names: model class ``i`` is the ``i``-th entry."""
    cats = sorted(coco.dataset["categories"], key=lambda c: c["id"])
    return [int(c["id"]) for c in cats], [str(c.get("name", c["id"])) for c in cats]


def select_images(coco: Any, images_dir: Path, max_images: int | None) -> list[ImageRecord]:
    """The images to evaluate: all image ids sorted ascending, the first ``max_images`` of them when given."""
    ids = sorted(coco.getImgIds())
    if max_images is not None:
        ids = ids[:max_images]
    if not ids:
        raise EvaluationInputError("the annotation file lists no images; nothing to evaluate (check --ann-file)")
    records = []
    for image_id in ids:
        entry = coco.imgs[image_id]
        records.append(
            ImageRecord(int(image_id), Path(images_dir) / entry["file_name"], entry.get("width"), entry.get("height"))
        )
    return records


# --- onnxruntime session -------------------------------------------------------------------------


def _usable_providers(requested: Sequence[str]) -> list[str]:
    """Keep the requested providers this onnxruntime build has; log each missing one and the fallback."""
    import onnxruntime as ort

    unknown = [p for p in requested if p not in ort.get_all_providers()]
    if unknown:
        raise EvaluationInputError(f"unknown onnxruntime provider(s) {unknown}; valid names: {ort.get_all_providers()}")
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available] or ["CPUExecutionProvider"]
    for provider in requested:
        if provider not in available:
            LOGGER.warning(
                "%s is not available in this onnxruntime build (available: %s); falling back to %s",
                provider,
                available,
                chosen,
            )
    return chosen


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_session_settings(requested: SessionSettings, providers: Sequence[str]) -> SessionSettings:
    """Fill the 0 ("auto") fields for the chosen providers.

    CPU: ``min(cpus, MAX_AUTO_PARALLEL_RUNS)`` runs in flight, the CPUs shared between them (on 2 cores: 2 runs of
    1 thread, measured 1.3-2x the images/s of one 2-thread run on yolov10n 320, and far steadier under other
    load). A GPU provider: one run at a time with onnxruntime's default threads.
    """
    if requested.graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise EvaluationInputError(
            f"graph_optimization={requested.graph_optimization!r} must be one of {GRAPH_OPTIMIZATIONS}"
        )
    if requested.intra_op_threads < 0 or requested.parallel_runs < 0:
        raise EvaluationInputError(
            f"intra_op_threads={requested.intra_op_threads} and parallel_runs={requested.parallel_runs} "
            "must be >= 0 (0 = auto)"
        )
    cpus = available_cpus()
    on_gpu = providers[0] != "CPUExecutionProvider"
    parallel = requested.parallel_runs or (1 if on_gpu else min(cpus, MAX_AUTO_PARALLEL_RUNS))
    threads = requested.intra_op_threads or max(1, cpus // parallel)
    return SessionSettings(threads, parallel, requested.graph_optimization, requested.fold_weights)


def session_options(settings: SessionSettings) -> Any:
    """An ``onnxruntime.SessionOptions`` for resolved ``settings``."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[settings.graph_optimization]
    options.intra_op_num_threads = settings.intra_op_threads
    # Busy-waiting CPU worker threads would steal the cores the image-loading threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if settings.fold_weights:
        # onnxruntime keeps DequantizeLinear out of constant folding (for its QDQ fusions) unless told otherwise.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def open_session(
    onnx_path: Path, providers: Sequence[str], settings: SessionSettings | None = None
) -> tuple[Any, SessionSettings]:
    """Create an onnxruntime session on the first usable providers (a provider that fails falls back to CPU).

    Returns the session and the resolved settings it was created with.
    """
    require_single_onnxruntime()  # both ONNX Runtime wheels installed: the providers would be whichever came last
    import onnxruntime as ort

    chosen = _usable_providers(providers)
    resolved = resolve_session_settings(settings or SessionSettings(), chosen)
    try:
        session = ort.InferenceSession(str(onnx_path), session_options(resolved), providers=chosen)
    except Exception as error:
        if chosen == ["CPUExecutionProvider"]:
            raise EvaluationInputError(
                f"{onnx_path}: onnxruntime cannot load the model ({error}); re-export it"
            ) from error
        LOGGER.warning("onnxruntime could not start %s (%s); falling back to CPUExecutionProvider", chosen, error)
        return open_session(onnx_path, ["CPUExecutionProvider"], settings)
    dropped = [p for p in chosen if p not in session.get_providers()]
    if dropped:
        LOGGER.warning("onnxruntime dropped %s at session start; running on %s", dropped, session.get_providers())
    return session, resolved


def resolve_model_io(session: Any, onnx_path: Path, imgsz: int | tuple[int, int], batch: int) -> ModelIO:
    """Read input/output names, batch and spatial size: fixed model dimensions win over ``imgsz``/``batch``."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise EvaluationInputError(
            f"{onnx_path}: input {inputs[0].name} has shape {shape}; expected [N, 3, H, W] images"
        )
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    if inputs[0].type not in dtypes:
        raise EvaluationInputError(f"{onnx_path}: input type {inputs[0].type} is not float32/float16 images")
    names = [o.name for o in outputs]
    output_name = "output0" if "output0" in names else names[0]
    batch_fixed = isinstance(shape[0], int) and shape[0] > 0
    hw_fixed = all(isinstance(d, int) and d > 0 for d in shape[2:])
    if batch_fixed and shape[0] != batch:
        LOGGER.info("model input batch is fixed at %d; using it instead of batch=%d", shape[0], batch)
    input_hw = (shape[2], shape[3]) if hw_fixed else as_hw(imgsz)
    if hw_fixed and input_hw != as_hw(imgsz):
        LOGGER.info("model input size is fixed at %s; imgsz=%s is ignored", input_hw, imgsz)
    return ModelIO(
        inputs[0].name,
        output_name,
        shape[0] if batch_fixed else batch,
        batch_fixed,
        input_hw,
        hw_fixed,
        dtypes[inputs[0].type],
    )


# --- output decoding -----------------------------------------------------------------------------


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


# --- data loading --------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file as 3-channel BGR uint8 (grayscale files are expanded), ``None`` when unreadable."""
    try:
        data = np.fromfile(str(path), np.uint8)  # like Ultralytics' imread: also works for non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def load_one(record: ImageRecord, input_hw: tuple[int, int], dtype: type = np.float32) -> _Loaded:
    """Read and letterbox one image; a missing, corrupt or wrongly sized file becomes a skip with its reason."""
    if not record.path.is_file():
        return _Loaded(record, skip_reason="missing file")
    image = read_image(record.path)
    if image is None:
        return _Loaded(record, skip_reason="cannot decode image (corrupt or unsupported format)")
    h, w = image.shape[:2]
    if record.width and record.height and (w, h) != (record.width, record.height):
        # Ground-truth boxes are in annotation pixels; a different decoded size would misplace every box.
        return _Loaded(
            record, skip_reason=f"decoded size {w}x{h} differs from annotation {record.width}x{record.height}"
        )
    tensor, info = letterbox(image, input_hw, mode=LETTERBOX_MODE)
    return _Loaded(record, tensor.astype(dtype, copy=False), info)


def prefetch(items: Iterable[Any], fn: Callable[[Any], Any], workers: int, depth: int) -> Iterator[Any]:
    """Yield ``fn(item)`` in order, computed by a thread pool at most ``depth`` items ahead.

    OpenCV decode and resize release the GIL, so loading overlaps with onnxruntime even on 2 cores.
    """
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-load") as pool:
        pending = deque(pool.submit(fn, item) for item in itertools.islice(iterator, depth))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(iterator, 1):
                pending.append(pool.submit(fn, item))
            yield result


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of ``size`` (the last one may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- running the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """Decoding settings shared by every batch."""

    conf: float
    iou: float
    max_dets: int
    output_format: str | None
    nc: int
    cat_ids: tuple[int, ...]
    source: str


@dataclass
class _BatchOutput:
    """What one batch produced; built in an inference thread, merged into ``_RunState`` in image order."""

    image_ids: list[int]
    detections: list[dict[str, Any]]
    run_ms: float
    output_format: str
    nonfinite: int


def _run_batch(session: Any, io_spec: ModelIO, loaded: list[_Loaded], settings: _Settings) -> _BatchOutput:
    """Run one batch through the model and decode it (safe to call from several threads at once)."""
    x = np.stack([item.tensor for item in loaded])
    if io_spec.batch_fixed and len(loaded) < io_spec.batch:  # a fixed batch dimension needs a full batch
        x = np.concatenate([x, np.zeros((io_spec.batch - len(loaded), *x.shape[1:]), x.dtype)])
    start = time.perf_counter()
    output = session.run([io_spec.output_name], {io_spec.input_name: x})[0]
    run_ms = (time.perf_counter() - start) * 1e3
    fmt = resolve_output_format(output.shape, settings.nc, settings.output_format, settings.source)
    if output.shape[0] != x.shape[0]:
        raise EvaluationInputError(f"{settings.source}: output batch {output.shape[0]} != input batch {x.shape[0]}")
    detections: list[dict[str, Any]] = []
    nonfinite = 0
    for item, pred in zip(loaded, output):
        nonfinite += int((~np.isfinite(pred)).any(axis=1 if fmt == "e2e" else 0).sum())
        if fmt == "e2e":
            boxes, scores, classes = decode_end_to_end(
                pred, settings.conf, settings.max_dets, settings.nc, settings.source
            )
        else:
            boxes, scores, classes = decode_raw(pred, settings.conf, settings.iou, settings.max_dets)
        detections += to_coco_detections(boxes, scores, classes, item.info, item.record.image_id, settings.cat_ids)
    return _BatchOutput([item.record.image_id for item in loaded], detections, run_ms, fmt, nonfinite)


def _merge(state: _RunState, batch: _BatchOutput) -> None:
    """Append one batch's results to ``state``."""
    state.output_format = state.output_format or batch.output_format
    state.detections += batch.detections
    state.evaluated_ids += batch.image_ids
    state.batch_ms.append(batch.run_ms)
    state.image_ms.append(batch.run_ms / len(batch.image_ids))
    state.nonfinite += batch.nonfinite


class Progress:
    """A light progress line on stderr, redrawn at most once a second and only on a terminal (logs stay clean).

    tqdm is not in this environment (Ultralytics ships its own bar), and importing Ultralytics here just for a
    bar would slow every evaluation start.
    """

    def __init__(self, total: int, enabled: bool | None = None, interval_s: float = 1.0) -> None:
        self.total, self.done, self.interval_s = total, 0, interval_s
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        """Count ``n`` more images; redraw when the interval has passed or the work is done."""
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval_s or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            sys.stderr.write(f"\revaluate {self.done}/{self.total} images ({rate:.1f} img/s)")
            sys.stderr.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.enabled:
            sys.stderr.write("\n")


def run_model(
    session: Any,
    io_spec: ModelIO,
    records: list[ImageRecord],
    settings: _Settings,
    workers: int = 2,
    parallel_runs: int = 1,
) -> _RunState:
    """Decode and letterbox (thread pool), run ``parallel_runs`` batches at once and decode their outputs.

    Results are merged in image order, so ``detections.json`` does not depend on thread timing; skipped images
    are recorded, not fatal.
    """
    state = _RunState()
    depth = (parallel_runs + 1) * io_spec.batch + 2
    loaded = prefetch(records, lambda r: load_one(r, io_spec.input_hw, io_spec.input_dtype), workers, depth)
    bar = Progress(len(records))
    pending: deque[Any] = deque()
    try:
        with ThreadPoolExecutor(max_workers=parallel_runs, thread_name_prefix="eval-run") as runners:
            for chunk in batched(_skip_filter(loaded, state), io_spec.batch):
                pending.append(runners.submit(_run_batch, session, io_spec, chunk, settings))
                while len(pending) > parallel_runs:  # one batch queued beyond the running ones keeps them busy
                    _merge(state, pending.popleft().result())
                    bar.update(len(state.evaluated_ids) + len(state.skipped) - bar.done)  # skips count as done
            while pending:
                _merge(state, pending.popleft().result())
        bar.update(len(state.evaluated_ids) + len(state.skipped) - bar.done)
    finally:
        for future in pending:  # an error in one batch: do not leave the others running
            future.cancel()
        bar.close()
    return state


def _skip_filter(loaded: Iterable[_Loaded], state: _RunState) -> Iterator[_Loaded]:
    """Pass decoded images through; record the others as skips with file and reason."""
    for item in loaded:
        if item.skip_reason is None:
            yield item
        else:
            LOGGER.warning("skipping %s: %s", item.record.path, item.skip_reason)
            state.skipped.append(
                {"image_id": item.record.image_id, "file": str(item.record.path), "reason": item.skip_reason}
            )


def _warmup(session: Any, io_spec: ModelIO, parallel_runs: int = 1) -> None:
    """Untimed runs, as many at once as the loop will run: first-run allocations must not count as latency."""
    x = np.zeros((io_spec.batch, 3, *io_spec.input_hw), io_spec.input_dtype)
    with ThreadPoolExecutor(max_workers=parallel_runs) as pool:
        list(pool.map(lambda _: session.run([io_spec.output_name], {io_spec.input_name: x}), range(parallel_runs)))


# --- scoring -------------------------------------------------------------------------------------


def _coco_class(backend: str) -> Any:
    """The ``COCO`` class of a backend (each backend's COCOeval reads its own index structures)."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
    elif backend == "faster-coco-eval":
        from faster_coco_eval import COCO
    else:
        raise EvaluationInputError(f"coco_backend={backend!r} must be one of {COCO_BACKENDS}")
    return COCO


def _indexed_coco(dataset: dict[str, Any], backend: str) -> Any:
    """A backend ``COCO`` object over an in-memory dataset dict (no file read, no copy of the annotations)."""
    coco = _coco_class(backend)()
    coco.dataset = dataset
    _quiet_call(coco.createIndex)
    return coco


def results_coco(coco_gt: Any, detections: list[dict[str, Any]], backend: str = "pycocotools") -> Any:
    """A results object for ``detections`` (what ``COCO.loadRes`` builds for bboxes, also when the list is empty)."""
    anns = []
    for index, det in enumerate(detections, start=1):
        x, y, w, h = det["bbox"]
        anns.append({**det, "area": w * h, "id": index, "iscrowd": 0})
    dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": anns,
    }
    return _indexed_coco(dataset, backend)


def run_cocoeval(
    coco_gt: Any, detections: list[dict[str, Any]], image_ids: list[int], backend: str = DEFAULT_COCO_BACKEND
) -> Any:
    """Run bbox COCOeval of ``backend`` restricted to ``image_ids``; return the evaluator after ``summarize``.

    ``coco_gt`` is a pycocotools ``COCO``; for faster-coco-eval its dataset is re-indexed by that library.
    Both evaluators expose ``stats``, ``params`` and ``eval['precision']`` with the same layout.
    """
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        evaluator = COCOeval(coco_gt, results_coco(coco_gt, detections, backend), "bbox")
    elif backend == "faster-coco-eval":
        from faster_coco_eval import COCOeval_faster

        gt = _indexed_coco(coco_gt.dataset, backend)
        dt = results_coco(coco_gt, detections, backend)
        evaluator = COCOeval_faster(gt, dt, "bbox", print_function=LOGGER.debug)
    else:
        raise EvaluationInputError(f"coco_backend={backend!r} must be one of {COCO_BACKENDS}")
    evaluator.params.imgIds = sorted(image_ids)
    _quiet_call(evaluator.evaluate)
    _quiet_call(evaluator.accumulate)
    _quiet_call(evaluator.summarize)
    return evaluator


def _stat(value: float) -> float | None:
    """COCOeval writes -1 where a range has no ground truth; report that as ``None``, never as a score."""
    return None if value < 0 else float(value)


def coco_stats(evaluator: Any) -> dict[str, float | None]:
    """The 12 ``COCOeval.stats`` under this project's names."""
    return {key: _stat(value) for key, value in zip(COCO_STAT_KEYS, evaluator.stats)}


def per_class_ap(evaluator: Any, coco_gt: Any, image_ids: list[int]) -> dict[str, dict[str, Any]]:
    """AP50-95 and AP50 per category from ``eval['precision']`` (area all, maxDets 100), with GT counts."""
    precision = evaluator.eval["precision"]  # [iou thresholds, recall points, categories, areas, max dets]
    id_set = set(image_ids)
    table: dict[str, dict[str, Any]] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p_all, p_50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        name = str(coco_gt.cats[cat_id].get("name", cat_id))
        key = name if name not in table else f"{name}#{cat_id}"
        num_gt = sum(
            1
            for a in coco_gt.loadAnns(coco_gt.getAnnIds(catIds=[cat_id]))
            if a["image_id"] in id_set and not a.get("iscrowd", 0)
        )
        table[key] = {
            "category_id": int(cat_id),
            "AP50_95": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
            "AP50": float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else None,
            "num_gt": num_gt,
        }
    return table


def _match_image_class(dets: list[dict[str, Any]], gts: list[dict[str, Any]], iou_thr: float) -> tuple[int, int]:
    """Greedy matching of one image and class: return (true positives, false positives).

    Detections in descending score order each take the unmatched non-crowd ground truth of highest IoU
    (>= ``iou_thr``). A detection left unmatched that overlaps a crowd region (COCO crowd IoU =
    intersection / detection area >= ``iou_thr``) is ignored, as COCOeval does; any other is a false positive.
    """
    from pycocotools import mask as mask_utils

    if not dets:
        return 0, 0
    dets = sorted(dets, key=lambda d: -d["score"])
    if not gts:
        return 0, len(dets)
    crowd = [int(g.get("iscrowd", 0)) for g in gts]
    ious = np.asarray(mask_utils.iou([d["bbox"] for d in dets], [g["bbox"] for g in gts], crowd)).reshape(
        len(dets), len(gts)
    )
    is_crowd = np.array(crowd, bool)
    taken = np.zeros(len(gts), bool)
    tp = fp = 0
    for row in ious:
        candidates = np.where(~is_crowd & ~taken & (row >= iou_thr), row, -1.0)
        if candidates.max() >= iou_thr:
            taken[int(candidates.argmax())] = True
            tp += 1
        elif not (is_crowd & (row >= iou_thr)).any():
            fp += 1
    return tp, fp


def operating_point(
    coco_gt: Any, detections: list[dict[str, Any]], image_ids: list[int], conf_prod: float, iou_thr: float = 0.5
) -> dict[str, Any]:
    """Precision, recall and F1 of detections with ``score >= conf_prod`` (greedy IoU matching per image and class)."""
    dets_by_key: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for det in detections:
        if det["score"] >= conf_prod:
            dets_by_key.setdefault((det["image_id"], det["category_id"]), []).append(det)
    gts_by_key: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids)):
        gts_by_key.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
    tp = fp = 0
    for key in set(dets_by_key) | set(gts_by_key):
        t, f = _match_image_class(dets_by_key.get(key, []), gts_by_key.get(key, []), iou_thr)
        tp, fp = tp + t, fp + f
    num_gt = sum(1 for anns in gts_by_key.values() for a in anns if not a.get("iscrowd", 0))
    return {
        "conf": conf_prod,
        "iou": iou_thr,
        **precision_recall_f1(tp, fp, num_gt),
        "tp": tp,
        "fp": fp,
        "fn": num_gt - tp,
        "num_gt": num_gt,
        "method": "score >= conf; per image and class, detections by descending score greedily take the "
        "unmatched non-crowd GT of highest IoU >= iou; unmatched detections on crowd regions ignored",
    }


def precision_recall_f1(tp: int, fp: int, num_gt: int) -> dict[str, float | None]:
    """Precision, recall and F1 from counts; ``None`` where undefined (no detections, no ground truth)."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / num_gt if num_gt else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- report --------------------------------------------------------------------------------------


def latency_summary(values_ms: list[float]) -> dict[str, float | None]:
    """Mean and p50/p95/p99 (linear interpolation) of a latency list in milliseconds."""
    if not values_ms:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "count": 0}
    arr = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"mean": float(arr.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99), "count": int(arr.size)}


def _versions(coco_backend: str) -> dict[str, str]:
    """Versions of the packages that decide the numbers (``provenance.package_versions``, plus the COCO backend)."""
    from importlib import metadata

    from auto_quantize_model.provenance import package_versions

    versions = package_versions()
    if coco_backend == "faster-coco-eval":
        versions["faster-coco-eval"] = metadata.version("faster-coco-eval")
    return versions


def _check_arguments(
    conf: float,
    iou: float,
    max_dets: int,
    conf_prod: float,
    batch: int,
    max_images: int | None,
    output_format: str | None,
    coco_backend: str,
) -> None:
    """Reject out-of-range settings before any work starts."""
    for name, value in (("conf", conf), ("iou", iou), ("conf_prod", conf_prod)):
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise EvaluationInputError(f"{name}={value} must be within [0, 1]")
    if max_dets < 1 or batch < 1 or (max_images is not None and max_images < 1):
        raise EvaluationInputError(f"max_dets={max_dets}, batch={batch} and max_images={max_images} must be >= 1")
    if output_format not in (None, *OUTPUT_FORMATS):
        raise EvaluationInputError(f"output_format={output_format!r} must be one of {OUTPUT_FORMATS} or None (auto)")
    if coco_backend not in COCO_BACKENDS:
        raise EvaluationInputError(f"coco_backend={coco_backend!r} must be one of {COCO_BACKENDS}")
    _coco_class(coco_backend)  # an uninstalled backend fails here, before the model runs


def evaluate_onnx_coco(
    onnx_path: str | Path,
    ann_file: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    imgsz: int | tuple[int, int] = 640,
    providers: Sequence[str] = ("CUDAExecutionProvider", "CPUExecutionProvider"),
    max_images: int | None = None,
    batch: int = 1,
    conf: float = 0.001,
    iou: float = 0.7,
    max_dets: int = 300,
    conf_prod: float = 0.25,
    output_format: str | None = None,
    workers: int = 2,
    coco_backend: str = DEFAULT_COCO_BACKEND,
    session_settings: SessionSettings | None = None,
) -> EvalResult:
    """Evaluate an ONNX detector on a COCO annotation file; write ``metrics.json`` and ``detections.json``.

    ``conf`` keeps detections with ``score > conf`` (strict, like Ultralytics); ``iou`` is the NMS IoU of the raw
    layout; ``max_dets`` caps detections per image (COCOeval itself scores the best 100 per image, the COCO
    standard); ``conf_prod`` is the operating point of ``at_conf_prod``; ``workers`` decode images;
    ``coco_backend`` picks the COCOeval implementation; ``session_settings`` the onnxruntime options (default:
    auto threads and parallel runs, no weight folding). Raises :class:`EvaluationInputError` on bad input; a
    missing or corrupt image is skipped, counted and listed under ``warnings``.
    """
    _check_arguments(conf, iou, max_dets, conf_prod, batch, max_images, output_format, coco_backend)
    onnx_path, ann_file, images_dir, out_dir = Path(onnx_path), Path(ann_file), Path(images_dir), Path(out_dir)
    if not onnx_path.is_file():
        raise EvaluationInputError(f"{onnx_path}: ONNX model not found; pass --onnx with an exported model")
    if not images_dir.is_dir():
        raise EvaluationInputError(f"{images_dir}: images directory not found; pass --images-dir with the image folder")
    coco_gt = load_coco_annotations(ann_file)
    cat_ids, _ = category_table(coco_gt)
    records = select_images(coco_gt, images_dir, max_images)

    t_start = time.perf_counter()
    session, resolved = open_session(onnx_path, providers, session_settings)
    io_spec = resolve_model_io(session, onnx_path, imgsz, batch)
    _warmup(session, io_spec, resolved.parallel_runs)
    t_loop = time.perf_counter()
    settings = _Settings(conf, iou, max_dets, output_format, len(cat_ids), tuple(cat_ids), str(onnx_path))
    state = run_model(session, io_spec, records, settings, workers, resolved.parallel_runs)
    loop_s = time.perf_counter() - t_loop
    _check_run(state, len(records), onnx_path, ann_file)

    t_eval = time.perf_counter()
    metrics = score_detections(coco_gt, state, conf_prod, coco_backend)
    eval_s = time.perf_counter() - t_eval
    thresholds = {"conf": conf, "iou": iou, "max_dets": max_dets, "conf_prod": conf_prod}
    metrics.update(_run_description(onnx_path, ann_file, images_dir, session, io_spec, state, providers, thresholds))
    metrics[K.VERSIONS] = _versions(coco_backend)
    metrics[K.SESSION] = resolved.describe()
    metrics[K.LATENCY_MS] = {
        K.LATENCY_PER_BATCH: latency_summary(state.batch_ms),
        K.LATENCY_PER_IMAGE: latency_summary(state.image_ms),
    }
    metrics[K.IMAGES_PER_S] = len(state.evaluated_ids) / loop_s if loop_s > 0 else None
    metrics[K.TIMING_S] = {"setup": t_loop - t_start, "inference_loop": loop_s, "cocoeval": eval_s}
    return _write_outputs(out_dir, metrics, state.detections)


def _check_run(state: _RunState, requested: int, onnx_path: Path, ann_file: Path) -> None:
    """Fail when no image could be evaluated; warn about dropped non-finite predictions."""
    if state.nonfinite:
        LOGGER.warning("%s: %d prediction rows held NaN/inf and were dropped", onnx_path, state.nonfinite)
    if not state.evaluated_ids:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in state.skipped[:5])
        raise EvaluationInputError(
            f"all {requested} images were skipped ({reasons}); check --images-dir against {ann_file}"
        )


def run_warnings(state: _RunState) -> list[str]:
    """One line per skipped image and one for dropped non-finite predictions (the ``warnings`` of metrics.json)."""
    lines = [f"skipped image {s['image_id']} ({s['file']}): {s['reason']}" for s in state.skipped]
    if state.nonfinite:
        lines.append(f"{state.nonfinite} prediction rows held NaN/inf and were dropped")
    return lines


def score_detections(
    coco_gt: Any, state: _RunState, conf_prod: float, coco_backend: str = DEFAULT_COCO_BACKEND
) -> dict[str, Any]:
    """The accuracy part of ``metrics.json``: COCO stats, counts, per-class AP and the ``conf_prod`` operating point."""
    evaluator = run_cocoeval(coco_gt, state.detections, state.evaluated_ids, coco_backend)
    return {
        **coco_stats(evaluator),
        K.COCO_BACKEND: coco_backend,
        K.NUM_IMAGES: len(state.evaluated_ids),
        K.IMAGE_IDS: sorted(state.evaluated_ids),
        K.NUM_IMAGES_REQUESTED: len(state.evaluated_ids) + len(state.skipped),
        K.NUM_IMAGES_SKIPPED: len(state.skipped),
        K.SKIPPED: state.skipped,
        K.NUM_DETECTIONS: len(state.detections),
        K.NUM_NONFINITE_PREDICTIONS: state.nonfinite,
        K.WARNINGS: run_warnings(state),
        K.PER_CLASS: per_class_ap(evaluator, coco_gt, state.evaluated_ids),
        K.AT_CONF_PROD: operating_point(coco_gt, state.detections, state.evaluated_ids, conf_prod),
    }


def _run_description(
    onnx_path: Path,
    ann_file: Path,
    images_dir: Path,
    session: Any,
    io_spec: ModelIO,
    state: _RunState,
    requested: Sequence[str],
    thresholds: dict[str, Any],
) -> dict[str, Any]:
    """Provenance part of ``metrics.json``: inputs, providers, layout, sizes and thresholds."""
    return {
        K.SCHEMA_VERSION: METRICS_SCHEMA_VERSION,
        K.ONNX: {K.PATH: str(onnx_path.resolve()), K.SHA256: sha256_file(onnx_path)},
        K.ANNOTATIONS: {K.PATH: str(ann_file.resolve()), K.SHA256: sha256_file(ann_file)},
        K.IMAGES_DIR: str(images_dir.resolve()),
        K.PROVIDERS_REQUESTED: list(requested),
        K.PROVIDERS: list(session.get_providers()),
        K.OUTPUT_FORMAT: state.output_format,
        K.NMS: (
            "none (end-to-end model)"
            if state.output_format == "e2e"
            else f"torchvision.ops.batched_nms, class-aware, multi_label, max {MAX_NMS_CANDIDATES} candidates"
        ),
        K.IMGSZ: list(io_spec.input_hw),
        K.IMGSZ_SOURCE: "model input" if io_spec.input_hw_fixed else "argument",
        K.BATCH: io_spec.batch,
        K.BATCH_SOURCE: "model input" if io_spec.batch_fixed else "argument",
        K.LETTERBOX: f"as YOLO(onnx).val(): validator dataset resize + square LetterBox ({LETTERBOX_MODE})",
        K.THRESHOLDS: thresholds,
        K.COCOEVAL: {
            "iouType": "bbox",
            "maxDets": [1, 10, 100],
            "recall_points": 101,
            "null_means": "no ground truth in that range",
        },
    }


def _write_outputs(out_dir: Path, metrics: dict[str, Any], detections: list[dict[str, Any]]) -> EvalResult:
    """Write ``detections.json`` then ``metrics.json`` (last, so its presence means a complete evaluation)."""
    # Compact JSON: a full COCO val run holds over a million detections.
    detections_path = write_text_atomic(out_dir / K.DETECTIONS_FILE, json.dumps(detections, separators=(",", ":")))
    metrics[K.DETECTIONS_JSON] = str(detections_path.resolve())
    metrics_path = write_json_atomic(out_dir / K.METRICS_FILE, metrics)
    return EvalResult(metrics=metrics, out_dir=out_dir, metrics_path=metrics_path, detections_path=detections_path)
