"""benchmarks/gpu_proof.py in its CPU mode, its budgets and refusals, and the wheel list of scripts/gpu_wheels.sh.

The slow tests run the whole proof once (``--device cpu --tiny``) so the script cannot rot between GPU runs, and
check from that run that every distribution it imports, in its own process and in every stage process, is on the
GPU test machine (benchmarks/gpu-test-machine.md) or in the list gpu_wheels.sh collects. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROOF = REPO / "benchmarks" / "gpu_proof.py"
WHEEL_FOLDER = REPO / "tmp" / "gpu-wheels"
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_proof_parts import wheels  # noqa: E402  (the benchmarks folder is not a package)
from gpu_proof_parts.budget import Part, run_part  # noqa: E402
from gpu_proof_parts.epoch_run import run_stage_within_budget  # noqa: E402
from gpu_proof_parts.settings import (  # noqa: E402
    GPU_BUDGETS_S,
    WHOLE_PROOF_TARGET_S,
    activation_bit_width,
    timing_scheme_names,
)

from auto_quantize_model.quant.scheme import SCHEME_NAMES, named_scheme  # noqa: E402
from auto_quantize_model.runs.plan import StageSpec  # noqa: E402
from auto_quantize_model.runs.run_root import RunRoot  # noqa: E402

IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)\s*$")


def proof(*args: str, env: dict[str, str] | None = None, timeout: int = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(PROOF), *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=timeout,
    )
    print(done.stdout[-4000:], done.stderr[-4000:])  # shown by pytest only when the test fails
    return done


def report(out: Path) -> dict:
    return json.loads((out / "gpu_proof.json").read_text())


# ----------------------------------------------------------------------------------------------
# Settings, refusals, wheel list (fast)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--device", "gpu0"], "--device"),
        (["--parts", "env,warp"], "--parts"),
        (["--schemes", "w4a17"], "--schemes"),
        (["--budget-scale", "0"], "--budget-scale"),
    ],
)
def test_bad_flags_are_refused_in_one_line_before_any_work(tmp_path, args, names):
    done = proof("--device", "cpu", "--tiny", "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2
    assert names in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_used_report_folder_is_never_overwritten(tmp_path):
    (tmp_path / "gpu_proof.json").write_text("{}")
    done = proof("--device", "cpu", "--tiny", "--out", str(tmp_path))
    assert done.returncode == 2 and "--out" in done.stderr
    assert (tmp_path / "gpu_proof.json").read_text() == "{}"


def test_default_budgets_keep_the_gpu_proof_under_eight_minutes():
    assert sum(GPU_BUDGETS_S.values()) <= WHOLE_PROOF_TARGET_S - 15  # imports and the report need a few seconds


def test_auto_timing_picks_one_scheme_per_training_cost_from_the_registry():
    """One scheme per (scale method, activation bits): weight-only abs-max/MSE/LSQ, plus the W8A8 step."""
    chosen = timing_scheme_names("auto")
    costs = [(named_scheme(name).scaling, activation_bit_width(named_scheme(name))) for name in chosen]
    assert set(chosen) <= set(SCHEME_NAMES) and {"w4a16", "w8a8"} <= set(chosen) and "w4a8" not in chosen
    every_cost = {(named_scheme(n).scaling, activation_bit_width(named_scheme(n))) for n in SCHEME_NAMES}
    assert len(costs) == len(set(costs)) and set(costs) == every_cost
    assert activation_bit_width(named_scheme("w4a16")) is None and activation_bit_width(named_scheme("w4a8")) == 8


def test_wheel_pins_take_requirements_txt_versions_and_the_venv_for_the_rest():
    pins = dict(pin.split("==") for pin in wheels.wheel_pins())
    assert set(pins) == set(wheels.MISSING_ON_MACHINE)
    required = wheels.requirement_pins()
    for name, version in pins.items():
        assert version == required.get(wheels.canonical(name), metadata.version(name)), name
    assert pins["ultralytics"] == required["ultralytics"] and pins["brevitas"] == required["brevitas"]


def test_machine_note_is_read_with_the_packages_the_listed_ones_require():
    listed = wheels.listed_machine_packages()
    assert {"torch", "onnxruntime", "numpy", "opencv-python-headless", "tensorboard"} <= listed
    assert not listed & {wheels.canonical(name) for name in wheels.MISSING_ON_MACHINE}
    closure = wheels.machine_distributions()
    assert {"sympy", "protobuf", "packaging"} <= closure  # torch / onnx / matplotlib requirements
    assert "setuptools" in closure  # torch requires it on Python >= 3.12 (the machine's), not on this 3.11


# ----------------------------------------------------------------------------------------------
# Budgets: a part without one is skipped, a stage past one is stopped
# ----------------------------------------------------------------------------------------------
def test_a_part_without_budget_is_reported_skipped(tmp_path):
    out = tmp_path / "out"
    done = proof("--device", "cpu", "--tiny", "--out", str(out), "--parts", "env,epoch", "--budget-epoch", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    parts = report(out)["parts"]
    assert parts["env"]["status"] == "ok"
    assert parts["epoch"]["status"] == "skipped" and "budget 0 s" in parts["epoch"]["skipped"][0]
    assert parts["amp"]["status"] == "skipped" and "--parts" in parts["amp"]["skipped"][0]
    assert "## Skipped" in (out / "gpu_proof.md").read_text()


def test_a_stage_past_the_budget_is_stopped_and_what_needs_it_is_not_run(tmp_path):
    slow = StageSpec("slow", (sys.executable, "-c", "import time; time.sleep(120)"), ())
    after = StageSpec("after", (sys.executable, "-c", "pass"), (), needs=("slow",))
    run_root, unfinished, records = RunRoot(tmp_path / "epoch"), set(), []

    def body(part: Part) -> None:
        records.extend(run_stage_within_budget(run_root, spec, part, unfinished) for spec in (slow, after))

    part = run_part(Part("epoch", budget_s=6.0), body)
    assert records[0]["status"] == "stopped" and records[0]["exit_code"] == 124
    assert part.seconds < 6.0 + 10  # killed at the budget, not after the stage's 120 s
    assert records[1]["status"] == "not run" and records[1]["why"] == "needs slow, which did not finish"
    assert part.status == "partial" and len(part.skipped) == 2


# ----------------------------------------------------------------------------------------------
# The whole tiny proof, once (slow)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``--device cpu --tiny`` with generous budgets (a shared CI machine is slow) and import tracing on."""
    out = tmp_path_factory.mktemp("gpu-proof") / "tiny"
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    return out, proof("--device", "cpu", "--tiny", "--out", str(out), "--budget-scale", "20", env=env)


