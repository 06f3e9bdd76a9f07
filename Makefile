# The two commands of the README. Both create .venv (pinned stack) when it is missing.
PY := .venv/bin/python

.PHONY: venv test test-fast demo

venv:
	@bash scripts/setup_venv.sh

# The full test suite, CPU only (what CI runs).
test: venv
	$(PY) -m pytest -q -ra

# Skip the tests that train or export real (tiny) models.
test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# The main job on the embedded synthetic demo data: train FP16 + W4A16 QAT, export, evaluate, summary.md.
demo: venv
	bash scripts/cv-models/run_yolov10m_scratch_fp16_vs_w4a16_qat.sh --profile demo $(ARGS)
