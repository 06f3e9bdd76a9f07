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
echo "$want" > "$STAMP"
echo "[setup] ready: $VENV"
