"""Key names of the evaluator's ``metrics.json``: one spelling, shared by the writer and every reader.

:mod:`auto_quantize_model.evaluate` writes these keys; the report and any analysis (bootstrap intervals,
summaries) read them through the same constants. Torch-free and import-free on purpose, so a reader pays
nothing for importing it. Nested keys are listed with their parent (``LATENCY_MS`` -> ``LATENCY_PER_IMAGE``
-> ``LATENCY_STAT_P50``...).
"""

from __future__ import annotations

METRICS_FILE = "metrics.json"
DETECTIONS_FILE = "detections.json"
SCHEMA_VERSION = "schema_version"

# The 12 COCOeval.stats, in COCOeval's order (null where that area range holds no ground truth).
MAP50_95 = "mAP50_95"
MAP50 = "mAP50"
MAP75 = "mAP75"
MAP_SMALL = "mAP_small"
MAP_MEDIUM = "mAP_medium"
MAP_LARGE = "mAP_large"
AR1 = "AR1"
AR10 = "AR10"
AR100 = "AR100"
AR_SMALL = "AR_small"
AR_MEDIUM = "AR_medium"
AR_LARGE = "AR_large"
COCO_STAT_KEYS = (
    MAP50_95,
    MAP50,
    MAP75,
    MAP_SMALL,
    MAP_MEDIUM,
    MAP_LARGE,
    AR1,
    AR10,
    AR100,
    AR_SMALL,
    AR_MEDIUM,
    AR_LARGE,
)

# Which images were scored.
NUM_IMAGES = "num_images"
NUM_IMAGES_REQUESTED = "num_images_requested"
NUM_IMAGES_SKIPPED = "num_images_skipped"
SKIPPED = "skipped"  # [{image_id, file, reason}]: missing, corrupt or wrongly sized files
IMAGE_IDS = "image_ids"  # evaluated COCO image ids, ascending: exactly COCOeval's params.imgIds
NUM_DETECTIONS = "num_detections"
NUM_NONFINITE_PREDICTIONS = "num_nonfinite_predictions"
WARNINGS = "warnings"  # human-readable lines for everything that was dropped or skipped (empty list when clean)

# Accuracy detail.
PER_CLASS = "per_class"  # {name: {category_id, AP50_95, AP50, num_gt}}
AT_CONF_PROD = "at_conf_prod"  # {conf, iou, precision, recall, f1, tp, fp, fn, num_gt, method}
COCO_BACKEND = "coco_backend"  # "pycocotools" or "faster-coco-eval": the library that computed the stats
COCOEVAL = "cocoeval"  # COCOeval parameters

# Speed.
LATENCY_MS = "latency_ms"
LATENCY_PER_BATCH = "per_batch"
LATENCY_PER_IMAGE = "per_image"
LATENCY_STAT_MEAN = "mean"
LATENCY_STAT_P50 = "p50"
LATENCY_STAT_P95 = "p95"
LATENCY_STAT_P99 = "p99"
LATENCY_STAT_COUNT = "count"
LATENCY_FIRST_BATCHES_EXCLUDED = "first_batches_excluded"  # each run slot's first batch: no warm-up, not a sample
IMAGES_PER_S = "images_per_s"  # over the whole inference loop (decode, letterbox, inference, output decoding)
TIMING_S = "timing_s"  # {setup, inference_loop, cocoeval}
SESSION = "session"  # onnxruntime options used: threads, optimization level, fold_weights, parallel_runs

# Provenance.
ONNX = "onnx"  # {path, sha256, quant_scheme, package_version, git_commit, provenance_source}
ONNX_QUANT_SCHEME = "quant_scheme"  # the full scheme dict of a quantized file, null for a float one
ONNX_PACKAGE_VERSION = "package_version"  # auto_quantize_model version that exported the file
ONNX_GIT_COMMIT = "git_commit"  # commit of the exporting code
ONNX_PROVENANCE_SOURCE = "provenance_source"  # where those came from: the .json sidecar or the file's metadata_props
ANNOTATIONS = "annotations"  # {path, sha256}
PATH = "path"
SHA256 = "sha256"
IMAGES_DIR = "images_dir"
PROVIDERS_REQUESTED = "providers_requested"
PROVIDERS = "providers"  # session.get_providers(): what really ran
RUNTIME = "runtime"  # {name: onnxruntime | openvino, version, device}
ALLOW_PROVIDER_FALLBACK = "allow_provider_fallback"  # true: a requested provider that did not start was replaced
OUTPUT_FORMAT = "output_format"
NMS = "nms"
IMGSZ = "imgsz"
IMGSZ_SOURCE = "imgsz_source"
BATCH = "batch"
BATCH_SOURCE = "batch_source"
LETTERBOX = "letterbox"
THRESHOLDS = "thresholds"  # {conf, iou, max_dets, conf_prod}
VERSIONS = "versions"
DETECTIONS_JSON = "detections_json"
