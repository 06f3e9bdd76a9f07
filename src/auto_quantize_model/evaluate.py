"""One ONNX COCO evaluator for every model of the project (FP16 baseline and QAT QCDQ alike).

Pipeline per image: decode with OpenCV (a missing or undecodable file is an error, or with
``allow_missing_images`` a counted skip and a warning in ``metrics.json``), letterbox to the model's fixed
square input the way ``YOLO(onnx).val()`` does
(:mod:`auto_quantize_model.onnx_io.preprocess`, ``mode="val"``; in-training validation differs: it runs
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

``metrics.json`` (schema_version 2; every key is a constant in :mod:`auto_quantize_model.runs.metrics_keys`):

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
  ``session`` settings (per image = batch time / real images in the batch; with ``parallel_runs > 1`` runs
  overlap, so this is latency under that load). There is no warm-up run: each run slot's first batch pays the
  first-run allocations and is left out of these figures (``first_batches_excluded``). A run root's latency
  column comes from the latency stage (:mod:`auto_quantize_model.latency`), not from here.
  ``images_per_s`` over the whole loop (decode, letterbox, inference, decoding), ``timing_s`` {setup,
  inference_loop, cocoeval};
* ``session`` {intra_op_threads, parallel_runs, graph_optimization, fold_weights, allow_spinning};
* provenance: ``onnx`` {path, sha256, quant_scheme, package_version, git_commit, provenance_source} (the scheme
  from the export's ``.json`` sidecar, else from the file's own ``metadata_props``), ``annotations`` {path,
  sha256} (both sha256 cached across runs by file stamp: ``utils.io.sha256_file_cached``), ``images_dir``,
  ``providers_requested``, ``providers`` (``session.get_providers()``: a requested provider that does not start
  is an error unless ``allow_provider_fallback``), ``output_format``, ``nms``, ``imgsz`` (+ ``imgsz_source``),
  ``batch`` (+ ``batch_source``), ``letterbox``, ``thresholds`` {conf, iou, max_dets, conf_prod}, ``cocoeval``,
  ``versions``, ``detections_json``.

``detections.json`` is the COCO results list (image_id, real category_id, bbox ``[x, y, w, h]`` in original
pixels, score) at full float precision: re-scoring it with COCOeval reproduces ``metrics.json`` exactly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.evaluation.coco import (
    COCO_BACKENDS,
    DEFAULT_COCO_BACKEND,
    category_table,
    coco_class,
    coco_stats,
    load_coco_annotations,
    operating_point,
    per_class_ap,
    run_cocoeval,
    select_images,
)
from auto_quantize_model.evaluation.decode import (
    MAX_NMS_CANDIDATES,
)
from auto_quantize_model.evaluation.errors import EvaluationInputError
from auto_quantize_model.evaluation.loop import (
    DecodeSettings,
    RunState,
    check_images_exist,
    check_run,
    latency_summary,
    run_model,
    run_warnings,
)
from auto_quantize_model.evaluation.ort_session import SessionSettings
from auto_quantize_model.evaluation.runtime import (
    DEFAULT_RUNTIME,
    RuntimeSession,
    open_runtime_session,
    runtime_record,
)
from auto_quantize_model.onnx_io.contract import OUTPUT_FORMATS
from auto_quantize_model.onnx_io.embedded import commit_label, parse_provenance, read_provenance
from auto_quantize_model.onnx_io.preprocess import (
    LETTERBOX_MODE,
)
from auto_quantize_model.onnx_io.verify import read_export_metadata
from auto_quantize_model.quant.scheme import QuantScheme
from auto_quantize_model.runs import metrics_keys as K
from auto_quantize_model.runs.run_root import export_metadata_path
from auto_quantize_model.utils.io import sha256_file_cached, write_json_atomic, write_text_atomic

LOGGER = logging.getLogger(__name__)

METRICS_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class EvalResult:
    """Outcome of :func:`evaluate_onnx_coco`: the ``metrics.json`` content and where the artifacts are."""

    metrics: dict[str, Any]
    out_dir: Path
    metrics_path: Path
    detections_path: Path


# --- report --------------------------------------------------------------------------------------


def _versions(coco_backend: str) -> dict[str, str]:
    """Versions of the packages that decide the numbers (``provenance.package_versions``, plus the COCO backend)."""
    from importlib import metadata

    from auto_quantize_model.runs.provenance import package_versions

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
    coco_class(coco_backend)  # an uninstalled backend fails here, before the model runs


def _check_runtime_runs_file(runtime: str, onnx_path: Path) -> None:
    """OpenVINO scores a file with quantized activations as the int8 model it executes; a file with sub-8-bit
    weights or activations (W4A8) has no integer kernel there, so asking OpenVINO for it is refused."""
    if runtime != "openvino":
        return
    embedded = read_provenance(onnx_path)
    scheme = QuantScheme.from_dict(embedded.quant_scheme) if embedded and embedded.quant_scheme else None
    if scheme is not None and scheme.quantizes_activations and not scheme.runs_as_int8:
        raise EvaluationInputError(
            f"{onnx_path}: scheme {scheme.name!r} holds sub-8-bit weights or activations, which OpenVINO does not "
            "execute as integer kernels; score it with --runtime onnxruntime"
        )


def evaluate_onnx_coco(
    onnx_path: str | Path,
    ann_file: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    imgsz: int | tuple[int, int] = 640,
    providers: Sequence[str] = ("CPUExecutionProvider",),
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
    runtime: str = DEFAULT_RUNTIME,
    allow_provider_fallback: bool = False,
    allow_missing_images: bool = False,
) -> EvalResult:
    """Evaluate an ONNX detector on a COCO annotation file; write ``metrics.json`` and ``detections.json``.

    ``conf`` keeps detections with ``score > conf`` (strict, like Ultralytics); ``iou`` is the NMS IoU of the raw
    layout; ``max_dets`` caps detections per image (COCOeval itself scores the best 100 per image, the COCO
    standard); ``conf_prod`` is the operating point of ``at_conf_prod``; ``workers`` decode images;
    ``coco_backend`` picks the COCOeval implementation; ``session_settings`` the onnxruntime options (default:
    auto threads and parallel runs, no weight folding); ``providers`` run the model, all of them or an error
    unless ``allow_provider_fallback``. Raises :class:`EvaluationInputError` on bad input, and when an image the
    annotations list is missing or cannot be decoded; with ``allow_missing_images`` such an image is skipped
    instead, counted and listed under ``warnings`` (``num_images_skipped``).
    """
    _check_arguments(conf, iou, max_dets, conf_prod, batch, max_images, output_format, coco_backend)
    onnx_path, ann_file, images_dir, out_dir = Path(onnx_path), Path(ann_file), Path(images_dir), Path(out_dir)
    if not onnx_path.is_file():
        raise EvaluationInputError(f"{onnx_path}: ONNX model not found; pass --onnx with an exported model")
    _check_runtime_runs_file(runtime, onnx_path)
    if not images_dir.is_dir():
        raise EvaluationInputError(f"{images_dir}: images directory not found; pass --images-dir with the image folder")
    coco_gt = load_coco_annotations(ann_file)
    cat_ids, _ = category_table(coco_gt)
    records = select_images(coco_gt, images_dir, max_images)
    check_images_exist(records, ann_file, allow_missing_images)

    t_start = time.perf_counter()
    session = open_runtime_session(
        runtime, onnx_path, providers, session_settings, imgsz, batch, allow_provider_fallback
    )
    t_loop = time.perf_counter()
    settings = DecodeSettings(conf, iou, max_dets, output_format, len(cat_ids), tuple(cat_ids), str(onnx_path))
    state = run_model(session, records, settings, workers)
    loop_s = time.perf_counter() - t_loop
    check_run(state, len(records), onnx_path, ann_file, allow_missing_images)

    t_eval = time.perf_counter()
    metrics = score_detections(coco_gt, state, conf_prod, coco_backend)
    eval_s = time.perf_counter() - t_eval
    thresholds = {"conf": conf, "iou": iou, "max_dets": max_dets, "conf_prod": conf_prod}
    metrics.update(_run_description(onnx_path, ann_file, images_dir, session, state, providers, thresholds))
    metrics[K.ALLOW_PROVIDER_FALLBACK] = allow_provider_fallback
    metrics[K.VERSIONS] = _versions(coco_backend)
    metrics[K.SESSION] = session.describe()
    metrics[K.RUNTIME] = runtime_record(runtime, session)
    metrics[K.LATENCY_MS] = {
        K.LATENCY_PER_BATCH: latency_summary(state.batch_ms),
        K.LATENCY_PER_IMAGE: latency_summary(state.image_ms),
        K.LATENCY_FIRST_BATCHES_EXCLUDED: state.first_batches,
    }
    metrics[K.IMAGES_PER_S] = len(state.evaluated_ids) / loop_s if loop_s > 0 else None
    metrics[K.TIMING_S] = {"setup": t_loop - t_start, "inference_loop": loop_s, "cocoeval": eval_s}
    return _write_outputs(out_dir, metrics, state.detections)


def score_detections(
    coco_gt: Any, state: RunState, conf_prod: float, coco_backend: str = DEFAULT_COCO_BACKEND
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
    session: RuntimeSession,
    state: RunState,
    requested: Sequence[str],
    thresholds: dict[str, Any],
) -> dict[str, Any]:
    """Provenance part of ``metrics.json``: inputs, providers, layout, sizes and thresholds."""
    io_spec = session.io
    return {
        K.SCHEMA_VERSION: METRICS_SCHEMA_VERSION,
        K.ONNX: {
            K.PATH: str(onnx_path.resolve()),
            K.SHA256: sha256_file_cached(onnx_path),
            **_model_provenance(onnx_path, session.model_metadata()),
        },
        K.ANNOTATIONS: {K.PATH: str(ann_file.resolve()), K.SHA256: sha256_file_cached(ann_file)},
        K.IMAGES_DIR: str(images_dir.resolve()),
        K.PROVIDERS_REQUESTED: list(requested),
        K.PROVIDERS: session.devices(),
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


def _model_provenance(onnx_path: Path, metadata_props: dict[str, str]) -> dict[str, Any]:
    """Scheme, package version and commit of the file: from its export sidecar, else from its ``metadata_props``."""
    sidecar = export_metadata_path(onnx_path)
    try:
        record = read_export_metadata(onnx_path)
    except ValueError as error:
        LOGGER.warning("%s; reading the model's own metadata instead", error)
        record = None
    if record is not None:
        git = record.get("git") or {}
        return {
            K.ONNX_QUANT_SCHEME: record.get("quant_scheme"),
            K.ONNX_PACKAGE_VERSION: record.get("package_version"),
            K.ONNX_GIT_COMMIT: commit_label(git.get("commit"), git.get("dirty")),
            K.ONNX_PROVENANCE_SOURCE: f"sidecar {sidecar.name}",
        }
    embedded = parse_provenance(metadata_props)
    return {
        K.ONNX_QUANT_SCHEME: embedded.quant_scheme if embedded else None,
        K.ONNX_PACKAGE_VERSION: embedded.package_version if embedded else None,
        K.ONNX_GIT_COMMIT: embedded.git_commit if embedded else None,
        K.ONNX_PROVENANCE_SOURCE: "onnx metadata_props" if embedded else None,
    }


def _write_outputs(out_dir: Path, metrics: dict[str, Any], detections: list[dict[str, Any]]) -> EvalResult:
    """Write ``detections.json`` then ``metrics.json`` (last, so its presence means a complete evaluation)."""
    # Compact JSON: a full COCO val run holds over a million detections.
    detections_path = write_text_atomic(out_dir / K.DETECTIONS_FILE, json.dumps(detections, separators=(",", ":")))
    metrics[K.DETECTIONS_JSON] = str(detections_path.resolve())
    metrics_path = write_json_atomic(out_dir / K.METRICS_FILE, metrics)
    return EvalResult(metrics=metrics, out_dir=out_dir, metrics_path=metrics_path, detections_path=detections_path)
