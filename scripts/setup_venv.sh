#!/usr/bin/env bash
# Create .venv at the repository root (when missing) and install the pinned stack.
# Idempotent: a stamp holding the hash of requirements.txt + pyproject.toml skips a
# reinstall when nothing changed. Used by `make test` and `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.aqm-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  exit 0
fi
if [[ ! -x $VENV/bin/python ]]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
echo "[setup] installing pinned dependencies (torch first: the rest must resolve against it)"
pip_install --upgrade pip
# torch/torchvision first, on their own, so no other package can pull a mismatched pair.
pip_install "$(grep -E '^torch==' requirements.txt)" "$(grep -E '^torchvision==' requirements.txt)"
pip_install -r requirements.txt
pip_install --no-deps -e .
"$VENV/bin/python" -m pip check
# pip check cannot see it: onnxruntime and onnxruntime-gpu side by side (requirements.txt chooses the `cpu` extra's
# onnxruntime; one installed by hand later would silently decide the providers).
"$VENV/bin/python" -c 'import sys
from auto_quantize_model.runs.env_check import EnvCheckError, require_single_onnxruntime
try:
    require_single_onnxruntime()
except EnvCheckError as error:
    sys.exit(f"[setup] {error}")'
echo "$want" > "$STAMP"
echo "[setup] ready: $VENV"
