# The two commands of the README. Both create .venv (pinned stack) when it is missing.
PY := .venv/bin/python

.PHONY: venv lint format test test-fast demo

venv:
	@bash scripts/setup_venv.sh

# ruff, pinned in requirements.txt and configured in pyproject.toml.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The linters, then the full test suite, CPU only (what CI runs).
test: lint
	$(PY) -m pytest -q -ra --durations=25

# Skip the tests that train or export real (tiny) models.
test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# The main job on the generated synthetic demo data: train FP + W4A16 QAT, export, evaluate, summary.md.
demo: venv
	bash scripts/cv-models/run_yolov10m_scratch_fp16_vs_w4a16_qat.sh --profile demo $(ARGS)
