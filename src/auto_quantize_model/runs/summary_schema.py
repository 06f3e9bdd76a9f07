"""Column names of ``<run root>/summary.csv`` and keys of ``summary.json``, shared by their writer (the summary
stage) and their readers.

summary.csv: one row per (variant, seed, weights_format); an empty cell means the value is missing (e.g. not
evaluated yet). Kept free of torch and Ultralytics imports so that reporting tools can read run roots anywhere.
"""

from __future__ import annotations

SUMMARY_CSV = "summary.csv"

VARIANT = "variant"  # stage name: fp16, qat-w4a16, ptq-w4a16, qat-w4a16-ft, ...
SEED = "seed"  # training seed (int)
WEIGHTS_FORMAT = "weights_format"  # one of WEIGHTS_FORMATS: how the evaluated ONNX stores its weights
MAP50_95 = "mAP50_95"  # ONNX evaluator, COCO mAP@[.50:.95]
MAP50 = "mAP50"  # ONNX evaluator, COCO mAP@.50
VAL_MAP50_95_BEST = "val_mAP50_95_best"  # Ultralytics validator, best epoch (in-training PyTorch model)
ONNX = "onnx"  # path of the evaluated ONNX, relative to the run root
ONNX_BYTES = "onnx_bytes"  # its file size in bytes
LATENCY_MS_P50 = "latency_ms_p50"  # median session.run ms at batch 1 from the seed's latency.json (latency stage)
VAL_ANN_SHA256 = "val_ann_sha256"  # sha256 of the val annotation file the evaluator scored against
BASELINE = "baseline"  # the matched baseline variant the headline compares this row with (empty for fp16)
CHECKPOINT_POLICY = "checkpoint_policy"  # last | best-on-selection | best-on-val: which checkpoint was exported
CHECKPOINT_EPOCH = "checkpoint_epoch"  # training epoch (1-based) of the scored checkpoint (PTQ: fp16's)

SUMMARY_COLUMNS = (
    VARIANT,
    SEED,
    WEIGHTS_FORMAT,
    MAP50_95,
    MAP50,
    VAL_MAP50_95_BEST,
    ONNX,
    ONNX_BYTES,
    LATENCY_MS_P50,
    VAL_ANN_SHA256,
    BASELINE,
    CHECKPOINT_POLICY,
    CHECKPOINT_EPOCH,
)

WEIGHTS_FORMATS = ("float32", "float16", "qcdq", "int4")
FP_VARIANT = "fp16"  # the FP baseline stage (its name follows the spec even where it trained in FP32)
FP_WEIGHTS_FORMAT = "float32"  # the baseline row every ratio is taken against

# summary.json keys
COMPLETE = "complete"  # bool: every expected artifact is present
MISSING = "missing"  # what is not, most upstream first
GENERATED_AT = "generated_at"  # UTC ISO time of the summary
PROFILE = "profile"
MODEL = "model"
VARIANTS = "variants"
SEEDS = "seeds"
