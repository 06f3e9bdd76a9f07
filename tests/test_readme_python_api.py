"""The README's "Python API" section runs as written: every python block, in order, in a fresh folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a notebook user calls; the section must show each of them.
API_FUNCTIONS = (
    "quantize_model(",
    "train_stage(",
    "export_onnx(",
    "evaluate_onnx_coco(",
    "time_onnx_latency(",
    "write_summary(",
)


def _python_api_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Python API\n" in readme, "README has no 'Python API' section"
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_section_shows_every_api_function():
    code = "\n".join(_python_api_blocks())
    missing = [name for name in API_FUNCTIONS if name not in code]
    assert not missing, f"README 'Python API' does not call {missing}"


@pytest.mark.slow
def test_the_python_api_examples_run_and_leave_a_complete_run_root(tmp_path: Path) -> None:
    example = tmp_path / "readme_python_api.py"
    example.write_text("\n\n".join(_python_api_blocks()), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_root = tmp_path / "tmp" / "api-example"
    summary = json.loads((run_root / "summary.json").read_text())
    assert summary["complete"] is True, summary.get("missing")
    onnx = sorted(p.name for p in (run_root / "seed-0" / "onnx").glob("*.onnx"))
    assert onnx == [
        "yolov10n-fp16-float16.onnx",
        "yolov10n-fp16-float32.onnx",
        "yolov10n-qat-w4a16-int4.onnx",
        "yolov10n-qat-w4a16-qcdq.onnx",
    ]
    assert done.stdout.strip().splitlines()[-1].endswith("summary.md complete")
