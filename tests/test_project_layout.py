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


# Console commands a pixi task may run directly -> the pinned package that installs them.
PINNED_COMMANDS = {"tensorboard": "tensorboard"}


# Environments, ONNX Runtime / torch per environment and pins: tests/test_pixi_manifest.py.


@pytest.mark.parametrize("task", sorted(_pixi()["tasks"]))
def test_every_pixi_task_runs_a_script_that_exists(task):
    words = shlex.split(_pixi()["tasks"][task])
    scripts = [word for word in words if word.endswith((".py", ".sh"))]
    # A task may also run the console command of a package the manifest pins (e.g. tensorboard).
    pinned_command = words[0] in PINNED_COMMANDS and PINNED_COMMANDS[words[0]] in _pixi()["pypi-dependencies"]
    assert scripts or pinned_command or words[:3] == ["python", "-m", "pytest"], f"task {task!r} names no script"
    for script in scripts:
        assert (ROOT / script).is_file(), f"task {task!r}: {script} does not exist"


def test_runner_and_training_subcommands_are_pixi_tasks():
    tasks = _pixi()["tasks"]
    assert "run_yolov10m_scratch_fp16_vs_w4a16_qat.sh" in tasks["run-yolov10m-scratch"]
    assert tasks["fp16"].endswith(" fp16") and tasks["qat-w4a16"].endswith(" qat-w4a16")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint$", makefile, re.M) and re.search(r"^lint: venv$", makefile, re.M)
    assert re.search(r"^demo: venv$", makefile, re.M) and "ruff format --check" in makefile


def test_readme_names_only_scripts_that_exist():
    readme = (ROOT / "README.md").read_text()
    for script in set(re.findall(r"scripts/[\w./-]+\.(?:py|sh)", readme)):
        assert (ROOT / script).is_file(), script


def test_generated_files_under_tmp_are_never_committed():
    """tmp/ holds run roots and caches: git ignores everything in it but its placeholder."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "tmp"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.split() == ["tmp/.gitkeep"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "tmp/some-run/seed-0/fp16/weights/best.pt"], cwd=ROOT)
    assert ignored.returncode == 0
