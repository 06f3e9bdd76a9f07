"""The project's own files agree with each other: pixi tasks, pins, README commands, CI entry point."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pixi() -> dict:
    return tomllib.loads((ROOT / "pixi.toml").read_text())


def _requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_pixi_declares_default_and_rtx5090_environments():
    pixi = _pixi()
    assert set(pixi["environments"]) == {"default", "rtx5090"}
    assert "onnxruntime-gpu" in pixi["feature"]["rtx5090"]["pypi-dependencies"]
    assert "onnxruntime" in pixi["feature"]["cpu"]["pypi-dependencies"]
    assert pixi["dependencies"]["python"].startswith("3.11")


@pytest.mark.parametrize("task", sorted(_pixi()["tasks"]))
def test_every_pixi_task_runs_a_script_that_exists(task):
    words = shlex.split(_pixi()["tasks"][task])
    scripts = [word for word in words if word.endswith((".py", ".sh"))]
    assert scripts or words[:3] == ["python", "-m", "pytest"], f"task {task!r} names no script"
    for script in scripts:
        assert (ROOT / script).is_file(), f"task {task!r}: {script} does not exist"


def test_runner_and_training_subcommands_are_pixi_tasks():
    tasks = _pixi()["tasks"]
    assert "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh" in tasks["run-yolov10m-scratch"]
    assert tasks["fp16"].endswith(" fp16") and tasks["qat-w4a16"].endswith(" qat-w4a16")


def test_pixi_and_requirements_pin_the_same_stack():
    pins = _requirement_pins()
    pixi = _pixi()
    declared = {**pixi["pypi-dependencies"], **pixi["feature"]["cpu"]["pypi-dependencies"]}
    for name in ("torch", "torchvision", "ultralytics", "brevitas", "onnx", "onnxruntime", "onnxoptimizer",
                 "pycocotools", "tensorboard", "matplotlib", "pandas", "cloudpickle"):
        assert declared[name] == f"=={pins[name]}", name
    assert pixi["feature"]["rtx5090"]["pypi-dependencies"]["onnxruntime-gpu"] == f"=={pins['onnxruntime']}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: venv$", makefile, re.M) and re.search(r"^demo: venv$", makefile, re.M)


def test_readme_names_only_scripts_that_exist():
    readme = (ROOT / "README.md").read_text()
    for script in set(re.findall(r"scripts/[\w./-]+\.(?:py|sh)", readme)):
        assert (ROOT / script).is_file(), script


def test_top_level_layout_of_the_brief():
    for name in ("pixi.toml", "src", "scripts", "conf", "extern", "models", "datasets", "context", "tmp", "tests"):
        assert (ROOT / name).exists(), name
