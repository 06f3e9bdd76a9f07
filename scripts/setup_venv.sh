#!/usr/bin/env bash
# Create .venv at the repository root (when missing) and install the pinned stack.
# Idempotent: a stamp holding the hash of requirements.txt + pyproject.toml skips a
# reinstall when nothing changed. Used by `make test` and `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.aqm-installed
# The pins (torch 2.14.1, its CUDA wheels, ultralytics, brevitas) are chosen and tested for CPython 3.11.
REQUIRED_PYTHON=3.11
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# A .venv built with another Python is refused, never reused or deleted (it may be a symlink to another checkout's).
if [[ -e $VENV ]]; then
  have=$(python_version "$VENV/bin/python" || true)
  if [[ $have != "$REQUIRED_PYTHON" ]]; then
    echo "[setup] $VENV/bin/python is Python ${have:-unknown (missing or broken)}, this project needs" \
      "$REQUIRED_PYTHON: remove $VENV (rm -rf $VENV) and rerun with PYTHON=python$REQUIRED_PYTHON" \
      "(e.g. PYTHON=python$REQUIRED_PYTHON make test)" >&2
    exit 1
  fi
fi
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  exit 0
fi
if [[ ! -x $VENV/bin/python ]]; then
  have=$(python_version "$PYTHON" || true)
  if [[ $have != "$REQUIRED_PYTHON" ]]; then
    echo "[setup] PYTHON=$PYTHON is Python ${have:-unknown (not found)}, this project needs $REQUIRED_PYTHON:" \
      "rerun with PYTHON=python$REQUIRED_PYTHON (or the path of a $REQUIRED_PYTHON interpreter)" >&2
    exit 1
  fi
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
