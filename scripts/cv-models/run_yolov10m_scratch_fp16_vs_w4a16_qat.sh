#!/usr/bin/env bash
# End-to-end runner: YOLOv10 from scratch, FP16/AMP baseline vs Brevitas W4A16 QAT (and any other
# variants), every seed: train, export, evaluate with one evaluator, summary.md per run root.
#
# Usage:
#   scripts/cv-models/run_yolov10m_scratch_fp16_vs_w4a16_qat.sh --profile PROFILE [--run-root DIR]
#       [--seeds 0,1,2] [--variants fp16,qat-w4a16,...] [--epochs N] [--imgsz S] [--batch B]
#       [--device D] [--model CFG] [--workers W] [--fraction F] [--set KEY=VALUE ...]
#       [--train-arg KEY=VALUE ...] [--stop-after STAGE] [--redo STAGE ...] [--publish] [--list-stages]
#
#   PROFILE       demo | dry-run | bench | coco2017 (conf/cv-models/yolov10m/profiles/) or a YAML path
#   --run-root    default: $RUN_ROOT, else tmp/yolov10m_scratch_fp16_vs_w4a16_qat/<profile>-<timestamp>/
#   --set         override any profile key, e.g. --set eval_max_images=50
#   --train-arg   an Ultralytics argument for every training, e.g. --train-arg close_mosaic=10
#   --redo        rerun a finished stage and everything downstream of it (old outputs set aside)
#
# Rerunning the same command on the same run root resumes; see README "Rerun, resume, redo".
# This script only picks the interpreter and makes paths absolute; scripts/cv-models/run_pipeline.py
# checks the whole config before any work and runs every stage through run_stage (run.json, logs/).
set -euo pipefail

usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

# Relative paths the user typed are relative to where they typed them, not to the repo root.
# pixi runs tasks from the workspace root and exports the caller's directory as INIT_CWD.
under_pixi() { [[ -n "${PIXI_ENVIRONMENT_NAME:-}${PIXI_PROJECT_ROOT:-}" ]]; }
absolute() {
  local base="$PWD"
  if under_pixi && [[ -n "${INIT_CWD:-}" ]]; then base="$INIT_CWD"; fi
  if [[ "$1" == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$base" "$1"; fi
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --run-root) [[ $# -ge 2 ]] || { echo "error: --run-root needs a value" >&2; exit 2; }
      args+=(--run-root "$(absolute "$2")"); shift 2 ;;
    --profile) [[ $# -ge 2 ]] || { echo "error: --profile needs a value" >&2; exit 2; }
      profile="$2"; [[ "$profile" == *.yaml || "$profile" == */* ]] && profile="$(absolute "$profile")"
      args+=(--profile "$profile"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ -n "${RUN_ROOT:-}" ]] && export RUN_ROOT="$(absolute "$RUN_ROOT")"

cd "$REPO_ROOT"
# The interpreter of the environment the runner was started in: under pixi its `python` on PATH, never a .venv
# left by `make test` (that one has CPU onnxruntime); otherwise the repo's .venv when present.
if under_pixi; then PY="python"
elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PY="$REPO_ROOT/.venv/bin/python"; else PY="python"; fi

exec "$PY" "$REPO_ROOT/scripts/cv-models/run_pipeline.py" ${args[@]+"${args[@]}"}