@pytest.mark.slow
def test_tiny_cpu_proof_runs_every_part(tiny_run):
    out, done = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    data = report(out)
    assert {name: part["status"] for name, part in data["parts"].items()} == dict.fromkeys(
        ("env", "amp", "steps", "epoch"), "ok"
    )
    assert data["skipped"] == []
    amp = data["parts"]["amp"]["data"]["rows"]
    assert {(r["scheme"], r["dtype"]) for r in amp} == {
        (s, d) for s in timing_scheme_names("auto") for d in ("float16", "bfloat16")
    }
    steps = data["parts"]["steps"]["data"]["rows"]
    assert {(r["model"], r["dtype"]) for r in steps} == {("fp", "bfloat16"), ("w4a16", "bfloat16")}
    assert all(r["steps"] == 2 and r["median_ms"] > 0 for r in steps)
    epoch = data["parts"]["epoch"]["data"]
    assert [s["status"] for s in epoch["stages"]] == ["done"] * 7
    assert [c["onnx"].split("-", 1)[1] for c in epoch["onnx_vs_device"] if c["passed"]] == [
        "fp16-float32.onnx",
        "qat-w4a16-qcdq.onnx",
        "qat-w4a16-int4.onnx",
    ]
    markdown = (out / "gpu_proof.md").read_text()
    for title in ("## Targets", "## Environment", "## Training step time", "## AMP with", "## One epoch"):
        assert title in markdown


def _imported_modules(text: str) -> set[str]:
    return {match.group(1).split(".")[0] for line in text.splitlines() if (match := IMPORT_LINE.match(line))}


@pytest.mark.slow
def test_wheels_cover_every_distribution_the_proof_imports(tiny_run):
    out, done = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    stage_logs = sorted((out / "epoch" / "logs").glob("*.log"))
    assert len(stage_logs) == 7  # every stage process traced its imports too
    modules = _imported_modules(done.stderr)
    for log in stage_logs:
        modules |= _imported_modules(log.read_text(errors="replace"))
    owners = metadata.packages_distributions()
    imported = {wheels.canonical(dist) for module in modules for dist in owners.get(module, [])}
    assert {"torch", "ultralytics", "brevitas", "onnxruntime", "polars"} <= imported
    # Only what installing the package pulls in counts: anything else was an optional import (see
    # project_distributions) that succeeded here because this venv happens to have it.
    project = wheels.project_distributions()
    needed = (imported & project) - wheels.machine_distributions() - {wheels.THIS_PACKAGE}
    collected = {wheels.canonical(name) for name in wheels.MISSING_ON_MACHINE}
    assert needed <= collected, f"imported by the proof, neither on the machine nor collected: {needed - collected}"
    assert collected <= project  # nothing is collected that the package does not require
    if WHEEL_FOLDER.is_dir():  # made by scripts/gpu_wheels.sh (needs PyPI: never run by the tests)
        in_folder = {wheels.canonical(p.name.split("-")[0]) for p in WHEEL_FOLDER.glob("*.whl")}
        assert needed | {wheels.THIS_PACKAGE} <= in_folder
