#!/usr/bin/env bash
# End-to-end runner: YOLOv10 from scratch, FP16/AMP baseline vs Brevitas W4A16 QAT.
#
# Usage:
#   scripts/cv-models/run_yolov10m_scratch_fp16_vs_w4a16_qat.sh --profile PROFILE [--run-root DIR]
#       [--epochs N] [--imgsz S] [--batch B] [--device D] [--model CFG] [--quant-scheme NAME]
#       [--workers W] [--seed K] [--fraction F] [--set KEY=VALUE ...] [--stop-after STAGE]
#
#   PROFILE     demo | dry-run | coco2017 (conf/cv-models/yolov10m/profiles/) or a YAML path
#   --run-root  default: $RUN_ROOT, else tmp/yolov10m_scratch_fp16_vs_w4a16_qat/<profile>-<timestamp>/
#   --set       override any profile key, e.g. --set eval_max_images=50
#   --stop-after  stop (exit 0) once this stage is done; a later call continues from there
#
# Stages (each through run_stage.py: tracked in <run root>/run.json, logged to <run root>/logs/):
#   [make-synthetic-data] prepare-data train-fp16 export-fp16 train-qat-<scheme>
#   export-qat-<scheme> eval-fp16 eval-qat-<scheme> summary
# Rerunning on the same run root skips finished stages and continues an interrupted or failed
# one; it refuses when the resolved settings differ from the saved run_config.yaml.
# This script only calls CLIs; every path comes from resolve_run_config.py (RunRoot).
set -euo pipefail

usage() { sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "error: $*" >&2; exit 2; }

