#!/usr/bin/env bash
# Collect the Python 3.12 manylinux wheels the GPU test machine lacks into tmp/gpu-wheels (git-ignored), check they
# install there (pip dry run for cp312 / manylinux x86_64) and fit in 64 MiB, and print the two steps to run there.
#
#   bash scripts/gpu_wheels.sh [OUT_DIR]        # default tmp/gpu-wheels; needs PyPI and the project's .venv
#
# What is collected and at which versions: benchmarks/gpu_proof_parts/wheels.py (requirements.txt pins, else the
# version this .venv resolved). The machine's own torch, numpy, onnx and onnxruntime are used, never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
OUT=${1:-tmp/gpu-wheels}
STAGING="$OUT.partial"
LIMIT_MIB=64 # what travels beside the working tree to the test machine
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
TARGET=(--only-binary=:all: --python-version 3.12 "${PLATFORMS[@]}")
pip_q() { "$PY" -m pip --disable-pip-version-check -q "$@"; }

mapfile -t PINS < <("$PY" benchmarks/gpu_proof_parts/wheels.py pins)
rm -rf "$STAGING"
mkdir -p "$STAGING"
echo "[gpu-wheels] downloading ${#PINS[@]} wheels: ${PINS[*]}"
pip_q download "${TARGET[@]}" --no-deps -d "$STAGING" "${PINS[@]}"

# This package, built from the working tree (a pure-Python wheel) in a scratch copy, so no build/ lands here.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r pyproject.toml src "$build/"
pip_q wheel --no-deps --no-build-isolation -w "$STAGING" "$build"

echo "[gpu-wheels] checking that pip accepts every wheel for Python 3.12 on manylinux x86_64 (dry run)"
pip_q install --dry-run --no-index --no-deps "${TARGET[@]}" --target "$build/site" "$STAGING"/*.whl

size_mib=$(du -sm "$STAGING" | cut -f1)
if ((size_mib > LIMIT_MIB)); then
  echo "[gpu-wheels] error: $STAGING holds ${size_mib} MiB, more than the ${LIMIT_MIB} MiB that travel; nothing replaced" >&2
  exit 1
fi
rm -rf "$OUT"
mv "$STAGING" "$OUT"
echo "[gpu-wheels] $OUT: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) (limit ${LIMIT_MIB} MiB)"
cat <<EOF
On the GPU test machine, from the repository root (carry $OUT along with the working tree):
  python3 -m pip install --no-index --no-deps --target tmp/aqm-site $OUT/*.whl
  PYTHONPATH=src:tmp/aqm-site python3 benchmarks/gpu_proof.py --device 0 --out tmp/gpu-proof/h100
EOF