# Relative paths the user typed are relative to where they typed them, not to the repo root.
# pixi runs tasks from the workspace root and exports the caller's directory as INIT_CWD.
under_pixi() { [[ -n "${PIXI_ENVIRONMENT_NAME:-}${PIXI_PROJECT_ROOT:-}" ]]; }
absolute() {
  local base="$PWD"
  if under_pixi && [[ -n "${INIT_CWD:-}" ]]; then base="$INIT_CWD"; fi
  if [[ "$1" == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$base" "$1"; fi
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts/cv-models"
# The dataset/train/export/eval CLIs; tests point this at stand-ins to check the runner alone.
TOOLS_DIR="${YOLOV10M_PIPELINE_TOOLS_DIR:-$SCRIPTS_DIR}"

profile="" stop_after="" resolve_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --profile) [[ $# -ge 2 ]] || die "--profile needs a value"; profile="$2"; shift 2 ;;
    --run-root) [[ $# -ge 2 ]] || die "--run-root needs a value"; resolve_args+=(--run-root "$(absolute "$2")"); shift 2 ;;
    --stop-after) [[ $# -ge 2 ]] || die "--stop-after needs a value"; stop_after="$2"; shift 2 ;;
    --epochs|--imgsz|--batch|--device|--model|--quant-scheme|--workers|--seed|--fraction|--set)
      [[ $# -ge 2 ]] || die "$1 needs a value"; resolve_args+=("$1" "$2"); shift 2 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ -n "$profile" ]] || { usage >&2; die "--profile is required"; }
[[ "$profile" == *.yaml || "$profile" == */* ]] && profile="$(absolute "$profile")"
[[ -n "${RUN_ROOT:-}" ]] && export RUN_ROOT="$(absolute "$RUN_ROOT")"

cd "$REPO_ROOT"
# The interpreter of the environment the runner was started in: under pixi its `python` on PATH, never a .venv
# left by `make test` (that one has CPU onnxruntime); otherwise the repo's .venv when present.
if under_pixi; then PY="python"
elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PY="$REPO_ROOT/.venv/bin/python"; else PY="python"; fi

# Resolve + save (or check) the run config; a plain `eval "$(...)"` would hide its failure.
run_id="$(basename "${profile%.yaml}")-$(date +%Y%m%d-%H%M%S)"
config_sh="$("$PY" "$SCRIPTS_DIR/resolve_run_config.py" --profile "$profile" --run-id "$run_id" \
  ${resolve_args[@]+"${resolve_args[@]}"})" || { echo "error: could not resolve the run config (see above)" >&2; exit 2; }
eval "$config_sh"

if [[ -n "$stop_after" && ! " ${PIPELINE_STAGES[*]} " == *" $stop_after "* ]]; then
  die "--stop-after $stop_after: not a stage of this run (${PIPELINE_STAGES[*]})"
fi
echo "run root: $ART_RUN_ROOT (profile $CFG_PROFILE, stages: ${PIPELINE_STAGES[*]})"

# stage NAME [--output PATH ...] -- CMD ...: run one tracked stage; stop the pipeline if it fails.
stage() {
  local name="$1" rc=0
  shift
  "$PY" "$SCRIPTS_DIR/run_stage.py" --run-root "$ART_RUN_ROOT" --stage "$name" "$@" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "error: pipeline stopped: stage '$name' failed (exit code $rc). Log: ${STAGE_LOGS[$name]}" >&2
    echo "       Fix the cause and rerun the same command to continue from this stage." >&2
    exit "$rc"
  fi
  if [[ "$name" == "$stop_after" ]]; then
    echo "stopping after stage $name as asked (--stop-after); rerun without it to continue"
    exit 0
  fi
}

# --- data --------------------------------------------------------------------------------------
# --overwrite: a data stage only runs while it is not done, so whatever its folder holds is a
# failed attempt of this run root (the tools still refuse to delete files they did not write).
source_root="$CFG_SOURCE_ROOT"
if [[ "$CFG_DATA_SOURCE" == synthetic ]]; then
  stage make-synthetic-data --output "$ART_SYNTHETIC_DIR" -- \
    "$PY" "$TOOLS_DIR/make_synthetic_coco.py" --out "$ART_SYNTHETIC_DIR" --train "$CFG_SYNTHETIC_TRAIN" \
    --val "$CFG_SYNTHETIC_VAL" --imgsz "$CFG_SYNTHETIC_IMGSZ" --seed "$CFG_DATA_SEED" --overwrite
  source_root="$ART_SYNTHETIC_DIR"
fi
caps=()
if [[ -n "$CFG_MAX_TRAIN_IMAGES" ]]; then caps+=(--max-train-images "$CFG_MAX_TRAIN_IMAGES"); fi
if [[ -n "$CFG_MAX_VAL_IMAGES" ]]; then caps+=(--max-val-images "$CFG_MAX_VAL_IMAGES"); fi
stage prepare-data --output "$ART_DATASET_YAML" --output "$ART_VAL_ANNOTATIONS" -- \
  "$PY" "$TOOLS_DIR/prepare_coco_dataset.py" --source-root "$source_root" --out-dir "$ART_DATASET_DIR" \
  ${caps[@]+"${caps[@]}"} --seed "$CFG_DATA_SEED" --overwrite

# --- train + export ----------------------------------------------------------------------------
# --resume: continue from last.pt after an interruption, start fresh if nothing exists yet.
train=("$PY" "$TOOLS_DIR/train_yolov10m_scratch_fp16_vs_w4a16_qat_brevitas.py")
train_args=(--run-root "$ART_RUN_ROOT" --data "$ART_DATASET_YAML" --model "$CFG_MODEL" --epochs "$CFG_EPOCHS"
  --imgsz "$CFG_IMGSZ" --batch "$CFG_BATCH" --device "$CFG_DEVICE" --hyp "$CFG_HYP" --seed "$CFG_SEED"
  --workers "$CFG_WORKERS" --fraction "$CFG_FRACTION" --resume)
for pair in ${CFG_TRAIN_OVERRIDES[@]+"${CFG_TRAIN_OVERRIDES[@]}"}; do train_args+=(--set "$pair"); done
export_args=(--imgsz "$CFG_IMGSZ" --format "$CFG_EXPORT_FORMAT" --validate)
if [[ -n "$CFG_EXPORT_OPSET" ]]; then export_args+=(--opset "$CFG_EXPORT_OPSET"); fi
if [[ "$CFG_EXPORT_DYNAMIC_BATCH" == true ]]; then export_args+=(--dynamic-batch); fi
export_onnx=("$PY" "$TOOLS_DIR/export_onnx.py")

stage train-fp16 --output "$ART_FP16_BEST" -- "${train[@]}" fp16 "${train_args[@]}"
stage export-fp16 --output "$ART_ONNX_FP16" -- \
  "${export_onnx[@]}" --weights "$ART_FP16_BEST" --out "$ART_ONNX_FP16" "${export_args[@]}"
stage "train-$CFG_QAT_STAGE" --output "$ART_QAT_BEST" -- \
  "${train[@]}" qat-w4a16 "${train_args[@]}" --quant-scheme "$CFG_QUANT_SCHEME"
stage "export-$CFG_QAT_STAGE" --output "$ART_ONNX_QAT" -- \
  "${export_onnx[@]}" --weights "$ART_QAT_BEST" --out "$ART_ONNX_QAT" "${export_args[@]}"

# --- evaluate both ONNX models with the same evaluator and settings -------------------------
evaluate=("$PY" "$TOOLS_DIR/eval_yolov10m_onnx_coco.py")
eval_args=(--ann-file "$ART_VAL_ANNOTATIONS" --images-dir "$ART_VAL_IMAGES" --imgsz "$CFG_IMGSZ"
  --batch "$CFG_EVAL_BATCH" --providers "${CFG_EVAL_PROVIDERS[@]}")
if [[ -n "$CFG_EVAL_MAX_IMAGES" ]]; then eval_args+=(--max-images "$CFG_EVAL_MAX_IMAGES"); fi
stage eval-fp16 --output "$ART_EVAL_FP16_METRICS" -- \
  "${evaluate[@]}" --onnx "$ART_ONNX_FP16" --out-dir "$ART_EVAL_FP16_DIR" "${eval_args[@]}"
stage "eval-$CFG_QAT_STAGE" --output "$ART_EVAL_QAT_METRICS" -- \
  "${evaluate[@]}" --onnx "$ART_ONNX_QAT" --out-dir "$ART_EVAL_QAT_DIR" "${eval_args[@]}"

# --- report --------------------------------------------------------------------------------------
stage summary --output "$ART_SUMMARY_MD" -- \
  "$PY" "$SCRIPTS_DIR/write_yolov10m_scratch_train_summary.py" --run-root "$ART_RUN_ROOT"
echo "done: $ART_SUMMARY_MD"
